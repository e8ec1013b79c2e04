"""VideoPandaProcessor: conversation text + preprocessed frames -> model inputs.

``<video>`` in a user turn becomes ``num_frames`` ``<image>`` placeholders moved
to the front of that turn (``"<image>"*8 + "\\n" + text``), ``<image>`` one
placeholder. After tokenisation each placeholder token is repeated to its
frame's exact token count (``1 + h*(w+1)`` from the STAB's crop rule), so
lengths are known before truncation and batching.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from videopanda.data.conversation import Segment, TemplateName, Turn, render
from videopanda.data.transform import VisualInputs
from videopanda.model.configuration_videopanda import IMAGE_TOKEN, VideoPandaConfig
from videopanda.model.stab import frame_grid_hw, tokens_per_frame

VIDEO_TAG = "<video>"
IGNORE_INDEX = -100


class VisualTokensTruncated(ValueError):
    """A sample whose visual tokens would be cut by the maximum length (skipped, never truncated)."""


@dataclass
class EncodedSample:
    input_ids: Tensor  # (L,)
    labels: Tensor  # (L,)
    pixel_values: Tensor | None  # (F, 4, S, S)
    chunk_lengths: Tensor | None  # (C,)
    teacher_pixel_values: Tensor | None = None  # (F, 4, St, St)
    num_real_frames: int = 0


class VideoPandaProcessor:
    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        config: VideoPandaConfig,
        template: TemplateName = "vicuna_v1",
        system: str | None = None,
        max_length: int = 4096,
    ) -> None:
        self.tokenizer = tokenizer
        self.config = config
        self.template = template
        self.system = system
        self.max_length = max_length
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        if self.image_token_id != config.image_token_id:
            raise ValueError(
                f"tokenizer's {IMAGE_TOKEN} id {self.image_token_id} differs from config.image_token_id "
                f"{config.image_token_id}"
            )

    def encode(self, turns: list[Turn], visual: VisualInputs | None, is_video: bool = True) -> EncodedSample:
        """A training sample: labels only on assistant replies and their end-of-turn markers."""
        turns = self._place_visual_tags(turns, visual, is_video)
        segments = render(self.template, turns, self.tokenizer, self.system)
        return self._tokenize(segments, visual, is_video, truncate=True)

    def encode_prompt(
        self, turns: list[Turn], visual: VisualInputs | None, is_video: bool = True
    ) -> EncodedSample:
        """A generation prompt ending where the assistant's reply begins (labels all ignored)."""
        turns = self._place_visual_tags(turns, visual, is_video)
        segments = render(self.template, turns, self.tokenizer, self.system, add_generation_prompt=True)
        return self._tokenize([Segment(s.text, False) for s in segments], visual, is_video, truncate=False)

    def frame_token_counts(self, pixel_values: Tensor) -> Tensor:
        """(F,) visual tokens per frame, by the STAB's own crop rule."""
        patch_mask = F.avg_pool2d(pixel_values[:, 3:4], self.config.patch_size)[:, 0]
        return tokens_per_frame(frame_grid_hw(patch_mask, self.config.lsd_stride, self.config.max_crop_patches))

    def _place_visual_tags(self, turns: list[Turn], visual: VisualInputs | None, is_video: bool) -> list[Turn]:
        """Move the visual tag of the first user turn to its front as per-frame placeholders."""
        if visual is None:
            return [Turn(t.role, t.text.replace(VIDEO_TAG, "").replace(IMAGE_TOKEN, "").strip()) for t in turns]
        count = visual.pixel_values.shape[0] if is_video else 1
        placeholders = IMAGE_TOKEN * count + "\n"
        first = turns[0]
        text = first.text.replace(VIDEO_TAG, "").replace(IMAGE_TOKEN, "").strip()
        rest = [Turn(t.role, t.text.replace(VIDEO_TAG, "").replace(IMAGE_TOKEN, "")) for t in turns[1:]]
        return [Turn(first.role, placeholders + text), *rest]

    def _tokenize(
        self, segments: list[Segment], visual: VisualInputs | None, is_video: bool, truncate: bool
    ) -> EncodedSample:
        ids: list[int] = []
        learned: list[bool] = []
        if getattr(self.tokenizer, "add_bos_token", False) and self.tokenizer.bos_token_id is not None:
            ids, learned = [self.tokenizer.bos_token_id], [False]
        for segment in segments:
            piece = self.tokenizer(segment.text, add_special_tokens=False).input_ids
            ids += piece
            learned += [segment.learned] * len(piece)
        input_ids = torch.tensor(ids)
        labels = torch.where(torch.tensor(learned, dtype=torch.bool), input_ids, IGNORE_INDEX)
        pixel_values = chunk_lengths = teacher = None
        if visual is not None:
            pixel_values, teacher = visual.pixel_values, visual.teacher_pixel_values
            counts = self.frame_token_counts(pixel_values)
            input_ids, labels = self._expand_placeholders(input_ids, labels, counts)
            length = self.config.chunk_length if is_video else 1
            chunk_lengths = torch.full((pixel_values.shape[0] // length,), length)
        if truncate:
            input_ids, labels = self._truncate(input_ids, labels)
        return EncodedSample(
            input_ids, labels, pixel_values, chunk_lengths, teacher, 0 if visual is None else visual.num_real_frames
        )

    def _expand_placeholders(self, input_ids: Tensor, labels: Tensor, counts: Tensor) -> tuple[Tensor, Tensor]:
        is_placeholder = input_ids == self.image_token_id
        if int(is_placeholder.sum()) != len(counts):
            raise ValueError(f"prompt has {int(is_placeholder.sum())} {IMAGE_TOKEN} tags for {len(counts)} frames")
        repeats = torch.ones_like(input_ids)
        repeats[is_placeholder] = counts
        labels = labels.masked_fill(is_placeholder, IGNORE_INDEX)
        return input_ids.repeat_interleave(repeats), labels.repeat_interleave(repeats)

    def _truncate(self, input_ids: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        if len(input_ids) <= self.max_length:
            return input_ids, labels
        visual_positions = (input_ids == self.image_token_id).nonzero()
        if len(visual_positions) and int(visual_positions.max()) >= self.max_length:
            raise VisualTokensTruncated(
                f"{len(input_ids)} tokens with visual tokens up to position {int(visual_positions.max())} "
                f"exceed max_length={self.max_length}"
            )
        return input_ids[: self.max_length], labels[: self.max_length]
