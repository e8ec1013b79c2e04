"""The zero-shot QA benchmarks as data: directory under ``DATA_ROOT/eval/GPT_Zero_Shot_QA``, judge prompt.

Every benchmark shares one layout (Video-ChatGPT format): ``test_q.json``
(``[{video_name, question, question_id}]``), ``test_a.json``
(``[{answer, type, question_id}]``) and ``videos/<video_name>.<ext>``; file
names are resolved by ``data.decode.find_video_file`` (all benchmark
extensions and ActivityNet's ``v_`` prefix).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ZERO_SHOT_QA_DIR = Path("eval/GPT_Zero_Shot_QA")


@dataclass(frozen=True)
class Benchmark:
    name: str
    directory: str  # under DATA_ROOT/eval/GPT_Zero_Shot_QA
    prompt: str = "qa"  # judge prompt name (judge.prompts.PROMPTS)
    questions: str = "test_q.json"
    answers: str = "test_a.json"
    videos: str = "videos"

    def paths(self, data_root: str | Path) -> tuple[Path, Path, Path]:
        """(questions file, answers file, video directory) under ``data_root``."""
        root = Path(data_root) / ZERO_SHOT_QA_DIR / self.directory
        return root / self.questions, root / self.answers, root / self.videos


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark("MSVD", "MSVD_Zero_Shot_QA"),
        Benchmark("MSRVTT", "MSRVTT_Zero_Shot_QA"),
        Benchmark("TGIF", "TGIF_Zero_Shot_QA"),
        Benchmark("ActivityNet", "Activitynet_Zero_Shot_QA"),
        Benchmark("Synth", "Synth_Zero_Shot_QA"),  # `videopanda data synth`
    )
}


def get_benchmark(name: str) -> Benchmark:
    by_lower = {k.lower(): v for k, v in BENCHMARKS.items()}
    if name.lower() not in by_lower:
        raise ValueError(f"unknown benchmark {name!r} (known: {', '.join(BENCHMARKS)})")
    return by_lower[name.lower()]
