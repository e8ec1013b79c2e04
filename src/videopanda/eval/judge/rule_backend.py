"""Rule-based judge: normalised exact / synonym match of prediction and answer, no LLM.

Normalisation: lower case, punctuation and articles dropped, number words as
digits, a small synonym table. A prediction matches when its normalised text
equals the answer's, or contains the answer's words as a phrase and holds no
negation. Score: 5 for a match, 0 otherwise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from videopanda.eval.judge.base import JudgeInfo, JudgeRequest, Verdict

_ARTICLES = {"a", "an", "the"}
_NEGATIONS = {"no", "not", "never", "none", "nobody", "nothing", "neither", "nor", "isn't", "doesn't", "don't"}
SYNONYMS: dict[str, str] = {
    "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
    "yeah": "yes", "yep": "yes", "true": "yes", "nope": "no", "false": "no",
    "men": "man", "guy": "man", "lady": "woman", "women": "woman",
    "people": "person", "kid": "child", "children": "child",
    "grey": "gray", "colour": "color", "automobile": "car", "cars": "car", "dogs": "dog", "cats": "cat",
}


def normalise(text: str) -> list[str]:
    """Canonical word list of ``text``."""
    words = re.findall(r"[a-z0-9']+", text.lower())
    return [SYNONYMS.get(w, w) for w in words if w not in _ARTICLES]


def rule_match(answer: str, pred: str) -> bool:
    target, said = normalise(answer), normalise(pred)
    if not target:
        return False
    if said == target:
        return True
    if _NEGATIONS & set(said) and not _NEGATIONS & set(target):
        return False
    n = len(target)
    return any(said[i : i + n] == target for i in range(len(said) - n + 1))


@dataclass
class RuleJudge:
    model: str = "rule-match-v1"

    def info(self, prompt: Any) -> JudgeInfo:
        return JudgeInfo("rule", self.model, prompt.name, prompt.hash)

    def judge(self, request: JudgeRequest) -> Verdict:
        if request.prompt.reply != "yes_score":
            raise ValueError(f"the rule judge decides yes/no questions only, not the {request.prompt.name!r} criterion")
        item = request.item
        hit = rule_match(item.answer, item.pred)
        return Verdict(item.id, True, "yes" if hit else "no", 5.0 if hit else 0.0, None, None, 1)
