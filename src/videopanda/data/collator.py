"""Batching encoded samples into the model's input contract (docs/architecture.md, "Batch").

Input: ``EncodedSample``s from ``VideoPandaProcessor`` (``input_ids (L,)``,
``labels (L,)`` or None, ``pixel_values_videos (F,4,S,S)`` or None, ``video_grid_thw (1,3)``,
``teacher_pixel_values_videos (F,4,St,St)`` or None, ``sample_key`` or None). Output::

    input_ids, attention_mask   (B, L) long   padded (right for training, left for generation)
    labels                      (B, L) long   -100 on padding (when the samples have labels)
    pixel_values_videos         (F, 4, S, S)  frames of the batch's visual samples, in sample order
    video_grid_thw              (V, 3) long   per visual sample (frames, S // patch, S // patch); frames sum to F
    teacher_pixel_values_videos (F, 4, St, St) with ``with_teacher=True``
    sample_keys                 list[str], one per visual sample, when the samples carry keys

A batch without any visual sample (text-only) has none of the frame keys
(``pixel_values_videos``, ``video_grid_thw``, ``teacher_pixel_values_videos``, ``sample_keys``):
the model then runs the LLM alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

if TYPE_CHECKING:
    from videopanda.data.processing_videopanda import EncodedSample

IGNORE_INDEX = -100  # label of positions that carry no loss


@dataclass(frozen=True)
class VideoPandaCollator:
    pad_token_id: int
    padding_side: Literal["right", "left"] = "right"
    with_teacher: bool = False  # also batch the teacher-scale frames (live distillation teacher)

    def __call__(self, samples: Sequence[EncodedSample]) -> dict[str, Tensor | list[str]]:
        if not samples:
            raise ValueError("cannot collate an empty batch")
        length = max(len(s.input_ids) for s in samples)
        batch: dict[str, Tensor | list[str]] = {
            "input_ids": self._stack([s.input_ids for s in samples], length, self.pad_token_id),
            "attention_mask": self._stack([torch.ones_like(s.input_ids) for s in samples], length, 0),
        }
        labels = [s.labels for s in samples if s.labels is not None]
        if len(labels) == len(samples):
            batch["labels"] = self._stack(labels, length, IGNORE_INDEX)
        visual = [s for s in samples if s.pixel_values_videos is not None]
        if visual:
            batch.update(self._frames(visual))
        return batch

    def _frames(self, visual: list[EncodedSample]) -> dict[str, Tensor | list[str]]:
        pixels = [s.pixel_values_videos for s in visual if s.pixel_values_videos is not None]
        grids = [s.video_grid_thw for s in visual if s.video_grid_thw is not None]
        if len(grids) != len(visual):
            raise ValueError("a sample with pixel_values_videos has no video_grid_thw")
        frames: dict[str, Tensor | list[str]] = {
            "pixel_values_videos": torch.cat(pixels),  # (F, 4, S, S)
            "video_grid_thw": torch.cat(grids),  # (V, 3)
        }
        if self.with_teacher:
            teacher = [s.teacher_pixel_values_videos for s in visual if s.teacher_pixel_values_videos is not None]
            if len(teacher) != len(visual):
                raise ValueError("with_teacher=True but a sample has no teacher_pixel_values_videos (dataset "
                                 "with_teacher)")
            frames["teacher_pixel_values_videos"] = torch.cat(teacher)  # (F, 4, St, St)
        keys = [s.sample_key for s in visual if s.sample_key is not None]
        if len(keys) == len(visual):
            frames["sample_keys"] = keys
        return frames

    def _stack(self, rows: list[Tensor], length: int, fill: int) -> Tensor:
        """rows of (L_i,) -> (B, length), padded on ``padding_side``."""
        out = rows[0].new_full((len(rows), length), fill)
        for i, row in enumerate(rows):
            if self.padding_side == "right":
                out[i, : len(row)] = row
            else:
                out[i, length - len(row) :] = row
        return out
