"""Video-LLaVA-format training data: parse -> decode -> transform -> tokenize.

Annotation files are JSON lists of ``{"id", "video" | "image" | neither,
"conversations": [{"from": "human"|"gpt", "value": str}, ...]}``, optionally
with a clip as ``"start"``/``"end"`` seconds. Relative media paths resolve
against ``video_root`` (videos) and ``image_root`` (images; default
``video_root``).

Bad data never stops training: a missing, corrupt, empty or unreadable video
or image, a malformed item, or a sample whose visual tokens exceed the
maximum length is logged (file#index and media path), recorded in the
dataset's ``SkipLog``, and replaced by the next usable index, a bounded
number of attempts, deterministically. A malformed annotation *file* (not
JSON, not a list) is a configuration error: a ``ValueError`` naming it, even
when it is one of several, so a run never silently trains on part of its data.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, TypeGuard

import av
import numpy as np
import torch
from torch.utils.data import Dataset

from videopanda.data.conversation import ConversationError, Turn, turns_from_annotation
from videopanda.data.decode import VideoDecodeError, read_image, read_video_frames
from videopanda.data.processing_videopanda import EncodedSample, SampleTooLongError, VideoPandaProcessor
from videopanda.data.transform import VisualInputs
from videopanda.paths import check_media_name

logger = logging.getLogger(__name__)


class AnnotationError(ValueError):
    """An annotation item that cannot be a sample (not an object, bad media or clip fields)."""


FLIPPED_SUFFIX = "#flipped"  # sample_key suffix of a train-flipped sample (the teacher cache stores both)

# What makes a sample unusable; anything else is a bug and is raised.
SKIPPABLE = (VideoDecodeError, AnnotationError, ConversationError, SampleTooLongError, av.FFmpegError, OSError)


@dataclass(frozen=True)
class AnnotationItem:
    file: str
    position: int  # index inside its file
    item: Any  # the raw JSON value

    @property
    def source(self) -> str:
        return f"{self.file}#{self.position}"


@dataclass(frozen=True)
class ParsedItem:
    turns: list[Turn]
    media: str | None  # the annotation's video/image path, as written
    video: Path | None
    image: Path | None
    clip: tuple[float, float] | None


@dataclass(frozen=True)
class SkipRecord:
    index: int  # dataset index
    source: str  # "file.json#position"
    media: str | None  # video/image path, when the item names one
    reason: str  # "ErrorType: message"


class SkipLog:
    """Skipped samples, once each. ``path`` (a .jsonl file, fresh per run) also collects them
    across DataLoader workers and ranks, which hold their own copies of the dataset."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = None if path is None else Path(path)
        self._records: dict[int, SkipRecord] = {}

    def __contains__(self, index: int) -> bool:
        return index in self._records

    def add(self, record: SkipRecord) -> None:
        self._records[record.index] = record
        if self.path is not None:
            with self.path.open("a") as file:
                file.write(json.dumps(asdict(record)) + "\n")

    def records(self) -> list[SkipRecord]:
        """Every skipped sample (this process's, plus the shared file's), ordered by index."""
        merged = dict(self._records)
        if self.path is not None and self.path.exists():
            for line in self.path.read_text().splitlines():
                try:  # a line being written by another process right now may be incomplete
                    record = SkipRecord(**json.loads(line))
                except (json.JSONDecodeError, TypeError):
                    continue
                merged.setdefault(record.index, record)
        return [merged[i] for i in sorted(merged)]

    def summary(self) -> str:
        """One log line: count by error type, then each skipped sample."""
        records = self.records()
        if not records:
            return "no samples skipped"
        kinds = Counter(r.reason.split(":")[0] for r in records)
        listing = "; ".join(f"{r.source} ({r.media or 'no media'}): {r.reason}" for r in records)
        return f"{len(records)} samples skipped ({', '.join(f'{n} {k}' for k, n in kinds.most_common())}): {listing}"


def load_annotations(
    files: Sequence[str | Path], fraction: float = 1.0, seed: int = 0, max_samples: int | None = None
) -> list[AnnotationItem]:
    """Items of all files in order. ``fraction`` < 1 keeps that share of the list shuffled with
    ``seed`` (stage 1: half of the shuffled data); ``max_samples`` then caps the count."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    items = [item for file in files for item in _read_annotation_file(Path(file))]
    if fraction < 1.0:
        order = np.random.default_rng(seed).permutation(len(items))[: round(len(items) * fraction)]
        items = [items[i] for i in order]
    return items if max_samples is None else items[:max_samples]


def _read_annotation_file(path: Path) -> list[AnnotationItem]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"annotation file {path} is unreadable or not JSON: {err}") from err
    if not isinstance(data, list):
        raise ValueError(f"annotation file {path} must hold a JSON list of samples, got {type(data).__name__}")
    return [AnnotationItem(str(path), i, item) for i, item in enumerate(data)]


def parse_item(item: Any, video_root: Path, image_root: Path) -> ParsedItem:
    """Check an annotation item's fields; media paths resolved against their roots."""
    if not isinstance(item, dict):
        raise AnnotationError(f"item is not an object: {str(item)[:80]!r}")
    if "video" in item and "image" in item:
        raise AnnotationError("item names both a video and an image")
    for key in ("video", "image"):
        if key in item and (not isinstance(item[key], str) or not item[key]):
            raise AnnotationError(f"{key!r} must be a non-empty path string, got {item[key]!r}")
        if key in item and (problem := check_media_name(item[key])):
            raise AnnotationError(f"{key!r} {item[key]!r} {problem}: media paths are relative to the media root")
    return ParsedItem(
        turns=turns_from_annotation(item.get("conversations")),
        media=item.get("video", item.get("image")),
        video=video_root / item["video"] if "video" in item else None,
        image=image_root / item["image"] if "image" in item else None,
        clip=_clip(item),
    )


def _clip(item: dict) -> tuple[float, float] | None:
    if "start" not in item and "end" not in item:
        return None
    start, end = item.get("start"), item.get("end")
    if not (_is_number(start) and _is_number(end) and 0 <= start < end):
        raise AnnotationError(f"clip needs numbers 0 <= start < end, got start={start!r} end={end!r}")
    return float(start), float(end)


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def flip_visuals(visuals: VisualInputs) -> VisualInputs:
    """The whole clip's canvases flipped horizontally (image and mask alike, both scales)."""
    teacher = visuals.teacher_pixel_values
    flipped_teacher = None if teacher is None else teacher.flip(-1)
    return VisualInputs(visuals.pixel_values.flip(-1), flipped_teacher, visuals.num_real_frames)


def media_key(parsed: ParsedItem) -> str:
    """The media file (and clip) a sample shows, as annotated: ``path`` or ``path@start-end``."""
    path = str(parsed.media)
    return path if parsed.clip is None else f"{path}@{parsed.clip[0]:g}-{parsed.clip[1]:g}"


def modality_of(item: Any) -> str:
    """"video", "image" or "text", from the item's keys alone (no decoding)."""
    if isinstance(item, dict):
        return "video" if "video" in item else "image" if "image" in item else "text"
    return "text"


def text_length(item: Any) -> int:
    """Words in the item's conversation: the release's length estimate for grouping."""
    turns = item.get("conversations") if isinstance(item, dict) else None
    if not isinstance(turns, list):
        return 0
    return sum(len(str(t.get("value", "")).split()) for t in turns if isinstance(t, dict))


class VideoLLaVADataset(Dataset):
    """Training samples (``EncodedSample``) from annotation items (``load_annotations``).

    Train-time horizontal flips (the release's p=0.5, on the padded canvas)
    are decided here from ``(seed, epoch, index)``: the same sample flips the
    same way in a rerun, and a flipped sample's key ends in ``FLIPPED_SUFFIX``.
    Call ``set_epoch`` each epoch (accelerate's data loader does) and log
    ``skipped_summary()`` at its end; with DataLoader workers, give
    ``skip_log`` (a .jsonl path) so the summary sees the workers' skips.
    ``with_keys`` sets each visual sample's ``sample_key`` (teacher cache).
    """

    def __init__(
        self,
        items: Sequence[AnnotationItem],
        media_root: str | Path,
        processor: VideoPandaProcessor,
        *,
        image_root: str | Path | None = None,
        train: bool = True,
        seed: int = 0,
        with_teacher: bool = False,
        with_keys: bool = False,
        max_attempts: int = 32,
        skip_log: str | Path | None = None,
    ) -> None:
        if not items:
            raise ValueError("no annotation items: the annotation files are empty (or fraction/max_samples too small)")
        self.items = list(items)
        self.processor = processor
        self.video_root = Path(media_root)
        self.image_root = self.video_root if image_root is None else Path(image_root)
        self.train = train
        self.seed = seed
        self.with_teacher = with_teacher
        self.with_keys = with_keys
        self.max_attempts = max_attempts
        self.skipped = SkipLog(skip_log)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def skipped_summary(self) -> str:
        return self.skipped.summary()

    def modality_lengths(self) -> list[tuple[str, int]]:
        """Per sample, without decoding: (modality "video" | "image" | "text", word count), for the sampler."""
        return [(modality_of(a.item), text_length(a.item)) for a in self.items]

    def __getitem__(self, index: int) -> EncodedSample:
        """Sample ``index``, or the next usable one after it when it is bad (bounded, deterministic)."""
        for offset in range(self.max_attempts):
            candidate = (index + offset) % len(self.items)
            if candidate in self.skipped:
                continue
            try:
                return self.load(candidate)
            except SKIPPABLE as err:
                self._skip(candidate, err)
        raise RuntimeError(
            f"{self.max_attempts} consecutive unusable samples from index {index}; {self.skipped_summary()}"
        )

    def load(self, index: int) -> EncodedSample:
        """parse -> decode -> transform (+ train flip) -> tokenize; raises one of ``SKIPPABLE`` for bad data."""
        parsed = parse_item(self.items[index].item, self.video_root, self.image_root)
        frames = self._decode(parsed)
        if frames is None:
            return self.processor.encode_conversation(parsed.turns)
        visuals = self._transform(frames, is_video=parsed.video is not None)
        flipped = self.train and self.flips(index)
        sample = self.processor.encode_conversation(parsed.turns, flip_visuals(visuals) if flipped else visuals)
        if not self.with_keys:
            return sample
        return replace(sample, sample_key=media_key(parsed) + (FLIPPED_SUFFIX if flipped else ""))

    def _decode(self, parsed: ParsedItem) -> np.ndarray | None:
        """(T, H, W, 3) uint8 frames (T=1 for an image), or None for a text-only sample."""
        if parsed.video is not None:
            return read_video_frames(parsed.video, self.processor.num_frames, parsed.clip)
        if parsed.image is not None:
            return read_image(parsed.image)
        return None

    def _transform(self, frames: np.ndarray, is_video: bool) -> VisualInputs:
        return self.processor.video_processor.preprocess_video(frames, with_teacher=self.with_teacher,
                                                               is_image=not is_video)

    def flips(self, index: int) -> bool:
        """The train-time horizontal flip (p=0.5) of sample ``index``: a function of (seed, epoch, index)."""
        state = np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1, dtype=np.uint64)[0]
        return bool(torch.rand((), generator=torch.Generator().manual_seed(int(state))) < 0.5)

    def _skip(self, index: int, err: Exception) -> None:
        item = self.items[index]
        media = item.item.get("video", item.item.get("image")) if isinstance(item.item, dict) else None
        record = SkipRecord(index, item.source, None if media is None else str(media), f"{type(err).__name__}: {err}")
        logger.warning("skipping sample %d (%s, %s): %s", index, item.source, record.media or "no media", record.reason)
        self.skipped.add(record)
