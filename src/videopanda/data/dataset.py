"""Video-LLaVA-format training data: decode -> sample -> transform -> tokenize.

Annotation files are JSON lists of ``{"id", "video" | "image" | neither,
"conversations": [{"from": "human"|"gpt", "value"}], optional "start"/"end"
seconds}``. A sample that cannot be used (missing, corrupt, empty or
unreadable video, malformed item, visual tokens cut by the maximum length) is
logged with its file and index, counted, and replaced by the next usable
index: deterministic, bounded, never a random recursive retry.
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Dataset

from videopanda.data.conversation import turns_from_annotation
from videopanda.data.decode import VideoDecodeError, read_image, read_video_frames
from videopanda.data.processing_videopanda import EncodedSample, VideoPandaProcessor, VisualTokensTruncated
from videopanda.data.transform import preprocess_frames, preprocess_image

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AnnotationRecord:
    source: str  # "file.json#index", for messages
    item: dict


@dataclass
class SkipLog:
    counts: Counter = field(default_factory=Counter)
    items: dict[str, str] = field(default_factory=dict)  # source -> reason

    def add(self, source: str, reason: str) -> None:
        if source not in self.items:
            self.counts[reason.split(":")[0]] += 1
            self.items[source] = reason

    def summary(self) -> str:
        if not self.items:
            return "no samples skipped"
        kinds = ", ".join(f"{n} {kind}" for kind, n in self.counts.most_common())
        return f"{len(self.items)} samples skipped ({kinds})"


def load_annotations(files: list[str | Path], fraction: float = 1.0, seed: int = 0,
                     max_samples: int | None = None) -> list[AnnotationRecord]:
    """All items of the files; ``fraction`` < 1 keeps that share of the shuffled list (stage 1 uses 0.5)."""
    records = []
    for file in map(Path, files):
        try:
            items = json.loads(file.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"annotation file {file} is unreadable or not JSON: {err}") from err
        if not isinstance(items, list):
            raise ValueError(f"annotation file {file} must hold a JSON list, got {type(items).__name__}")
        records += [AnnotationRecord(f"{file.name}#{i}", item) for i, item in enumerate(items)]
    if fraction < 1.0:
        random.Random(seed).shuffle(records)
        records = records[: max(1, int(len(records) * fraction))]
    return records[:max_samples] if max_samples else records


class VideoLLaVADataset(Dataset):
    def __init__(
        self,
        records: list[AnnotationRecord],
        media_root: str | Path,
        processor: VideoPandaProcessor,
        train: bool = True,
        seed: int = 0,
        with_teacher: bool = False,
        max_attempts: int = 16,
    ) -> None:
        if not records:
            raise ValueError("no annotation records")
        self.records = records
        self.media_root = Path(media_root)
        self.processor = processor
        self.train = train
        self.seed = seed
        self.with_teacher = with_teacher
        self.max_attempts = max_attempts
        self.epoch = 0
        self.skipped = SkipLog()

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, index: int) -> EncodedSample:
        for attempt in range(self.max_attempts):
            record = self.records[(index + attempt) % len(self.records)]
            try:
                return self.load(record, (index + attempt) % len(self.records))
            except (VideoDecodeError, VisualTokensTruncated, ValueError, KeyError, TypeError) as err:
                self.skipped.add(record.source, f"{type(err).__name__}: {err}")
                logger.warning("skipping sample %s: %s", record.source, err)
        raise RuntimeError(f"{self.max_attempts} consecutive unusable samples from index {index}: check the data")

    def load(self, record: AnnotationRecord, index: int) -> EncodedSample:
        item = record.item
        if not isinstance(item, dict) or "conversations" not in item:
            raise ValueError(f"malformed annotation item (no conversations): {str(item)[:80]}")
        turns = turns_from_annotation(item["conversations"])
        visual, is_video = None, True
        generator = torch.Generator().manual_seed(hash((self.seed, self.epoch, index)) % 2**62)
        options = self.transform_options()
        if "video" in item:
            clip = (float(item["start"]), float(item["end"])) if "start" in item and "end" in item else None
            frames = read_video_frames(self.media_root / item["video"], self.processor.config.num_frames, clip)
            visual = preprocess_frames(frames, num_frames=self.processor.config.num_frames, train=self.train,
                                       generator=generator, **options)
        elif "image" in item:
            visual, is_video = preprocess_image(read_image(self.media_root / item["image"]), train=self.train,
                                                generator=generator, **options), False
        return self.processor.encode(turns, visual, is_video)

    def transform_options(self) -> dict:
        config = self.processor.config
        return dict(image_size=config.image_size, teacher_image_size=config.teacher_image_size,
                    patch_size=config.patch_size, with_teacher=self.with_teacher)

    def modality_lengths(self) -> list[int]:
        """Rough lengths without decoding: positive for visual samples, negative for text-only (release rule)."""
        lengths = []
        for record in self.records:
            words = sum(len(str(m.get("value", "")).split()) for m in record.item.get("conversations", []))
            visual = "video" in record.item or "image" in record.item
            lengths.append(words if visual else -words)
        return lengths
