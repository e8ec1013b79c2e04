"""Judge prompts as data: one entry per benchmark or criterion, rendered by one function.

``qa`` is the Video-ChatGPT GPT-3.5 evaluation prompt used by the release (and
Video-LLaVA) for MSVD/MSRVTT/TGIF/ActivityNet-QA; ``correctness``, ``detail``,
``context``, ``temporal`` and ``consistency`` are the Video-ChatGPT
five-criteria benchmark's prompts. The wording is kept as published
(including its missing spaces and the ``{''score': 4.8}`` example): judges
are sensitive to it, and scores are only comparable under the same prompt.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

from videopanda.eval.judge.base import QAItem

ReplyKind = Literal["yes_score", "score"]  # {'pred': 'yes', 'score': 4} or {'score': 4}

_LEAD = "You are an intelligent chatbot designed for evaluating the "
_HOW = " Here's how you can accomplish the task:------##INSTRUCTIONS: "
_PAIR = (
    "Please evaluate the following video-based question-answer pair:\n\n"
    "Question: {question}\nCorrect Answer: {answer}\nPredicted Answer: {pred}\n\n"
)
_PAIRS_TWO = (
    "Please evaluate the following video-based question-answer pair:\n\n"
    "Question 1: {question}\nQuestion 2: {question2}\nCorrect Answer: {answer}\n"
    "Predicted Answer to Question 1: {pred}\nPredicted Answer to Question 2: {pred2}\n\n"
)
_ONLY_DICT = (
    "DO NOT PROVIDE ANY OTHER OUTPUT TEXT OR EXPLANATION. Only provide the Python dictionary string. "
    "For example, your response should look like this: "
)


@dataclass(frozen=True)
class PromptSpec:
    """A judge prompt: system message, user template over the item's fields, expected reply form."""

    name: str
    system: str
    user_template: str  # str.format fields: question, answer, pred (+ question2, pred2 for consistency)
    reply: ReplyKind

    def render(self, item: QAItem) -> tuple[str, str]:
        """(system, user) messages for one item."""
        fields = {"question": item.question, "answer": item.answer, "pred": item.pred,
                  "question2": item.question2, "pred2": item.pred2}
        return self.system, self.user_template.format(**fields)

    @property
    def example(self) -> str | None:
        """The example reply the prompt shows the judge (a reply repeating it is no verdict)."""
        _, marker, tail = self.user_template.partition(_ONLY_DICT)
        return tail.format().rstrip(".") if marker else None

    @property
    def hash(self) -> str:
        """Short content hash: recorded with every result and part of every cache key."""
        text = "\x00".join((self.name, self.system, self.user_template, self.reply))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _score_tail(what: str, level: str, value: str) -> str:
    """The five-criteria request for an integer ``what`` score, as published."""
    return (
        f"Provide your evaluation only as a {what} score where the {what} score is an integer value between 0 and 5, "
        f"with 5 indicating the highest level of {level}. Please generate the response in the form of a Python "
        f"dictionary string with keys 'score', where its value is {value} in INTEGER, not STRING."
        + _ONLY_DICT + "{{''score': 4.8}}."
    )


QA = PromptSpec(
    name="qa",
    system=_LEAD + "correctness of generative outputs for question-answer pairs. "
    "Your task is to compare the predicted answer with the correct answer and determine if they match meaningfully."
    + _HOW + "- Focus on the meaningful match between the predicted answer and the correct answer.\n"
    "- Consider synonyms or paraphrases as valid matches.\n"
    "- Evaluate the correctness of the prediction compared to the answer.",
    user_template=_PAIR + "Provide your evaluation only as a yes/no and score where the score is an integer value "
    "between 0 and 5, with 5 indicating the highest meaningful match. Please generate the response in the form of "
    "a Python dictionary string with keys 'pred' and 'score', where value of 'pred' is  a string of 'yes' or 'no' "
    "and value of 'score' is in INTEGER, not STRING." + _ONLY_DICT + "{{'pred': 'yes', 'score': 4.8}}.",
    reply="yes_score",
)

CORRECTNESS = PromptSpec(
    name="correctness",
    system=_LEAD + "factual accuracy of generative outputs for video-based question-answer pairs. "
    "Your task is to compare the predicted answer with the correct answer and determine if they are factually "
    "consistent." + _HOW + "- Focus on the factual consistency between the predicted answer and the correct answer. "
    "The predicted answer should not contain any misinterpretations or misinformation.\n"
    "- The predicted answer must be factually accurate and align with the video content.\n"
    "- Consider synonyms or paraphrases as valid matches.\n"
    "- Evaluate the factual accuracy of the prediction compared to the answer.",
    user_template=_PAIR + _score_tail("factual accuracy", "factual consistency", "the factual accuracy score"),
    reply="score",
)

DETAIL = PromptSpec(
    name="detail",
    system=_LEAD + "detail orientation of generative outputs for video-based question-answer pairs. "
    "Your task is to compare the predicted answer with the correct answer and determine its level of detail, "
    "considering both completeness and specificity." + _HOW
    + "- Check if the predicted answer covers all major points from the video. The response should not leave out "
    "any key aspects.\n"
    "- Evaluate whether the predicted answer includes specific details rather than just generic points. It should "
    "provide comprehensive information that is tied to specific elements of the video.\n"
    "- Consider synonyms or paraphrases as valid matches.\n"
    "- Provide a single evaluation score that reflects the level of detail orientation of the prediction, "
    "considering both completeness and specificity.",
    user_template=_PAIR + _score_tail("detail orientation", "detail orientation", "the detail orientation score"),
    reply="score",
)

CONTEXT = PromptSpec(
    name="context",
    system=_LEAD + "contextual understanding of generative outputs for video-based question-answer pairs. "
    "Your task is to compare the predicted answer with the correct answer and determine if the generated response "
    "aligns with the overall context of the video content." + _HOW
    + "- Evaluate whether the predicted answer aligns with the overall context of the video content. It should not "
    "provide information that is out of context or misaligned.\n"
    "- The predicted answer must capture the main themes and sentiments of the video.\n"
    "- Consider synonyms or paraphrases as valid matches.\n"
    "- Provide your evaluation of the contextual understanding of the prediction compared to the answer.",
    user_template=_PAIR
    + _score_tail("contextual understanding", "contextual understanding", "contextual understanding score"),
    reply="score",
)

TEMPORAL = PromptSpec(
    name="temporal",
    system=_LEAD + "temporal understanding of generative outputs for video-based question-answer pairs. "
    "Your task is to compare the predicted answer with the correct answer and determine if they correctly reflect "
    "the temporal sequence of events in the video content." + _HOW
    + "- Focus on the temporal consistency between the predicted answer and the correct answer. The predicted "
    "answer should correctly reflect the sequence of events or details as they are presented in the video content.\n"
    "- Consider synonyms or paraphrases as valid matches, but only if the temporal order is maintained.\n"
    "- Evaluate the temporal accuracy of the prediction compared to the answer.",
    user_template=_PAIR + _score_tail("temporal accuracy", "temporal consistency", "the temporal accuracy score"),
    reply="score",
)

CONSISTENCY = PromptSpec(
    name="consistency",
    system=_LEAD + "consistency of generative outputs for similar video-based question-answer pairs. "
    "You will be given two very similar questions, a common answer common to both the questions and predicted "
    "answers for the two questions .Your task is to compare the predicted answers for two very similar question, "
    "with a common correct answer and determine if they are consistent." + _HOW
    + "- Focus on the consistency between the two predicted answers and the correct answer. Both predicted answers "
    "should correspond to the correct answer and to each other, and should not contain any contradictions or "
    "significant differences in the conveyed information.\n"
    "- Both predicted answers must be consistent with each other and the correct answer, in terms of the "
    "information they provide about the video content.\n"
    "- Consider synonyms or paraphrases as valid matches, but only if they maintain the consistency in the conveyed "
    "information.\n"
    "- Evaluate the consistency of the two predicted answers compared to the correct answer.",
    user_template=_PAIRS_TWO + _score_tail("consistency", "consistency", "the consistency score"),
    reply="score",
)

PROMPTS: dict[str, PromptSpec] = {p.name: p for p in (QA, CORRECTNESS, DETAIL, CONTEXT, TEMPORAL, CONSISTENCY)}


def get_prompt(name: str) -> PromptSpec:
    if name not in PROMPTS:
        raise ValueError(f"unknown judge prompt {name!r} (known: {', '.join(PROMPTS)})")
    return PROMPTS[name]
