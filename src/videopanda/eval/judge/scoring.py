"""Strict parsing of judge replies (no ``eval``) and the summary metrics of a judged run.

A reply must contain exactly one dict-like ``{'pred': 'yes'|'no', 'score': N}``
(or ``{'score': N}`` for the five criteria) with ``0 <= N <= 5``, holding one
verdict and not the prompt's own example (small judges echo it); anything
else raises ``MalformedReplyError``. Accuracy is reported in both conventions in
use: ``yes / (yes + no)`` over parsed verdicts (Video-ChatGPT, the release)
and ``yes / all`` with failures counted as 'no' (lmms-eval); ``coverage`` states
how much of the benchmark was answered and both conventions over all of it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from videopanda.eval.judge.base import Verdict

_DICT = re.compile(r"\{[^{}]*\}")
_PRED = re.compile(r"""["']?pred["']?\s*:\s*["']\s*(yes|no)\s*["']""", re.IGNORECASE)
_SCORE = re.compile(r"""["']?score["']?\s*:\s*["']?\s*(-?\d+(?:\.\d+)?)\s*["']?""", re.IGNORECASE)
MAX_SCORE = 5.0


class MalformedReplyError(ValueError):
    """A judge reply that is not the requested dictionary."""


def parse_reply(text: str, kind: str, example: str | None = None) -> tuple[str | None, float]:
    """Judge reply -> (pred 'yes'/'no' or None for score-only prompts, score in [0, 5]).

    ``example``: the prompt's example reply; a reply giving the example's verdict repeats it, not a judgement.
    """
    blocks = _DICT.findall(text or "")
    if len(blocks) != 1:
        raise MalformedReplyError(f"expected one {{...}} dictionary in the reply, found {len(blocks)}: {text[:120]!r}")
    verdict = _parse_block(blocks[0], kind)
    if example is not None and verdict == _parse_block(example, kind):
        raise MalformedReplyError(f"the reply repeats the prompt's example {example!r}: {text[:120]!r}")
    return verdict


def _parse_block(block: str, kind: str) -> tuple[str | None, float]:
    scores = _SCORE.findall(block)
    if len(scores) != 1:
        raise MalformedReplyError(f"expected one numeric 'score' in {block!r}, found {len(scores)}")
    score = float(scores[0])
    if not 0 <= score <= MAX_SCORE:
        raise MalformedReplyError(f"score {score} outside [0, {MAX_SCORE:g}] in {block!r}")
    if kind == "score":
        return None, score
    preds = _PRED.findall(block)
    if len(preds) != 1:
        raise MalformedReplyError(f"expected one 'pred': 'yes'|'no' in {block!r}, found {len(preds)}")
    return preds[0].lower(), score


def summarize(verdicts: Sequence[Verdict], total: int | None = None) -> dict[str, Any]:
    """Counts, both accuracy conventions and both mean-score conventions over the parsed verdicts.

    ``total``: the number of questions asked (default ``len(verdicts)``); questions
    never judged count as failures in the yes/all convention.
    """
    total = len(verdicts) if total is None else total
    ok = [v for v in verdicts if v.ok]
    yes = sum(v.pred == "yes" for v in ok)
    no = sum(v.pred == "no" for v in ok)
    scores = [v.score for v in ok if v.score is not None]
    return {
        "total": total,
        "judged": len(ok),
        "failures": total - len(ok),
        "yes": yes,
        "no": no,
        "accuracy": yes / (yes + no) if yes + no else None,  # Video-ChatGPT / the release
        "accuracy_all": yes / total if total else None,  # lmms-eval: failures count as 'no'
        "mean_score": sum(scores) / len(scores) if scores else None,
        # The release's evaluation truncates each score with int() before averaging (4.5 counts as 4).
        "mean_score_truncated": sum(int(s) for s in scores) / len(scores) if scores else None,
    }


def coverage(summary: dict[str, Any], unanswered: int) -> dict[str, Any]:
    """How much of the benchmark ``summary`` (of the answered questions) covers, and both accuracy
    conventions over the whole benchmark: a question the model never answered (missing video) counts as wrong."""
    answered = summary["total"]
    questions = answered + unanswered
    yes, no = summary["yes"], summary["no"]
    scores = summary["mean_score"]
    return {
        "questions": questions,
        "answered": answered,
        "unanswered": unanswered,
        "coverage": answered / questions if questions else None,
        "accuracy_benchmark": yes / (yes + no + unanswered) if yes + no + unanswered else None,
        "accuracy_all_benchmark": yes / questions if questions else None,
        "mean_score_benchmark": (scores * summary["judged"] / (summary["judged"] + unanswered)
                                 if scores is not None else None),
    }
