"""The Video-ChatGPT five-criteria benchmark in the QA framework: criteria as data, one run and judge path.

Its files (Video-ChatGPT's ``Benchmarks`` layout) in ``data_dir``:
``generic_qa.json`` and ``temporal_qa.json`` (``[{video_name, Q, A}]``),
``consistency_qa.json`` (``[{video_name, Q1, Q2, A}]``), videos in ``videos/``.
Items get ids ``<video_name>_<k>`` (k-th item of that video, as the release
names its files); a consistency item asks both questions, ids ``<id>#1``/``<id>#2``.
``correctness``, ``detail`` and ``context`` judge the generic answers,
``temporal`` the temporal ones, ``consistency`` the two answers together.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from videopanda.eval.judge.base import QAItem
from videopanda.eval.run import QAQuestion
from videopanda.paths import check_media_name


@dataclass(frozen=True)
class Criterion:
    name: str  # also the judge prompt's name
    qa_set: str  # generic | temporal | consistency


CRITERIA: tuple[Criterion, ...] = (
    Criterion("correctness", "generic"),
    Criterion("detail", "generic"),
    Criterion("context", "generic"),
    Criterion("temporal", "temporal"),
    Criterion("consistency", "consistency"),
)
QA_SETS = ("generic", "temporal", "consistency")


def qa_file(data_dir: str | Path, qa_set: str) -> Path:
    if qa_set not in QA_SETS:
        raise ValueError(f"unknown five-criteria QA set {qa_set!r} (known: {', '.join(QA_SETS)})")
    return Path(data_dir) / f"{qa_set}_qa.json"


def load_questions(path: str | Path) -> list[QAQuestion]:
    """A five-criteria QA file as questions to answer (two per consistency item)."""
    records = json.loads(Path(path).read_text())
    seen: Counter[str] = Counter()
    questions = []
    for record in records:
        try:
            name = str(record["video_name"])
            if problem := check_media_name(name):
                raise ValueError(f"{path}: video_name {name!r} {problem}; video names are file names in videos/")
            item_id = f"{name}_{seen[name]}"
            seen[name] += 1
            if "Q1" in record:
                questions += [QAQuestion(f"{item_id}#1", name, record["Q1"], record["A"]),
                              QAQuestion(f"{item_id}#2", name, record["Q2"], record["A"])]
            else:
                questions.append(QAQuestion(item_id, name, record["Q"], record["A"]))
        except (KeyError, TypeError) as err:
            raise ValueError(f"{path}: malformed five-criteria record {str(record)[:120]}") from err
    return questions


def judge_items(predictions: list[dict], qa_set: str) -> list[QAItem]:
    """Answered questions (``merge.jsonl`` records) -> items to judge; consistency pairs joined."""
    if qa_set != "consistency":
        return [QAItem(str(r["id"]), r["question"], r["answer"], r["pred"]) for r in predictions]
    by_id = {str(r["id"]): r for r in predictions}
    items = []
    for key in (k[:-2] for k in by_id if k.endswith("#1")):
        first, second = by_id[f"{key}#1"], by_id.get(f"{key}#2")
        if second is not None:
            items.append(QAItem(key, first["question"], first["answer"], first["pred"], second["question"],
                                second["pred"]))
    return items
