"""Batching encoded samples into the model's input contract (docs/architecture.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from videopanda.data.processing_videopanda import IGNORE_INDEX, EncodedSample


@dataclass
class VideoPandaCollator:
    """Pads ids/labels/attention masks and concatenates frames in placeholder order.

    Right padding for training, left padding for batched generation. A batch
    without any visual sample has no ``pixel_values`` key.
    """

    pad_token_id: int
    padding_side: Literal["right", "left"] = "right"
    with_teacher: bool = False

    def __call__(self, samples: list[EncodedSample]) -> dict[str, Tensor]:
        if not samples:
            raise ValueError("cannot collate an empty batch")
        length = max(len(s.input_ids) for s in samples)
        batch = {
            "input_ids": torch.stack([self._pad(s.input_ids, length, self.pad_token_id) for s in samples]),
            "labels": torch.stack([self._pad(s.labels, length, IGNORE_INDEX) for s in samples]),
            "attention_mask": torch.stack([self._pad(torch.ones_like(s.input_ids), length, 0) for s in samples]),
        }
        visual = [s for s in samples if s.pixel_values is not None]
        if visual:
            batch["pixel_values"] = torch.cat([s.pixel_values for s in visual])  # (F, 4, S, S)
            batch["chunk_lengths"] = torch.cat([s.chunk_lengths for s in visual])  # (C,)
            if self.with_teacher:
                batch["teacher_pixel_values"] = torch.cat([s.teacher_pixel_values for s in visual])
        return batch

    def _pad(self, values: Tensor, length: int, fill: int) -> Tensor:
        padding = values.new_full((length - len(values),), fill)
        return torch.cat([values, padding] if self.padding_side == "right" else [padding, values])
