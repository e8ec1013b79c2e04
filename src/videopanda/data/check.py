"""Dataset checker (``videopanda data check DATA_ROOT``).

Checks a data root in the seed's layout, or any subset of it (a dataset
written by ``videopanda data synth`` has only some parts)::

    DATA_ROOT/train/train_json/*.json        Video-LLaVA annotations (media relative to DATA_ROOT/train or DATA_ROOT)
    DATA_ROOT/train/{valley,videochatgpt_tune}/   their videos
    DATA_ROOT/eval/GPT_Zero_Shot_QA/<Name>_Zero_Shot_QA/{test_q.json, test_a.json, videos/}

Every annotation file is parsed with the same rules as training
(``dataset.load_annotations`` / ``parse_item``) and evaluation
(``eval.run.load_qa_pairs``); every referenced video or image is decoded as
training decodes it (the sampled frames), in worker processes. Problems name
the annotation file and index (``file.json#12``) and the media file. Missing
layout parts are warnings, not problems. ``write_clean`` writes the
annotation files without the bad samples into a new data root whose media
folders link to the originals.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from tqdm import tqdm

from videopanda.data.decode import VideoDecodeError, find_video_file, read_image, read_video_frames
from videopanda.eval.benchmarks import BENCHMARKS, ZERO_SHOT_QA_DIR

logger = logging.getLogger(__name__)

TRAIN_JSON_DIR = Path("train/train_json")
TRAIN_VIDEO_DIRS = (Path("train/valley"), Path("train/videochatgpt_tune"))
QA_FILES = ("test_q.json", "test_a.json", "videos")
ProblemKind = Literal["layout", "annotation", "missing", "corrupt"]


@dataclass(frozen=True)
class Problem:
    kind: ProblemKind
    source: str  # the annotation file, with "#index" for one sample
    media: str | None  # the media file concerned, when there is one
    reason: str


@dataclass(frozen=True)
class MediaJob:
    """One media file to decode, as training/evaluation would read it."""

    kind: Literal["video", "image"]
    path: str
    clip: tuple[float, float] | None = None


@dataclass
class CheckReport:
    data_root: str
    found: list[str] = field(default_factory=list)  # layout parts present, relative to data_root
    missing: list[str] = field(default_factory=list)  # expected parts absent (warnings)
    annotation_files: int = 0
    samples: int = 0
    media_checked: int = 0
    media_failed: int = 0  # of media_checked: files that did not decode
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        lines = [
            f"{self.data_root}: found {', '.join(self.found) or 'nothing'}",
            f"{self.annotation_files} annotation files, {self.samples} samples, "
            f"{self.media_checked} media files checked: {self.media_checked - self.media_failed} decoded, "
            f"{self.media_failed} failed",
        ]
        if self.missing:
            lines.append(f"not present (skipped): {', '.join(self.missing)}")
        lines += [f"{p.kind.upper()} {p.source}{f' ({p.media})' if p.media else ''}: {p.reason}" for p in self.problems]
        count = len(self.problems)
        lines.append("OK" if self.ok else f"{count} problem{'s' if count > 1 else ''}")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {**asdict(self), "ok": self.ok}


@dataclass
class _Plan:
    """What to decode, and which samples depend on each media file."""

    jobs: dict[MediaJob, list[str]] = field(default_factory=lambda: defaultdict(list))  # job -> sources
    bad_sources: set[str] = field(default_factory=set)


def check_dataset(
    data_root: str | Path, *, workers: int = 2, num_frames: int = 8, write_clean: str | Path | None = None
) -> CheckReport:
    """Check every part of ``data_root`` that exists; decode media with ``workers`` processes (0: in-process)."""
    root = Path(data_root)
    report, plan = CheckReport(str(root)), _Plan()
    _check_layout(root, report)
    train_files = sorted((root / TRAIN_JSON_DIR).glob("*.json"))
    qa_dirs = [root / part for part in report.found if part.endswith("_Zero_Shot_QA")]
    for path in train_files:
        _plan_training_file(path, root, report, plan)
    for qa_dir in qa_dirs:
        _plan_qa_set(qa_dir, report, plan)
    _decode_all(plan, num_frames, workers, report)
    report.problems.sort(key=lambda p: _source_key(p.source))
    if write_clean is not None:
        write_clean_copy(root, Path(write_clean), train_files, qa_dirs, plan.bad_sources)
    return report


def _check_layout(root: Path, report: CheckReport) -> None:
    if not root.is_dir():
        report.problems.append(Problem("layout", str(root), None, "data root is not a directory"))
        return
    qa_root = root / ZERO_SHOT_QA_DIR
    expected_qa = [ZERO_SHOT_QA_DIR / b.directory for b in BENCHMARKS.values()]
    found_qa = sorted(p.relative_to(root) for p in qa_root.glob("*_Zero_Shot_QA") if p.is_dir())
    for part in [TRAIN_JSON_DIR, *TRAIN_VIDEO_DIRS, *expected_qa]:
        if not (root / part).is_dir():
            report.missing.append(part.as_posix())
    for part in [TRAIN_JSON_DIR, *TRAIN_VIDEO_DIRS, *found_qa]:
        if (root / part).is_dir():
            report.found.append(part.as_posix())
    for part in found_qa:
        for name in QA_FILES:
            if not (root / part / name).exists():
                report.problems.append(Problem("layout", (part / name).as_posix(), None, "missing from the QA set"))
    if report.missing:
        logger.warning("%s: not present, skipped: %s", root, ", ".join(report.missing))
    if not report.found:
        report.problems.append(Problem("layout", str(root), None, "no dataset part found (see `data check --help`)"))


def _plan_training_file(path: Path, root: Path, report: CheckReport, plan: _Plan) -> None:
    # Imported here: the dataset module pulls in transformers, which decode workers don't need.
    from videopanda.data.dataset import SKIPPABLE, load_annotations, parse_item

    report.annotation_files += 1
    try:
        items = load_annotations([path])
    except ValueError as err:
        _add_problem(report, plan, "annotation", str(path), None, str(err))
        return
    report.samples += len(items)
    train_root = root / "train"
    for item in items:
        try:
            parsed = parse_item(item.item, train_root, train_root)
        except SKIPPABLE as err:
            _add_problem(report, plan, "annotation", item.source, None, f"{type(err).__name__}: {err}")
            continue
        media = parsed.video or parsed.image  # resolved against DATA_ROOT/train, as training does
        if parsed.media is None or media is None:
            continue  # a text-only sample
        if not media.is_file() and (root / parsed.media).is_file():
            reason = f"{parsed.media!r} is relative to DATA_ROOT; training resolves media against DATA_ROOT/train"
            _add_problem(report, plan, "missing", item.source, str(media), reason)
            continue
        kind: Literal["video", "image"] = "video" if parsed.video is not None else "image"
        _plan_media(report, plan, item.source, MediaJob(kind, str(media), parsed.clip))


def _plan_qa_set(qa_dir: Path, report: CheckReport, plan: _Plan) -> None:
    from videopanda.eval.run import load_qa_pairs

    questions = qa_dir / "test_q.json"
    if not questions.is_file() or not (qa_dir / "test_a.json").is_file():
        return  # reported by the layout check
    report.annotation_files += 2
    try:
        pairs = load_qa_pairs(questions, qa_dir / "test_a.json")
    except ValueError as err:
        _add_problem(report, plan, "annotation", str(questions), None, str(err))
        return
    report.samples += len(pairs)
    for index, pair in enumerate(pairs):
        source = f"{questions}#{index}"
        video = find_video_file(qa_dir / "videos", pair.video_name)
        if video is None:
            reason = f"no video file for {pair.video_name!r} (any extension, or v_ prefix)"
            _add_problem(report, plan, "missing", source, str(qa_dir / "videos" / pair.video_name), reason)
        else:
            _plan_media(report, plan, source, MediaJob("video", str(video)))


def _plan_media(report: CheckReport, plan: _Plan, source: str, job: MediaJob) -> None:
    if Path(job.path).is_file():
        plan.jobs[job].append(source)
    else:
        _add_problem(report, plan, "missing", source, job.path, "file not found")


def _add_problem(report: CheckReport, plan: _Plan, kind: ProblemKind, source: str, media: str | None, reason: str):
    report.problems.append(Problem(kind, source, media, reason))
    plan.bad_sources.add(source)


def _decode_all(plan: _Plan, num_frames: int, workers: int, report: CheckReport) -> None:
    """Decode every planned media file once; a failure is a problem of every sample that uses it."""
    jobs = sorted(plan.jobs, key=lambda j: (j.path, j.clip or ()))
    report.media_checked = len(jobs)
    for job, reason in _run_jobs(jobs, num_frames, workers):
        if reason is not None:
            report.media_failed += 1
            for source in plan.jobs[job]:
                _add_problem(report, plan, "corrupt", source, job.path, reason)


def _run_jobs(jobs: list[MediaJob], num_frames: int, workers: int):
    """Yield (job, failure reason or None), with a progress bar."""
    bar = tqdm(total=len(jobs), desc="decoding", unit="file", disable=not jobs)
    with bar:
        if workers <= 0:
            for job in jobs:
                yield job, check_media(job, num_frames)
                bar.update()
            return
        # spawn: workers import only the decoder, not the parent's torch/threads state.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = {pool.submit(check_media, job, num_frames): job for job in jobs}
            for future in as_completed(futures):
                yield futures[future], future.result()
                bar.update()


def check_media(job: MediaJob, num_frames: int = 8) -> str | None:
    """Decode one media file as training does; the failure reason, or None when it reads."""
    try:
        if job.kind == "video":
            read_video_frames(job.path, num_frames, job.clip)
        else:
            read_image(job.path)
    except VideoDecodeError as err:
        return str(err)
    except Exception as err:  # noqa: BLE001 - a checker reports any failure of a file and goes on
        return f"{job.path}: {type(err).__name__}: {err}"
    return None


def write_clean_copy(root: Path, out: Path, train_files: list[Path], qa_dirs: list[Path], bad: set[str]) -> None:
    """Annotation files without the ``bad`` samples under ``out``, media folders linked to ``root``'s.

    ``out`` is then a data root of its own: the same relative paths resolve.
    """
    for path in train_files:
        items = None if str(path) in bad else _json_list(path)
        if items is not None:
            kept = [item for i, item in enumerate(items) if f"{path}#{i}" not in bad]
            _write_json(out / path.relative_to(root), kept)
            logger.info("%s: kept %d of %d samples", out / path.relative_to(root), len(kept), len(items))
    train = root / "train"
    for media_dir in sorted(p for p in train.glob("*") if p.is_dir() and p != root / TRAIN_JSON_DIR):
        _link(media_dir, out / media_dir.relative_to(root))
    for qa_dir in qa_dirs:
        _write_clean_qa(root, out, qa_dir, bad)


def _write_clean_qa(root: Path, out: Path, qa_dir: Path, bad: set[str]) -> None:
    if str(qa_dir / "test_q.json") in bad:
        return  # not a valid QA set: nothing to clean
    questions, answers = _json_list(qa_dir / "test_q.json"), _json_list(qa_dir / "test_a.json")
    if questions is None or answers is None:
        return
    bad_ids = {str(q.get("question_id")) for i, q in enumerate(questions) if f"{qa_dir / 'test_q.json'}#{i}" in bad}
    target = out / qa_dir.relative_to(root)
    _write_json(target / "test_q.json", [q for q in questions if str(q.get("question_id")) not in bad_ids])
    _write_json(target / "test_a.json", [a for a in answers if str(a.get("question_id")) not in bad_ids])
    for extra in sorted(qa_dir.iterdir()):
        if extra.name not in ("test_q.json", "test_a.json"):
            _link(extra, target / extra.name)
    logger.info("%s: dropped %d questions", target, len(bad_ids))


def _json_list(path: Path) -> list | None:
    """The file's JSON list, or None when it is not one (such files are reported, not copied)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, list) else None


def _write_json(path: Path, data: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")


def _link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists() and not target.is_symlink():
        target.symlink_to(source.resolve(), target_is_directory=source.is_dir())


def _source_key(source: str) -> tuple[str, int]:
    """("file", index) of "file#index"; index -1 for a whole file."""
    file, _, index = source.rpartition("#")
    return (file, int(index)) if file and index.isdigit() else (source, -1)
