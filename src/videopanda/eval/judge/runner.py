"""Judge a prediction file: concurrent requests, cache, per-question verdicts and metrics.

Output layout (``output_dir``), readable as the release's judge ``--output_dir``
(it combines every ``*.json`` there as one item, so only the items end in ``.json``):
    <id>.json        the release's per-question file: ``[{'pred', 'score'}, {'q', 'a', 'pred'}]`` (judged items;
                     an id that is no plain file name is encoded, see ``release_files.item_path``)
    metrics.jsonl    one line: summary metrics (both accuracy and both score conventions) + the judge that produced them
    verdicts.jsonl   every verdict, failures included (``ok``, ``error``, ``attempts``, raw reply)
    failures.jsonl   the failed ones
    metrics.jsonl    one line: summary metrics (both accuracy and both score conventions), the judge that
                     produced them, and the benchmark coverage: answered / questions and the accuracies over
                     the whole benchmark (unanswered = wrong)
    judge_cache.jsonl  the default cache
The release's combined ``--output_json`` (``{id: [verdict, qa]}``, its ``results.json``) is
written only where asked (``release_json``), outside the directory by the release's convention.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tqdm import tqdm

from videopanda.eval.jsonl import read_jsonl, write_jsonl
from videopanda.eval.judge import release_files
from videopanda.eval.judge.base import Judge, JudgeRequest, QAItem, Verdict
from videopanda.eval.judge.cache import JudgeCache, cache_key
from videopanda.eval.judge.prompts import PromptSpec
from videopanda.eval.judge.scoring import coverage, summarize

logger = logging.getLogger(__name__)
FAILURES_FILE = "failures.jsonl"  # the items that could not be judged, with the judge's reply


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
        if not items[-1].id:
            raise ValueError(f"{path}: prediction record with an empty id: {str(record)[:120]}")
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


METRICS_FILE = "metrics.jsonl"


def write_judgements(
    output_dir: str | Path, items: Sequence[QAItem], verdicts: Sequence[Verdict], meta: dict[str, Any],
    unanswered: int = 0, release_json: str | Path | None = None,
) -> dict[str, Any]:
    """Write the layout above; returns the metrics (``meta`` adds e.g. benchmark and model names).

    ``unanswered``: the benchmark's questions that have no prediction (e.g. a missing video).
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    combined = {}
    for item, verdict in zip(items, verdicts, strict=True):
        if verdict.ok:
            combined[item.id] = release_files.item_entry(item, verdict)
            release_files.write_item(out, item.id, combined[item.id])
        else:
            release_files.item_path(out, item.id).unlink(missing_ok=True)  # an earlier run's verdict is not this run's
    _warn_about_strays(out, combined)
    if release_json is not None:
        release_files.write_combined(release_json, combined)
    write_jsonl(out / "verdicts.jsonl", (v.to_dict() for v in verdicts))
    write_jsonl(out / FAILURES_FILE, (v.to_dict() for v in verdicts if not v.ok))
    summary = summarize(verdicts)
    results = {**meta, **summary, **coverage(summary, unanswered)}
    write_jsonl(out / METRICS_FILE, [results])
    return results


def read_metrics(output_dir: str | Path) -> dict[str, Any]:
    """The metrics ``write_judgements`` wrote in ``output_dir``."""
    records = read_jsonl(Path(output_dir) / METRICS_FILE)
    if len(records) != 1:
        raise ValueError(f"{Path(output_dir) / METRICS_FILE}: expected one metrics line, found {len(records)}")
    return records[0]


def resumed_verdicts(items: Sequence[QAItem], release_output: str | Path) -> dict[str, Verdict]:
    """Verdicts of the release's judge output (its directory or combined file) for items it judged as they are
    now (same question, answer and prediction); entries it could not read are judged again."""
    entries = release_files.read_release(release_output)
    found = {}
    for item in items:
        entry = entries.get(item.id)
        if entry is None or not release_files.entry_matches(entry, item):
            continue
        verdict = release_files.entry_verdict(item.id, entry)
        if verdict.ok:
            found[item.id] = verdict
    logger.info("%s: %d of %d items already judged there", release_output, len(found), len(items))
    return found


def run_judge(
    items: Sequence[QAItem], output_dir: str | Path, judge: Judge, prompt: PromptSpec,
    cache_path: str | Path | None = None, workers: int = 8, meta: dict[str, Any] | None = None,
    unanswered: int = 0, resume_from: str | Path | None = None, release_json: str | Path | None = None,
) -> dict[str, Any]:
    """Judge ``items`` end to end; ``cache_path`` defaults to ``output_dir/judge_cache.jsonl``.

    ``unanswered``: questions of the benchmark without a prediction, counted in the coverage fields.
    ``resume_from``: the release's judge output; items judged there are not asked again.
    ``release_json``: also write the release's combined ``{id: [verdict, qa]}`` file there.
    """
    meta = dict(meta or {})
    done = resumed_verdicts(items, resume_from) if resume_from is not None else {}
    todo = [i for i in items if i.id not in done]
    cache = JudgeCache(cache_path or Path(output_dir) / "judge_cache.jsonl")
    try:
        fresh = dict(zip((i.id for i in todo), judge_items(todo, judge, prompt, cache, workers), strict=True))
    finally:
        cache.close()
    if resume_from is not None:
        meta["resumed"] = {"from": str(resume_from), "items": len(done), "judge": release_files.RELEASE_JUDGE_MODEL}
    verdicts = [done.get(i.id) or fresh[i.id] for i in items]
    info = judge.info(prompt)
    results = write_judgements(output_dir, items, verdicts, {**meta, "judge": asdict(info)}, unanswered, release_json)
    if results["failures"]:
        logger.warning("%d of %d items could not be judged: see %s", results["failures"], results["total"],
                       Path(output_dir) / FAILURES_FILE)
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


def _warn_about_strays(out: Path, written: dict[str, Any]) -> None:
    """``*.json`` files this run did not write would be counted as items by the release's rule."""
    names = {release_files.item_path(out, item_id).name for item_id in written}
    strays = sorted(p.name for p in out.glob("*.json") if p.name not in names)
    if strays:
        logger.warning("%s holds %d *.json files that are not this run's items (the release's script would count "
                       "them): %s", out, len(strays), ", ".join(strays[:5]))
