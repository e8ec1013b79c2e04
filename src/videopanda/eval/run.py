"""``eval run``: answer a zero-shot QA benchmark, sharded, resumable, with missing videos listed.

Files in ``output_dir`` (the release's names):
    {N}_{i}.json            shard i of N: one JSON line per answered question ``{id, question, answer, pred}``
    missing_{N}_{i}.jsonl   shard i's questions whose video is missing or unreadable, or that a served
                            model refused ``{id, video_name, reason}``
    merge.jsonl             all shards in question order (after ``merge_shards``)
    missing.jsonl           all shards' missing/unreadable questions
    run_settings.json       model (or endpoint), template, precision and decoding the answers were made with

Questions and answers are paired by ``question_id`` (not by list position).
A rerun skips the ids already in its shard file; missing videos and refused questions are retried.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tqdm import tqdm

from videopanda.data.decode import VideoDecodeError, find_video_file
from videopanda.eval.jsonl import JsonlAppender, read_jsonl, write_jsonl
from videopanda.files import atomic_write_text
from videopanda.paths import check_media_name

logger = logging.getLogger(__name__)

MERGE_FILE = "merge.jsonl"
MISSING_FILE = "missing.jsonl"
SETTINGS_FILE = "run_settings.json"


@dataclass(frozen=True)
class QAQuestion:
    id: str
    video_name: str
    question: str
    answer: str
    type: str | None = None


@dataclass(frozen=True)
class Unanswered:
    """A question a predictor could not answer (a served model refused it): listed with the missing videos."""

    reason: str


class Predictor(Protocol):
    """What ``run_shard`` needs from a model (``predict.VideoPandaPredictor``, ``endpoint.EndpointPredictor``)."""

    @property
    def batch_size(self) -> int: ...

    def load_video(self, path: Path) -> Any: ...  # raises VideoDecodeError for an unreadable file

    def answer(self, visuals: Sequence[Any], questions: Sequence[str]) -> Sequence[str | Unanswered]: ...


@dataclass(frozen=True)
class ShardSummary:
    total: int  # questions in this shard
    answered: int  # lines in the shard file after the run
    new: int  # answered by this run
    missing: int  # missing or unreadable videos, refused questions


def load_qa_pairs(questions_path: str | Path, answers_path: str | Path) -> list[QAQuestion]:
    """``test_q.json`` + ``test_a.json`` joined on ``question_id``, in question order; each id once in each file,
    each ``video_name`` a path below the video directory."""
    questions, answers = _load_list(questions_path), _load_list(answers_path)
    by_id = {}
    for a in answers:
        qid = str(_field(a, "question_id", answers_path))
        if qid in by_id:
            raise ValueError(f"{answers_path}: question_id {qid!r} has two answers; keep one")
        by_id[qid] = a
    pairs = []
    for q in questions:
        qid = str(_field(q, "question_id", questions_path))
        if qid not in by_id:
            raise ValueError(f"{answers_path}: no answer for question_id {qid!r} of {questions_path}")
        a = by_id[qid]
        video_name, question = _field(q, "video_name", questions_path), _field(q, "question", questions_path)
        if problem := check_media_name(str(video_name)):
            raise ValueError(f"{questions_path}: question_id {qid!r}: video_name {str(video_name)!r} {problem}; "
                             "video names are file names in the video directory")
        pairs.append(QAQuestion(qid, str(video_name), str(question), str(_field(a, "answer", answers_path)),
                                a.get("type")))
    if len({p.id for p in pairs}) != len(pairs):
        raise ValueError(f"{questions_path}: duplicate question_id values")
    return pairs


def shard_items(items: Sequence[QAQuestion], num_shards: int, shard_id: int) -> list[QAQuestion]:
    """Contiguous shard ``shard_id`` of ``num_shards`` (chunks of ceil(n / num_shards), as the release)."""
    if not 0 <= shard_id < num_shards:
        raise ValueError(f"shard id {shard_id} not in [0, {num_shards})")
    size = math.ceil(len(items) / num_shards) if items else 0
    return list(items[shard_id * size : (shard_id + 1) * size])


def shard_files(output_dir: str | Path, num_shards: int, shard_id: int) -> tuple[Path, Path]:
    out = Path(output_dir)
    return out / f"{num_shards}_{shard_id}.json", out / f"missing_{num_shards}_{shard_id}.jsonl"


def shard_lock_name(num_shards: int, shard_id: int) -> str:
    """The lock of one shard's writer (``files.OutputLock``): the shards of a run share its directory."""
    return f"videopanda-shard-{num_shards}_{shard_id}"


def run_shard(
    questions: Sequence[QAQuestion], video_dir: str | Path, predictor: Predictor, output_dir: str | Path,
    num_shards: int = 1, shard_id: int = 0,
) -> ShardSummary:
    """Answer this shard's unanswered questions, appending each batch's answers as it finishes."""
    if predictor.batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {predictor.batch_size}")
    shard = shard_items(questions, num_shards, shard_id)
    pred_path, missing_path = shard_files(output_dir, num_shards, shard_id)
    done = {str(r["id"]) for r in read_jsonl(pred_path)}
    todo = [q for q in shard if q.id not in done]
    logger.info("shard %d/%d: %d questions, %d answered before, %d to do", shard_id, num_shards, len(shard),
                len(done), len(todo))
    missing: list[dict[str, str]] = []
    new = 0
    with JsonlAppender(pred_path) as out, ThreadPoolExecutor(max_workers=4) as loader:
        batches = range(0, len(todo), max(1, predictor.batch_size))
        for start in tqdm(batches, desc=f"answer shard {shard_id}/{num_shards}"):
            batch = todo[start : start + predictor.batch_size]
            loaded = list(loader.map(lambda q: _load(q, video_dir, predictor), batch))
            ready = [(q, v) for q, (v, reason) in zip(batch, loaded, strict=True) if reason is None]
            missing += [{"id": q.id, "video_name": q.video_name, "reason": r}
                        for q, (_, r) in zip(batch, loaded, strict=True) if r]
            if not ready:
                continue
            preds = predictor.answer([v for _, v in ready], [q.question for q, _ in ready])
            for (q, _), pred in zip(ready, preds, strict=True):
                if isinstance(pred, Unanswered):
                    missing.append({"id": q.id, "video_name": q.video_name, "reason": pred.reason})
                    continue
                out.append({"id": q.id, "question": q.question, "answer": q.answer, "pred": pred})
                new += 1
    write_jsonl(missing_path, missing)
    if missing:
        logger.warning("shard %d: %d questions have a missing or unreadable video or were refused, listed in %s",
                       shard_id, len(missing), missing_path)
    return ShardSummary(len(shard), len(done) + new, new, len(missing))


def model_run_settings(model_dir: str | Path, predictor: Any, benchmark: str | None = None) -> dict[str, Any]:
    """What a local model's answers depend on: model, template, precision, token limit, frames;
    ``benchmark`` names the benchmark for ``eval judge``'s results."""
    return {
        "model": str(Path(model_dir).resolve()),
        "template": predictor.template,
        "precision": predictor.precision.as_dict(),
        "max_new_tokens": predictor.config.max_new_tokens,
        "num_frames": predictor.num_frames,
        "benchmark": benchmark,
    }


def record_run_settings(output_dir: str | Path, settings: dict[str, Any]) -> dict[str, Any]:
    """Write what the answers depend on to ``run_settings.json``; refuse to resume under other settings.

    Shards and reruns append to the same files, so answers made under another
    template, precision or token limit would be mixed silently. ``precision``
    compares by dtype only (its other fields describe the machine).
    """
    path = Path(output_dir) / SETTINGS_FILE
    if path.is_file():
        before = json.loads(path.read_text())
        changed = sorted(k for k in set(before) | set(settings)
                         if k != "precision" and before.get(k) != settings.get(k))
        if (before.get("precision") or {}).get("dtype") != (settings.get("precision") or {}).get("dtype"):
            changed.append("precision")
        if changed:
            raise ValueError(f"{output_dir} holds answers made with other {', '.join(changed)} ({path}): "
                             "use another --output-dir or the same settings")
    atomic_write_text(path, json.dumps(settings, indent=1) + "\n")  # shards start together: replace, never half-write
    return settings


def merge_shards(output_dir: str | Path, questions: Sequence[QAQuestion], num_shards: int) -> dict[str, int]:
    """Concatenate the shards into ``merge.jsonl`` (question order) and ``missing.jsonl``."""
    predicted: dict[str, dict] = {}
    missing: dict[str, dict] = {}
    for shard_id in range(num_shards):
        pred_path, missing_path = shard_files(output_dir, num_shards, shard_id)
        if not pred_path.is_file():
            raise FileNotFoundError(f"shard file {pred_path} not found: run shard {shard_id} of {num_shards} first")
        predicted.update((str(r["id"]), r) for r in read_jsonl(pred_path))
        missing.update((str(r["id"]), r) for r in read_jsonl(missing_path))
    order = [q.id for q in questions]
    write_jsonl(Path(output_dir) / MERGE_FILE, (predicted[i] for i in order if i in predicted))
    write_jsonl(Path(output_dir) / MISSING_FILE, (missing[i] for i in order if i in missing and i not in predicted))
    unanswered = [i for i in order if i not in predicted and i not in missing]
    if unanswered:
        logger.warning("%d questions are in no shard file (an unfinished shard?): first %s", len(unanswered),
                       unanswered[:5])
    return {"questions": len(order), "predicted": sum(i in predicted for i in order),
            "missing": sum(i in missing and i not in predicted for i in order), "unanswered": len(unanswered)}


def _load(question: QAQuestion, video_dir: str | Path, predictor: Predictor) -> tuple[Any, str | None]:
    """(visuals, None) or (None, reason) for a missing or unreadable video."""
    path = find_video_file(video_dir, question.video_name)
    if path is None:
        return None, f"no video file for {question.video_name!r} in {video_dir}"
    try:
        return predictor.load_video(path), None
    except VideoDecodeError as err:
        return None, f"unreadable: {err}"


def _load_list(path: str | Path) -> list[dict]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read {path}: {err}") from err
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list, got {type(data).__name__}")
    return data


def _field(record: dict, key: str, path: str | Path) -> Any:
    if not isinstance(record, dict) or key not in record:
        raise ValueError(f"{path}: record without {key!r}: {str(record)[:120]}")
    return record[key]
