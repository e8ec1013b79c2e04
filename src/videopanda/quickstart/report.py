"""The quickstart's outputs: ``results.json``, the printed table, ``report.md`` with loss and accuracy PNGs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from videopanda.eval.judge.runner import FAILURES_FILE
from videopanda.eval.run import MERGE_FILE
from videopanda.quickstart.config import STAGE_NAMES

COARSE = ("appearance", "temporal")
FINE_ORDER = ("colour", "shape", "size", "direction", "order", "count")
ROWS = ("untrained", *STAGE_NAMES)


@dataclass
class QuickstartResults:
    wall_seconds: float
    chance: dict[str, float]
    accuracy: dict[str, dict[str, float]]  # "untrained" | stage -> type -> accuracy in [0, 1]
    losses: dict[str, list[dict[str, float]]] = field(default_factory=dict)  # stage -> Trainer log entries
    judge: dict | None = None  # the local judge's summary on the final model
    seconds: dict[str, float] = field(default_factory=dict)  # wall seconds per phase
    precision: dict[str, str] = field(default_factory=dict)  # runtime.Precision.as_dict() of the run
    questions: dict[str, int] = field(default_factory=dict)  # row -> held-out questions it was scored on

    def to_json(self) -> dict:
        """The documented schema: ``{"wall_seconds", "precision", "questions", "chance", "accuracy"}``."""
        return {"wall_seconds": round(self.wall_seconds, 1), "precision": self.precision,
                "questions": self.questions, "chance": _ordered(self.chance),
                "accuracy": {row: _ordered(_types_only(self.accuracy[row])) for row in ROWS if row in self.accuracy}}


def _types_only(values: dict[str, float]) -> dict[str, float]:
    """Per question type only (the evaluation also reports ``all``)."""
    return {k: v for k, v in values.items() if k != "all"}


def _ordered(values: dict[str, float]) -> dict[str, float]:
    """Coarse types first, then fine types, then anything else; rounded."""
    keys = [k for k in (*COARSE, *FINE_ORDER) if k in values] + sorted(set(values) - {*COARSE, *FINE_ORDER})
    return {k: round(float(values[k]), 4) for k in keys}


def table(results: QuickstartResults) -> str:
    """Accuracy (%) per question type: one row per evaluated model, then chance."""
    types = [k for k in _ordered(results.chance) if k != "all"]
    header = "| model | " + " | ".join(types) + " |"
    lines = [header, "|---" * (len(types) + 1) + "|"]
    for row in ROWS:
        if row in results.accuracy:
            lines.append(f"| {row} | " + " | ".join(_pct(results.accuracy[row].get(t)) for t in types) + " |")
    lines.append("| chance | " + " | ".join(_pct(results.chance.get(t)) for t in types) + " |")
    return "\n".join(lines)


def questions_note(results: QuickstartResults) -> str:
    """Which rows were scored on how many held-out questions (mid-run rows may use a subset)."""
    return "Questions scored: " + ", ".join(f"{row} {n}" for row, n in results.questions.items()) + "."


def judge_note(results: QuickstartResults, out: Path) -> str:
    """What the local judge made of the final answers, and how to judge them with a capable model."""
    judge = results.judge
    if judge is None:
        raise ValueError("the quickstart ran no local judge: there is nothing to note")
    verdicts = f"{judge['judged']} of {judge['total']} final answers judged"
    if judge["judged"]:
        verdicts += f" (accuracy {_pct(judge['accuracy'])}%, mean score {judge['mean_score']:.2f})"
    failed = (f"; {judge['failures']} replies were not in the judge's format (see {out / 'judge' / FAILURES_FILE}:"
              " a small model rarely keeps to it)" if judge["failures"] else "")
    predictions = out / "eval" / STAGE_NAMES[-1] / MERGE_FILE
    return (f"Local judge ({judge['judge']['model']}, the release's QA prompt): {verdicts}{failed}. Judge every "
            f"answer with a capable model: videopanda eval judge {predictions} --backend openai --judge-model M")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def plot_losses(losses: dict[str, list[dict[str, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    offset = 0
    for stage in STAGE_NAMES:
        entries = losses.get(stage, [])
        if entries:
            ax.plot([offset + e["step"] for e in entries], [e["loss"] for e in entries], marker=".", label=stage)
            offset += int(entries[-1]["step"])
    ax.set(xlabel="optimizer step (stages in sequence)", ylabel="training loss", title="Quickstart loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_accuracy(results: QuickstartResults, path: Path, types: Sequence[str] = COARSE) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in ROWS if r in results.accuracy]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / len(types)
    for i, kind in enumerate(types):
        xs = [j + i * width for j in range(len(rows))]
        ax.bar(xs, [100 * results.accuracy[r].get(kind, 0.0) for r in rows], width, label=kind)
        ax.axhline(100 * results.chance.get(kind, 0.0), color=f"C{i}", linestyle="--", linewidth=1)
    ax.set_xticks([j + width * (len(types) - 1) / 2 for j in range(len(rows))], rows)
    ax.set(ylabel="accuracy % (dashed: chance)", ylim=(0, 100), title="Held-out QA accuracy (rule-based match)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_outputs(results: QuickstartResults, out: Path) -> dict[str, Path]:
    """results.json, loss.png, accuracy.png and report.md under ``out``."""
    paths = {"results": out / "results.json", "loss": out / "loss.png", "accuracy": out / "accuracy.png",
             "report": out / "report.md"}
    paths["results"].write_text(json.dumps(results.to_json(), indent=1) + "\n")
    plot_losses(results.losses, paths["loss"])
    plot_accuracy(results, paths["accuracy"])
    paths["report"].write_text(markdown(results))
    return paths


def markdown(results: QuickstartResults) -> str:
    lines = [
        "# Video-Panda quickstart",
        "",
        f"Whole run: {results.wall_seconds:.0f} s wall clock (synthesis, training, evaluation, judging).",
        "",
        "## Held-out QA accuracy (%), rule-based match",
        "",
        table(results),
        "",
        questions_note(results),
        "",
        "Chance: uniform guessing over the answers each question allows. Appearance = colour, shape, size;",
        "temporal = direction, order (which object moves first), count (how many blinks).",
        "",
        "![accuracy](accuracy.png)",
        "",
        "## Training loss",
        "",
        "![loss](loss.png)",
    ]
    if results.judge is not None:
        lines += ["", "## Local LLM judge (final model)", "", judge_note(results, Path()), "", "```",
                  json.dumps(results.judge, indent=1), "```"]
    if results.seconds:
        lines += ["", "## Time per phase (s)", ""]
        lines += [f"- {phase}: {seconds:.0f}" for phase, seconds in results.seconds.items()]
    return "\n".join(lines) + "\n"
