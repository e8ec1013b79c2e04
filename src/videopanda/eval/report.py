"""``eval report``: a Markdown + CSV table over benchmarks x models and a bar chart, from judged runs.

A judged run is any of: an ``eval judge`` output directory (its ``metrics.jsonl``), an
older ``results.json`` of ours, the release's judge ``--output_dir`` (``<id>.json`` per
item) or the release's combined ``--output_json`` (``{id: [verdict, qa]}``). Each row
carries our numbers and the release's score convention (``int()`` per score).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from videopanda.eval.judge import release_files
from videopanda.eval.judge.prompts import QA
from videopanda.eval.judge.runner import METRICS_FILE, read_metrics
from videopanda.eval.judge.scoring import summarize


@dataclass(frozen=True)
class ResultRow:
    benchmark: str
    model: str
    judge: str  # backend:model@prompt_hash
    accuracy: float | None  # yes / (yes + no), in %
    accuracy_all: float | None  # yes / all, failures as no, in %
    score: float | None  # mean score over judged items
    score_release: float | None  # the release's: sum(int(score)) / entries
    judged: int
    failures: int
    source: str  # "videopanda" | "release"
    answered: int | None = None  # questions of the benchmark with a prediction (None: not recorded)
    questions: int | None = None  # questions of the whole benchmark
    accuracy_benchmark: float | None = None  # yes / (yes + no + unanswered), in %
    accuracy_all_benchmark: float | None = None  # yes / questions: unanswered and failures as no, in %


def load_result(path: str | Path) -> ResultRow:
    """One judged run (see the module docstring), named by what it records or by its path."""
    path = Path(path)
    if path.is_dir():
        if (path / METRICS_FILE).is_file():
            return _our_row(read_metrics(path), path)
        return _release_row(release_files.read_release(path), path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a judged run ({err})") from err
    if isinstance(data, dict) and "judge" in data:
        return _our_row(data, path.parent)
    return _release_row(release_files.read_release(path), path)


def _our_row(data: dict[str, Any], run_dir: Path) -> ResultRow:
    """Our metrics, named by what they record (else ``<benchmark>/<model>/<judge dir>``)."""
    try:
        judge = data["judge"]
        return ResultRow(
            benchmark=data.get("benchmark") or run_dir.parent.parent.name,
            model=data.get("model") or run_dir.parent.name,
            judge=f"{judge['backend']}:{judge['model']}@{judge['prompt_hash'][:8]}",
            accuracy=_percent(data.get("accuracy")), accuracy_all=_percent(data.get("accuracy_all")),
            score=data.get("mean_score"), score_release=data.get("mean_score_truncated"),
            judged=data["judged"], failures=data["failures"], source="videopanda",
            answered=data.get("answered"), questions=data.get("questions"),
            accuracy_benchmark=_percent(data.get("accuracy_benchmark")),
            accuracy_all_benchmark=_percent(data.get("accuracy_all_benchmark")),
        )
    except (KeyError, TypeError) as err:
        raise ValueError(f"{run_dir}: not the metrics of `videopanda eval judge` (no {err})") from err


def _release_row(entries: dict[str, Any], path: Path) -> ResultRow:
    """The release's layout names the run by its path: ``<benchmark>/<model>/results.json`` for the
    combined file, ``<benchmark>/<model>/<judge dir>/`` for the item directory."""
    verdicts = [release_files.entry_verdict(key, entry) for key, entry in entries.items()]
    ours, release = summarize(verdicts), release_files.release_metrics(entries)
    return ResultRow(
        benchmark=path.parent.parent.name, model=path.parent.name,
        judge=f"release:{release_files.RELEASE_JUDGE_MODEL}@{QA.hash[:8]}",
        accuracy=_percent(ours["accuracy"]), accuracy_all=_percent(ours["accuracy_all"]),
        score=ours["mean_score"], score_release=release["average_score"],
        judged=ours["judged"], failures=ours["failures"], source="release",
    )


def _percent(value: float | None) -> float | None:
    return None if value is None else 100.0 * value


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown_table(rows: Sequence[ResultRow]) -> str:
    """Benchmarks as rows, models as columns: ``accuracy / score``; judges listed below."""
    benchmarks = sorted({r.benchmark for r in rows})
    models = sorted({r.model for r in rows})
    cell = {(r.benchmark, r.model): f"{_fmt(r.accuracy, 1)} / {_fmt(r.score, 2)} ({_fmt(r.score_release, 2)})"
            for r in rows}
    lines = ["| benchmark | " + " | ".join(models) + " |", "|---" * (len(models) + 1) + "|"]
    lines += [f"| {b} | " + " | ".join(cell.get((b, m), "") for m in models) + " |" for b in benchmarks]
    judges = sorted({r.judge for r in rows})
    lines += ["", "Cells: accuracy % (yes / (yes + no)) / mean score 0-5 (the release's score: int() per score, "
              "over every entry).", "Judges: " + ", ".join(judges)]
    failed = [r for r in rows if r.failures]
    lines += [f"- {r.model} on {r.benchmark}: {r.failures} items not judged" for r in failed]
    return "\n".join(lines + ["", *coverage_table(rows)]) + "\n"


def coverage_table(rows: Sequence[ResultRow]) -> list[str]:
    """One line per result: answered / questions and the accuracies over the answered and the whole benchmark."""
    lines = ["Coverage: answered / questions of the benchmark; accuracy % over the answered questions and over the "
             "whole benchmark (unanswered = wrong).", "",
             "| benchmark | model | answered | yes/(yes+no) | yes/all | whole: yes/(yes+no+unanswered) | "
             "whole: yes/questions |", "|---" * 7 + "|"]
    for r in sorted(rows, key=lambda r: (r.benchmark, r.model)):
        answered = "unknown" if r.questions is None else f"{r.answered} / {r.questions}"
        lines.append(f"| {r.benchmark} | {r.model} | {answered} | {_fmt(r.accuracy, 1)} | {_fmt(r.accuracy_all, 1)} | "
                     f"{_fmt(r.accuracy_benchmark, 1)} | {_fmt(r.accuracy_all_benchmark, 1)} |")
    return lines


def bar_chart(rows: Sequence[ResultRow], path: str | Path) -> None:
    """Grouped bars: accuracy per benchmark, one bar per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    benchmarks = sorted({r.benchmark for r in rows})
    models = sorted({r.model for r in rows})
    value = {(r.benchmark, r.model): r.accuracy or 0.0 for r in rows}
    width = 0.8 / max(1, len(models))
    fig, ax = plt.subplots(figsize=(max(4.0, 1.6 * len(benchmarks)), 3.2))
    for k, model in enumerate(models):
        xs = [i + k * width for i in range(len(benchmarks))]
        ax.bar(xs, [value.get((b, model), 0.0) for b in benchmarks], width, label=model)
    ax.set_xticks([i + width * (len(models) - 1) / 2 for i in range(len(benchmarks))], benchmarks)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(results: Sequence[str | Path], out_dir: str | Path, overwrite: bool = False) -> dict[str, Path]:
    """``report.md``, ``report.csv`` and ``report.png`` in ``out_dir``; returns their paths.

    An earlier report there is replaced only with ``overwrite``.
    """
    rows = [load_result(p) for p in results]
    if not rows:
        raise ValueError("no judged runs given")
    out = Path(out_dir)
    paths = {"md": out / "report.md", "csv": out / "report.csv", "png": out / "report.png"}
    existing = [p.name for p in paths.values() if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{out} already holds a report ({', '.join(existing)}): give another --out "
                              "or --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    paths["md"].write_text(markdown_table(rows))
    with paths["csv"].open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(asdict(rows[0])))
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)
    bar_chart(rows, paths["png"])
    return paths
