"""Held-out QA accuracy of an in-memory model: the eval run's files, rule-based match, per-type accuracy."""

from __future__ import annotations

import json
import logging
import shutil
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from videopanda.data.synth import ANSWER_SETS, COARSE_TYPE, PALETTE
from videopanda.eval.jsonl import read_jsonl
from videopanda.eval.judge.rule_backend import normalise, rule_match
from videopanda.eval.run import MERGE_FILE, QAQuestion, load_qa_pairs, merge_shards, run_shard
from videopanda.inference import VideoPandaPredictor

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class QASet:
    """A Video-ChatGPT-format QA set: ``test_q.json``, ``test_a.json``, ``videos/``."""

    directory: Path

    @property
    def questions(self) -> list[QAQuestion]:
        return load_qa_pairs(self.directory / "test_q.json", self.directory / "test_a.json")

    @property
    def video_dir(self) -> Path:
        return self.directory / "videos"


def closed_set_match(answer: str, pred: str, kind: str) -> bool:
    """The rule-based match, where naming any other answer of the type's answer set is wrong.

    ``"up or down"`` would match either answer under the plain rule (it contains both words).
    """
    options = ANSWER_SETS.get(kind, tuple(PALETTE))  # "order" answers a colour
    said = set(normalise(pred))
    others = {word for option in options if option != answer for word in normalise(option)}
    return rule_match(answer, pred) and not said & others


def accuracy_by_type(predictions: Sequence[dict], types: dict[str, str]) -> dict[str, float]:
    """Closed-set rule-match accuracy per fine type, per coarse type (``appearance``/``temporal``) and ``all``.

    ``predictions``: ``{id, answer, pred}`` records; ``types``: question id -> fine type.
    """
    hits: dict[str, list[bool]] = defaultdict(list)
    for record in predictions:
        fine = types[str(record["id"])]
        hit = closed_set_match(str(record["answer"]), str(record["pred"]), fine)
        for key in (fine, COARSE_TYPE.get(fine, fine), "all"):
            hits[key].append(hit)
    return {key: sum(values) / len(values) for key, values in sorted(hits.items())}


def evaluate_qa(
    predictor: VideoPandaPredictor, qa_set: QASet, output_dir: str | Path, max_questions: int | None = None
) -> dict[str, float]:
    """Answer the first ``max_questions`` questions (all: None) into ``output_dir/merge.jsonl``; rule-based scores.

    The predictor is the one ``eval run`` and ``ask`` use, in its own precision: same answers.
    """
    output_dir = Path(output_dir)
    shutil.rmtree(output_dir, ignore_errors=True)  # the eval run resumes from old answers: start afresh
    questions = qa_set.questions[:max_questions]
    summary = run_shard(questions, qa_set.video_dir, predictor, output_dir)
    if summary.missing:
        raise ValueError(f"{summary.missing} held-out videos of {qa_set.directory} are missing or unreadable")
    merge_shards(output_dir, questions, num_shards=1)
    predictions = list(read_jsonl(output_dir / MERGE_FILE))
    accuracy = accuracy_by_type(predictions, {q.id: q.type or "all" for q in questions})
    (output_dir / "accuracy.json").write_text(json.dumps(accuracy, indent=1) + "\n")
    return accuracy
