"""The release's judge files (Video-ChatGPT's ``eval_video_qa.py``, as the release ships it), read and written.

The release's script writes one ``<id>.json`` per judged item into its
``--output_dir``, holding ``[verdict, qa]`` (``verdict``: the judge's reply
as a dict, ``{'pred': 'yes', 'score': 4}``; ``qa``: ``{'q', 'a', 'pred'}``),
then combines *every* ``*.json`` of that directory into its ``--output_json``
(its scripts name it ``results.json``, beside ``merge.jsonl``): a dict
``{id: [verdict, qa]}``. Its numbers over that dict:

    accuracy      = yes / (yes + no)      'yes' in pred.lower(), else 'no' in pred.lower()
    average score = sum(int(score)) / n   n: every entry, even one it cannot read

So a judge directory the release can read holds no ``*.json`` besides the
items (``runner`` keeps its own files under other names). An id that is no
plain file name (``msvd/clip1``, ``../x``, unicode) is written under its
``paths.id_file_stem`` (``msvd%2Fclip1.json``) and read back as the id.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from videopanda.eval.judge.base import QAItem, Verdict
from videopanda.eval.judge.scoring import MAX_SCORE
from videopanda.files import atomic_write_text
from videopanda.paths import id_file_stem, id_from_file_stem

logger = logging.getLogger(__name__)

RELEASE_JUDGE_MODEL = "gpt-3.5-turbo"  # what the release's script asks for (hard-coded there)


def item_entry(item: QAItem, verdict: Verdict) -> list[dict[str, Any]]:
    """The release's ``[verdict, qa]`` for one judged item."""
    decision: dict[str, Any] = {"score": _as_given(verdict.score)}
    if verdict.pred is not None:
        decision = {"pred": verdict.pred, **decision}
    qa: dict[str, Any]
    if item.question2 is None:
        qa = {"q": item.question, "a": item.answer, "pred": item.pred}
    else:
        qa = {"q1": item.question, "q2": item.question2, "a": item.answer, "pred1": item.pred, "pred2": item.pred2}
    return [decision, qa]


def item_path(output_dir: str | Path, item_id: str) -> Path:
    """Where the item ``item_id`` lives in a judge directory: ``<id>.json`` for a plain id, always inside it."""
    return Path(output_dir) / f"{id_file_stem(item_id)}.json"


def write_item(output_dir: Path, item_id: str, entry: list[dict[str, Any]]) -> None:
    """``<id>.json`` with the bytes the release's ``json.dump(result_qa_pair, f)`` writes."""
    atomic_write_text(item_path(output_dir, item_id), json.dumps(entry))


def write_combined(path: str | Path, entries: Mapping[str, Any]) -> None:
    """The release's ``--output_json``: ``{id: [verdict, qa]}``, as its ``json.dump`` writes it."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(dict(entries)))


def read_item_dir(directory: str | Path) -> dict[str, Any]:
    """The release's combining rule: every ``*.json`` of ``directory`` as ``{id: content}``, the id being the file
    name without ``.json`` (decoded where ``item_path`` encoded it). Each must be a ``[verdict, qa]`` item: the
    release's script counts every one."""
    entries = {}
    for path in sorted(Path(directory).glob("*.json")):
        try:
            entry = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: not a JSON file of the release's judge ({err})") from err
        if not isinstance(entry, list):
            raise ValueError(f"{directory}: {path.name} is no [verdict, qa] item; move it out of the directory (the "
                             "release's script would count it as one)")
        stem = path.name[:-5]
        entries[id_from_file_stem(stem) or stem] = entry
    return entries


def is_combined(data: Any) -> bool:
    """Whether ``data`` is the release's combined dict (every value a list) rather than our metrics."""
    return isinstance(data, dict) and bool(data) and all(isinstance(v, list) for v in data.values())


def release_metrics(entries: Mapping[str, Any]) -> dict[str, Any]:
    """The numbers the release's script prints for these entries, computed its way."""
    count = yes = no = score_sum = 0
    for entry in entries.values():
        count += 1  # counted before anything is read, as the release does
        decision = entry[0] if isinstance(entry, list) and entry and isinstance(entry[0], dict) else {}
        try:
            score_sum += int(decision["score"])
        except (KeyError, TypeError, ValueError):
            continue  # the release prints the entry and moves on, its pred uncounted
        pred = str(decision.get("pred", "")).lower()
        yes += "yes" in pred
        no += "yes" not in pred and "no" in pred
    return {
        "count": count, "yes": yes, "no": no,
        "accuracy": yes / (yes + no) if yes + no else None,
        "average_score": score_sum / count if count else None,
    }


def entry_verdict(item_id: str, entry: Any) -> Verdict:
    """One release entry as our verdict (pred by the release's substring rule); unreadable ones are failures."""
    decision = entry[0] if isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], dict) else None
    raw = json.dumps(entry)
    no_score = Verdict(item_id, False, raw=raw, error="release entry without a numeric score")
    if decision is None:
        return no_score
    try:
        score = float(decision["score"])
    except (KeyError, TypeError, ValueError):
        return no_score
    if not 0 <= score <= MAX_SCORE:
        return Verdict(item_id, False, raw=raw, error=f"release score {score} outside [0, {MAX_SCORE:g}]")
    said = str(decision.get("pred", "")).lower()
    pred = "yes" if "yes" in said else "no" if "no" in said else None
    if "pred" in decision and pred is None:
        return Verdict(item_id, False, raw=raw, error=f"release pred {decision['pred']!r} is neither yes nor no")
    return Verdict(item_id, True, pred, score, raw, None, 0)


def entry_matches(entry: Any, item: QAItem) -> bool:
    """Whether a release entry judged exactly this question, answer and prediction."""
    return isinstance(entry, list) and len(entry) == 2 and entry[1] == item_entry(item, Verdict(item.id, True))[1]


def read_release(path: str | Path) -> dict[str, Any]:
    """The release's judge output: its ``--output_dir`` (``<id>.json`` files) or its combined ``--output_json``."""
    path = Path(path)
    if path.is_dir():
        entries = read_item_dir(path)
    else:
        try:
            entries = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: cannot read the release's judge output ({err})") from err
    if not is_combined(entries):
        raise ValueError(f"{path}: not the release's judge output (a directory of <id>.json files holding "
                         "[verdict, qa], or their combined {id: [verdict, qa]} file)")
    return entries


def _as_given(score: float | None) -> float | int | None:
    """The score as the judge wrote it: the release keeps ``4`` an int (``literal_eval``) and ``4.8`` a float."""
    return int(score) if score is not None and float(score).is_integer() else score
