"""The one place the vLLM plugin calls the processor's geometry (frames -> canvases, token counts, chunks).

Everything the plugin knows about frame geometry comes through ``video_geometry``, from our public
functions: ``preprocess_frames`` (resize, pad, mask; as ``VideoPandaPredictor.preprocess_video`` calls it)
and ``VideoPandaProcessor.frame_token_counts`` / ``chunk_lengths``. ``largest_video`` is the input of the
most visual tokens, which vLLM sizes its buffers by.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import Tensor

from videopanda.data.processing_videopanda import VideoPandaProcessor
from videopanda.data.transform import preprocess_frames


@dataclass(frozen=True)
class VideoGeometry:
    pixel_values: Tensor  # (F, 4, S, S) float32, padded with blank frames to the model's frames per video
    tokens_per_frame: Tensor  # (F,) long: each frame's visual tokens (placeholder positions)
    chunk_lengths: Tensor  # (C,) long


def video_geometry(processor: VideoPandaProcessor, frames: np.ndarray) -> VideoGeometry:
    """Sampled frames (T, H, W, 3) uint8 -> the model's video input, as ``videopanda ask`` builds it."""
    config = processor.config
    pixel_values = preprocess_frames(
        frames, image_size=config.image_size, teacher_image_size=config.teacher_image_size,
        patch_size=config.patch_size, num_frames=config.num_frames, with_teacher=False,
    ).pixel_values
    return VideoGeometry(pixel_values, processor.frame_token_counts(pixel_values),
                         processor.chunk_lengths(pixel_values.shape[0]))


def largest_video(processor: VideoPandaProcessor) -> np.ndarray:
    """(num_frames, S, S, 3) uint8: the model's frames per video, each filling the square canvas (no padding)."""
    config = processor.config
    return np.full((config.num_frames, config.image_size, config.image_size, 3), 128, np.uint8)
