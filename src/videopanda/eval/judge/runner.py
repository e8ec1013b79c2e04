"""Judge a prediction file: concurrent requests, cache, per-question verdicts and results.json.

Output layout (``output_dir``):
    <id>.json        the release's per-question file: ``[{'pred', 'score'}, {'q', 'a', 'pred'}]`` (judged items)
    combined.json    the release's ``output_json``: ``{id: [verdict, qa]}``
    verdicts.jsonl   every verdict, failures included (``ok``, ``error``, ``attempts``, raw reply)
    failures.jsonl   the failed ones
    results.json     summary metrics + the judge that produced them, and the benchmark coverage:
                     answered / questions and the accuracies over the whole benchmark (unanswered = wrong)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tqdm import tqdm

from videopanda.eval.jsonl import read_jsonl, write_jsonl
from videopanda.eval.judge.base import Judge, JudgeRequest, QAItem, Verdict
from videopanda.eval.judge.cache import JudgeCache, cache_key
from videopanda.eval.judge.prompts import PromptSpec
from videopanda.eval.judge.scoring import coverage, summarize

logger = logging.getLogger(__name__)


def load_predictions(path: str | Path) -> list[QAItem]:
    """A prediction file (``merge.jsonl`` lines ``{id, question, answer, pred}``) as items; none is an error."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"prediction file {path} not found: `videopanda eval run` writes merge.jsonl")
    items = []
    for record in read_jsonl(path):
        try:
            items.append(QAItem(str(record["id"]), str(record["question"]), str(record["answer"]), str(record["pred"]),
                                record.get("question2"), record.get("pred2")))
        except KeyError as err:
            raise ValueError(f"{path}: prediction record lacks {err}: {str(record)[:120]}") from err
    ids = [i.id for i in items]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: duplicate prediction ids")
    if not items:
        raise ValueError(f"{path} holds no predictions: nothing to judge (see missing.jsonl beside it)")
    return items


def judge_items(
    items: Sequence[QAItem], judge: Judge, prompt: PromptSpec, cache: JudgeCache, workers: int = 8
) -> list[Verdict]:
    """Verdicts in item order; cached items cost nothing, new successes are cached as they arrive."""
    prompt_hash = prompt.hash

    def one(item: QAItem) -> Verdict:
        key = cache_key(judge.model, prompt_hash, item)
        cached = cache.get(key, item.id)
        if cached is not None:
            return cached
        verdict = judge.judge(JudgeRequest(item, prompt))
        cache.put(key, verdict)
        return verdict

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(tqdm(pool.map(one, items), total=len(items), desc=f"judge ({prompt.name})"))


def write_judgements(
    output_dir: str | Path, items: Sequence[QAItem], verdicts: Sequence[Verdict], meta: dict[str, Any],
    unanswered: int = 0,
) -> dict[str, Any]:
    """Write the layout above; returns the results dict (``meta`` adds e.g. benchmark and model names).

    ``unanswered``: the benchmark's questions that have no prediction (e.g. a missing video).
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    combined = {}
    for item, verdict in zip(items, verdicts, strict=True):
        if not verdict.ok:
            continue
        decision = {"score": verdict.score} if verdict.pred is None else {"pred": verdict.pred, "score": verdict.score}
        pair = [decision, _release_qa(item)]
        (out / f"{item.id}.json").write_text(json.dumps(pair))
        combined[item.id] = pair
    (out / "combined.json").write_text(json.dumps(combined))
    write_jsonl(out / "verdicts.jsonl", (v.to_dict() for v in verdicts))
    write_jsonl(out / "failures.jsonl", (v.to_dict() for v in verdicts if not v.ok))
    summary = summarize(verdicts)
    results = {**meta, **summary, **coverage(summary, unanswered)}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    return results


def run_judge(
    items: Sequence[QAItem], output_dir: str | Path, judge: Judge, prompt: PromptSpec,
    cache_path: str | Path | None = None, workers: int = 8, meta: dict[str, Any] | None = None,
    unanswered: int = 0,
) -> dict[str, Any]:
    """Judge ``items`` end to end; ``cache_path`` defaults to ``output_dir/judge_cache.jsonl``.

    ``unanswered``: questions of the benchmark without a prediction, counted in the coverage fields.
    """
    cache = JudgeCache(cache_path or Path(output_dir) / "judge_cache.jsonl")
    try:
        verdicts = judge_items(items, judge, prompt, cache, workers)
    finally:
        cache.close()
    info = judge.info(prompt)
    results = write_judgements(output_dir, items, verdicts, {**(meta or {}), "judge": asdict(info)}, unanswered)
    if results["failures"]:
        logger.warning("%d of %d items could not be judged: see %s", results["failures"], results["total"],
                       Path(output_dir) / "failures.jsonl")
    if unanswered:
        logger.warning("%d of %d benchmark questions have no prediction: whole-benchmark accuracy %s",
                       unanswered, results["questions"], results["accuracy_all_benchmark"])
    return results


def unanswered_count(predictions: str | Path, items: Sequence[QAItem]) -> int | None:
    """Questions listed in ``missing.jsonl`` beside ``predictions`` (``eval run`` writes it) without a prediction;
    None when there is no such file."""
    from videopanda.eval.run import MISSING_FILE

    missing = Path(predictions).with_name(MISSING_FILE)
    if not missing.is_file():
        return None
    answered = {item.id for item in items}
    return len({str(r["id"]) for r in read_jsonl(missing)} - answered)


def _release_qa(item: QAItem) -> dict[str, str]:
    """The release's record of what was judged."""
    if item.question2 is None:
        return {"q": item.question, "a": item.answer, "pred": item.pred}
    return {"q1": item.question, "q2": item.question2, "a": item.answer, "pred1": item.pred, "pred2": item.pred2}
