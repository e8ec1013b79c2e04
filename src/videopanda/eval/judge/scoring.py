"""Strict parsing of judge replies (no ``eval``) and the summary metrics of a judged run.

A reply must contain a dict-like ``{'pred': 'yes'|'no', 'score': N}`` (or
``{'score': N}`` for the five criteria) with ``0 <= N <= 5``; anything else
raises ``MalformedReplyError``. Accuracy is reported in both conventions in
use: ``yes / (yes + no)`` over parsed verdicts (Video-ChatGPT, the release)
and ``yes / all`` with failures counted as 'no' (lmms-eval).
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


def parse_reply(text: str, kind: str) -> tuple[str | None, float]:
    """Judge reply -> (pred 'yes'/'no' or None for score-only prompts, score in [0, 5])."""
    blocks = _DICT.findall(text or "")
    if len(blocks) != 1:
        raise MalformedReplyError(f"expected one {{...}} dictionary in the reply, found {len(blocks)}: {text[:120]!r}")
    block = blocks[0]
    score_match = _SCORE.search(block)
    if score_match is None:
        raise MalformedReplyError(f"no numeric 'score' in {block!r}")
    score = float(score_match.group(1))
    if not 0 <= score <= MAX_SCORE:
        raise MalformedReplyError(f"score {score} outside [0, {MAX_SCORE:g}] in {block!r}")
    if kind == "score":
        return None, score
    pred_match = _PRED.search(block)
    if pred_match is None:
        raise MalformedReplyError(f"no 'pred': 'yes'|'no' in {block!r}")
    return pred_match.group(1).lower(), score


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
