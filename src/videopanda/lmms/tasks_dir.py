"""``videopanda eval lmms-tasks``: a directory for ``lmms-eval --include_path`` holding our QA tasks.

It copies the shipped task template and ``utils.py`` (package data in
``videopanda/lmms/tasks/``), writes one task YAML per benchmark found under
``DATA_ROOT/eval/GPT_Zero_Shot_QA`` (``videopanda_msvdqa``, ``videopanda_msrvttqa``,
``videopanda_tgifqa``, ``videopanda_activitynetqa``, ``videopanda_synthqa``), its docs
(``docs/<benchmark>.jsonl``: questions joined with answers, with the video's path;
questions without a readable video file listed in ``docs/<benchmark>.missing.jsonl``)
and the judge the tasks use (``videopanda_tasks.yaml``; the API key is read from
``OPENAI_API_KEY`` when the tasks run, never written).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import yaml

from videopanda.data.decode import find_video_file
from videopanda.eval.benchmarks import BENCHMARKS, Benchmark
from videopanda.eval.jsonl import write_jsonl
from videopanda.eval.run import load_qa_pairs

logger = logging.getLogger(__name__)

SETTINGS_FILE = "videopanda_tasks.yaml"
SHIPPED = ("_videopanda_qa_yaml", "utils.py")


@dataclass(frozen=True)
class TaskJudge:
    """The judge of the tasks: ``backend`` "openai" (any OpenAI-compatible endpoint) or "rule" (no LLM)."""

    backend: str = "openai"
    model: str = "gpt-3.5-turbo"
    base_url: str | None = None  # None: api.openai.com
    seed: int | None = 0
    max_attempts: int = 6
    timeout_s: float = 60.0


def shipped_dir() -> Path:
    """The package's task template and ``utils.py``."""
    return Path(str(resources.files("videopanda.lmms") / "tasks"))


def task_name(benchmark: Benchmark) -> str:
    return f"videopanda_{benchmark.name.lower()}qa"


def write_tasks_dir(data_root: str | Path, out: str | Path, judge: TaskJudge,
                    benchmarks: list[str] | None = None) -> list[str]:
    """Write the directory; returns the task names (benchmarks without questions under ``data_root`` skipped)."""
    out = Path(out)
    (out / "docs").mkdir(parents=True, exist_ok=True)
    for name in SHIPPED:
        shutil.copyfile(shipped_dir() / name, out / name)
    (out / SETTINGS_FILE).write_text(yaml.safe_dump({"judge": asdict(judge)}, sort_keys=False))
    wanted = {b.lower() for b in benchmarks} if benchmarks else None
    tasks = []
    for benchmark in BENCHMARKS.values():
        questions, answers, videos = benchmark.paths(data_root)
        if (wanted is not None and benchmark.name.lower() not in wanted) or not questions.is_file():
            continue
        _write_docs(benchmark, questions, answers, videos, out / "docs")
        tasks.append(task_name(benchmark))
        (out / f"{tasks[-1]}.yaml").write_text(
            f"task: {tasks[-1]}\ninclude: _videopanda_qa_yaml\n"
            f"dataset_kwargs:\n  data_files:\n    test: docs/{benchmark.name}.jsonl\n"
        )
    if wanted is not None and len(tasks) != len(wanted):
        raise ValueError(f"{data_root}: no questions for some of {sorted(wanted)} (found: {tasks})")
    return tasks


def _write_docs(benchmark: Benchmark, questions: Path, answers: Path, videos: Path, docs: Path) -> None:
    pairs = load_qa_pairs(questions, answers)
    found, missing = [], []
    for pair in pairs:
        video = find_video_file(videos, pair.video_name)
        if video is None:
            missing.append({"id": pair.id, "video_name": pair.video_name, "reason": f"no video file in {videos}"})
            continue
        found.append({"question_id": pair.id, "video_name": pair.video_name, "question": pair.question,
                      "answer": pair.answer, "type": pair.type, "video": str(video.resolve())})
    write_jsonl(docs / f"{benchmark.name}.jsonl", found)
    write_jsonl(docs / f"{benchmark.name}.missing.jsonl", missing)
    if missing:
        logger.warning("%s: %d of %d questions have no video file, listed in %s", benchmark.name, len(missing),
                       len(pairs), docs / f"{benchmark.name}.missing.jsonl")
