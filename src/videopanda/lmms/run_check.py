"""``videopanda eval lmms -- ARGS``: lmms-eval's CLI, with an exit status that says whether its run worked.

lmms-eval 0.7 catches any error of an evaluation (a model that does not load, a task
that crashes, a missing video), logs "Error during evaluation" and exits 0. This runs
``python -m lmms_eval ARGS`` unchanged and then reads what the run wrote: the run
failed unless a ``*_results.json`` newer than the start is under ``--output_path``
and it holds every task of ``--tasks`` (a group: each of its subtasks) with at least
one scored document and no metric left without a value. Needs no lmms-eval import itself (its CLI is a subprocess).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


class LmmsRunError(RuntimeError):
    """lmms-eval's run did not produce the results it was asked for."""


def option_value(args: Sequence[str], name: str) -> str | None:
    """The value of ``--name VALUE`` or ``--name=VALUE`` in an lmms-eval argument list (the last one wins)."""
    value = None
    for k, arg in enumerate(args):
        if arg == name and k + 1 < len(args):
            value = args[k + 1]
        elif arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
    return value


def run_lmms_eval(args: Sequence[str]) -> dict[str, Any]:
    """Run lmms-eval's CLI with ``args``; returns its results file's content, or raises ``LmmsRunError``."""
    tasks, output_path = option_value(args, "--tasks"), option_value(args, "--output_path")
    if not tasks or not output_path:
        raise ValueError("videopanda eval lmms needs --tasks and --output_path among lmms-eval's arguments "
                         "(the results file under --output_path is what tells a failed run)")
    started = time.time()
    returncode = subprocess.run([sys.executable, "-m", "lmms_eval", *args]).returncode
    if returncode:
        raise LmmsRunError(f"lmms-eval exited with status {returncode}")
    return check_results(Path(output_path), tasks.split(","), since=started)


def check_results(output_path: Path, tasks: Sequence[str], since: float = 0.0) -> dict[str, Any]:
    """The newest ``*_results.json`` under ``output_path`` written after ``since``, if it holds every task."""
    written = [p for p in output_path.rglob("*_results.json") if p.stat().st_mtime >= since]
    if not written:
        raise LmmsRunError(f"lmms-eval wrote no results under {output_path}: its run failed (its log above says why)")
    path = max(written, key=lambda p: (p.stat().st_mtime, p.name))  # lmms-eval names them by date
    results = json.loads(path.read_text())
    problems = _problems(results, tasks)
    if problems:
        raise LmmsRunError(f"{path}: {'; '.join(problems)}")
    return results


def _problems(results: dict[str, Any], tasks: Sequence[str]) -> list[str]:
    scored = {**results.get("results", {}), **results.get("groups", {})}
    samples = results.get("n-samples", {})
    problems = []
    for task in _leaf_tasks(tasks, results.get("group_subtasks", {})):
        if task not in scored:
            problems.append(f"no results for task {task}")
            continue
        if task in samples and not samples[task].get("effective"):
            problems.append(f"task {task} scored no documents")
        empty = [k for k, v in scored[task].items() if "," in k and "stderr" not in k and _no_value(v)]
        if empty:
            problems.append(f"task {task} has no value for {', '.join(empty)}")
    return problems


def _leaf_tasks(names: Sequence[str], group_subtasks: dict[str, list[str]]) -> list[str]:
    """The tasks a run was asked for, a group (``mvbench``) standing for its subtasks."""
    leaves: list[str] = []
    for name in names:
        leaves += _leaf_tasks(group_subtasks[name], group_subtasks) if group_subtasks.get(name) else [name]
    return leaves


def _no_value(value: Any) -> bool:
    return value is None or value == "N/A" or (isinstance(value, float) and math.isnan(value))
