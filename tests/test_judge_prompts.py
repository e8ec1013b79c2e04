"""Snapshot tests of every judge prompt (hand-written expectations), reply parsing, metrics, rule match."""

from __future__ import annotations

import pytest

from videopanda.eval.judge.base import QAItem, Verdict
from videopanda.eval.judge.prompts import PROMPTS, get_prompt
from videopanda.eval.judge.rule_backend import rule_match
from videopanda.eval.judge.scoring import MalformedReplyError, coverage, parse_reply, summarize

ITEM = QAItem("7", "what is the man doing?", "cooking", "He is cooking pasta.",
              question2="what activity is shown?", pred2="Cooking.")
PAIR = ("Please evaluate the following video-based question-answer pair:\n\n"
        "Question: what is the man doing?\nCorrect Answer: cooking\nPredicted Answer: He is cooking pasta.\n\n")
ONLY = ("DO NOT PROVIDE ANY OTHER OUTPUT TEXT OR EXPLANATION. Only provide the Python dictionary string. "
        "For example, your response should look like this: ")


def test_qa_prompt_snapshot():
    system, user = get_prompt("qa").render(ITEM)
    assert system == (
        "You are an intelligent chatbot designed for evaluating the correctness of generative outputs for "
        "question-answer pairs. Your task is to compare the predicted answer with the correct answer and determine "
        "if they match meaningfully. Here's how you can accomplish the task:------##INSTRUCTIONS: "
        "- Focus on the meaningful match between the predicted answer and the correct answer.\n"
        "- Consider synonyms or paraphrases as valid matches.\n"
        "- Evaluate the correctness of the prediction compared to the answer."
    )
    assert user == PAIR + (
        "Provide your evaluation only as a yes/no and score where the score is an integer value between 0 and 5, "
        "with 5 indicating the highest meaningful match. Please generate the response in the form of a Python "
        "dictionary string with keys 'pred' and 'score', where value of 'pred' is  a string of 'yes' or 'no' and "
        "value of 'score' is in INTEGER, not STRING." + ONLY + "{'pred': 'yes', 'score': 4.8}."
    )


def _score_request(what: str, level: str, value: str) -> str:
    return (f"Provide your evaluation only as a {what} score where the {what} score is an integer value between 0 "
            f"and 5, with 5 indicating the highest level of {level}. Please generate the response in the form of a "
            f"Python dictionary string with keys 'score', where its value is {value} in INTEGER, not STRING."
            + ONLY + "{''score': 4.8}.")


@pytest.mark.parametrize("name, lead, task, instructions, request_", [
    ("correctness", "factual accuracy of generative outputs for video-based question-answer pairs. ",
     "determine if they are factually consistent.",
     "- Focus on the factual consistency between the predicted answer and the correct answer. The predicted answer "
     "should not contain any misinterpretations or misinformation.\n- The predicted answer must be factually accurate "
     "and align with the video content.\n- Consider synonyms or paraphrases as valid matches.\n- Evaluate the factual "
     "accuracy of the prediction compared to the answer.",
     _score_request("factual accuracy", "factual consistency", "the factual accuracy score")),
    ("detail", "detail orientation of generative outputs for video-based question-answer pairs. ",
     "determine its level of detail, considering both completeness and specificity.",
     "- Check if the predicted answer covers all major points from the video. The response should not leave out any "
     "key aspects.\n- Evaluate whether the predicted answer includes specific details rather than just generic points. "
     "It should provide comprehensive information that is tied to specific elements of the video.\n- Consider synonyms "
     "or paraphrases as valid matches.\n- Provide a single evaluation score that reflects the level of detail "
     "orientation of the prediction, considering both completeness and specificity.",
     _score_request("detail orientation", "detail orientation", "the detail orientation score")),
    ("context", "contextual understanding of generative outputs for video-based question-answer pairs. ",
     "determine if the generated response aligns with the overall context of the video content.",
     "- Evaluate whether the predicted answer aligns with the overall context of the video content. It should not "
     "provide information that is out of context or misaligned.\n- The predicted answer must capture the main themes "
     "and sentiments of the video.\n- Consider synonyms or paraphrases as valid matches.\n- Provide your evaluation of "
     "the contextual understanding of the prediction compared to the answer.",
     _score_request("contextual understanding", "contextual understanding", "contextual understanding score")),
    ("temporal", "temporal understanding of generative outputs for video-based question-answer pairs. ",
     "determine if they correctly reflect the temporal sequence of events in the video content.",
     "- Focus on the temporal consistency between the predicted answer and the correct answer. The predicted answer "
     "should correctly reflect the sequence of events or details as they are presented in the video content.\n"
     "- Consider synonyms or paraphrases as valid matches, but only if the temporal order is maintained.\n"
     "- Evaluate the temporal accuracy of the prediction compared to the answer.",
     _score_request("temporal accuracy", "temporal consistency", "the temporal accuracy score")),
])
def test_criterion_prompt_snapshots(name, lead, task, instructions, request_):
    system, user = get_prompt(name).render(ITEM)
    assert system == (
        "You are an intelligent chatbot designed for evaluating the " + lead
        + "Your task is to compare the predicted answer with the correct answer and " + task
        + " Here's how you can accomplish the task:------##INSTRUCTIONS: " + instructions
    )
    assert user == PAIR + request_


def test_consistency_prompt_snapshot():
    system, user = get_prompt("consistency").render(ITEM)
    assert system.startswith(
        "You are an intelligent chatbot designed for evaluating the consistency of generative outputs for similar "
        "video-based question-answer pairs. You will be given two very similar questions, a common answer common to "
        "both the questions and predicted answers for the two questions .Your task is to compare the predicted answers "
        "for two very similar question, with a common correct answer and determine if they are consistent. Here's how "
        "you can accomplish the task:------##INSTRUCTIONS: - Focus on the consistency between the two predicted answers"
    )
    assert system.endswith("- Evaluate the consistency of the two predicted answers compared to the correct answer.")
    assert user == (
        "Please evaluate the following video-based question-answer pair:\n\n"
        "Question 1: what is the man doing?\nQuestion 2: what activity is shown?\nCorrect Answer: cooking\n"
        "Predicted Answer to Question 1: He is cooking pasta.\nPredicted Answer to Question 2: Cooking.\n\n"
        + _score_request("consistency", "consistency", "the consistency score")
    )


def test_prompt_hashes_are_distinct_and_braces_in_items_survive():
    assert len({p.hash for p in PROMPTS.values()}) == len(PROMPTS)
    _, user = get_prompt("qa").render(QAItem("1", "q {x}?", "a}", "{'pred'"))
    assert "Question: q {x}?\nCorrect Answer: a}\nPredicted Answer: {'pred'\n" in user


@pytest.mark.parametrize("reply, expected", [
    ("{'pred': 'yes', 'score': 4}", ("yes", 4.0)),
    ('{"pred": "no", "score": 0}', ("no", 0.0)),
    ("Sure! {'pred': 'Yes', 'score': 4.8}", ("yes", 4.8)),
    ("{'score': 3, 'pred': 'no'}", ("no", 3.0)),
])
def test_parse_reply_accepts_dict_strings(reply, expected):
    assert parse_reply(reply, "yes_score") == expected


@pytest.mark.parametrize("reply", [
    "yes", "", "{'pred': 'maybe', 'score': 3}", "{'pred': 'yes'}", "{'pred': 'yes', 'score': 9}",
    "{'pred': 'yes', 'score': 4} {'pred': 'no', 'score': 1}", "__import__('os').system('true')",
])
def test_parse_reply_rejects_malformed(reply):
    with pytest.raises(MalformedReplyError):
        parse_reply(reply, "yes_score")


def test_a_reply_repeating_the_prompts_example_or_holding_two_verdicts_is_no_verdict():
    qa, correctness = get_prompt("qa"), get_prompt("correctness")
    assert qa.example == "{'pred': 'yes', 'score': 4.8}" and correctness.example == "{''score': 4.8}"
    # SmolLM2 as judge once answered with code quoting the example: parsed, it was a 'yes'.
    echo = "```python\ndef evaluate(q, a):\n    return {'pred': 'yes', 'score': 4.8}\n```"
    assert parse_reply(echo, "yes_score") == ("yes", 4.8)  # without the example it would count
    with pytest.raises(MalformedReplyError, match="example"):
        parse_reply(echo, "yes_score", qa.example)
    with pytest.raises(MalformedReplyError, match="example"):
        parse_reply("{'score': 4.8}", "score", correctness.example)
    assert parse_reply("{'pred': 'yes', 'score': 4}", "yes_score", qa.example) == ("yes", 4.0)
    with pytest.raises(MalformedReplyError, match="one 'pred'"):
        parse_reply("{'pred': 'yes', 'pred': 'no', 'score': 4}", "yes_score", qa.example)
    with pytest.raises(MalformedReplyError, match="one numeric 'score'"):
        parse_reply("{'pred': 'no', 'score': 1, 'score': 5}", "yes_score", qa.example)


def test_coverage_counts_unanswered_questions_as_wrong():
    verdicts = [Verdict("1", True, "yes", 5.0), Verdict("2", True, "no", 1.0), Verdict("3", False, error="x")]
    summary = summarize(verdicts)
    whole = coverage(summary, unanswered=2)
    assert (whole["questions"], whole["answered"], whole["coverage"]) == (5, 3, 3 / 5)
    assert whole["accuracy_benchmark"] == pytest.approx(1 / 4)  # yes / (yes + no + unanswered)
    assert whole["accuracy_all_benchmark"] == pytest.approx(1 / 5)  # yes / questions
    assert whole["mean_score_benchmark"] == pytest.approx(6.0 / 4)  # unanswered score 0
    assert coverage(summary, 0)["accuracy_all_benchmark"] == summary["accuracy_all"]


def test_parse_score_only_reply():
    assert parse_reply("{''score': 3}", "score") == (None, 3.0)
    with pytest.raises(MalformedReplyError):
        parse_reply("{'pred': 'yes'}", "score")


def test_summarize_reports_both_accuracy_and_score_conventions():
    verdicts = [Verdict("1", True, "yes", 5.0), Verdict("2", True, "yes", 4.5), Verdict("3", True, "no", 1.0),
                Verdict("4", False, error="garbage")]
    summary = summarize(verdicts)
    assert (summary["yes"], summary["no"], summary["failures"], summary["judged"]) == (2, 1, 1, 3)
    assert summary["accuracy"] == pytest.approx(2 / 3)
    assert summary["accuracy_all"] == pytest.approx(2 / 4)
    assert summary["mean_score"] == pytest.approx(10.5 / 3)
    assert summary["mean_score_truncated"] == pytest.approx(10 / 3)  # the release's int() per score


@pytest.mark.parametrize("answer, pred, hit", [
    ("red", "Red.", True), ("red", "The ball is red", True), ("two", "2", True), ("man", "a guy", True),
    ("red", "it is not red", False), ("red", "blue", False), ("ice cream", "eating ice cream", True),
    ("no", "no", True), ("", "anything", False),
])
def test_rule_match(answer, pred, hit):
    assert rule_match(answer, pred) is hit


def test_local_backend_sends_the_system_and_user_turns_to_its_chat_llm(tmp_path, smollm2_tokenizer):
    """The local judge (a chat LLM in this process) on a tiny random LLaMA: it asks the LLM for a greedy reply to
    exactly the judge's system and user turns (the quickstart's judge runs it on SmolLM2, in the slow tier)."""
    from test_train_support import write_tiny_llm
    from videopanda.eval.judge.local_backend import LocalBackend
    from videopanda.inference import ChatLLM

    llm = ChatLLM.load(write_tiny_llm(tmp_path / "judge", smollm2_tokenizer))
    generate, asked = llm.reply, []

    def recorded(messages, max_new_tokens):  # the real LLM replies; the request is kept
        asked.append((list(messages), max_new_tokens))
        return generate(messages, max_new_tokens)

    llm.reply = recorded
    backend = LocalBackend(llm, max_new_tokens=4)
    system, user = get_prompt("qa").render(ITEM)
    reply = backend.complete(system, user)
    turns = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    assert backend.model == "judge" and asked == [(turns, 4)]
    assert reply and reply == generate(turns, 4)
