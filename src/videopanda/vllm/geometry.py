"""The one place the vLLM plugin calls the processor's geometry (frames -> canvases, token counts, chunks).

Everything the plugin knows about frame geometry comes through ``video_geometry``, from the model's
video processor (``VideoPandaVideoProcessor``: canvases, per-frame token counts, grid rows, as
``videopanda ask`` builds them) and the model's chunking rule (``model.chunking``). ``largest_video`` is
the input of the most visual tokens, which vLLM sizes its buffers by.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import Tensor

from videopanda.data.processing_videopanda import VideoPandaProcessor
from videopanda.model.chunking import chunk_lengths


@dataclass(frozen=True)
class VideoGeometry:
    pixel_values: Tensor  # (F, 4, S, S) float32, padded with blank frames to the model's frames per video
    tokens_per_frame: Tensor  # (F,) long: each frame's visual tokens (placeholder positions)
    chunk_lengths: Tensor  # (C,) long


def video_geometry(processor: VideoPandaProcessor, frames: np.ndarray) -> VideoGeometry:
    """Sampled frames (T, H, W, 3) uint8 -> the model's video input, as ``videopanda ask`` builds it."""
    video = processor.video_processor
    pixel_values = video.preprocess_video(frames).pixel_values  # (F, 4, S, S)
    grid = video.grid_thw(pixel_values.shape[0])[None]  # (1, 3)
    return VideoGeometry(pixel_values, video.frame_token_counts(pixel_values), chunk_lengths(grid, video.chunk_length))


def largest_video(processor: VideoPandaProcessor) -> np.ndarray:
    """(num_frames, S, S, 3) uint8: the model's frames per video, each filling the square canvas (no padding)."""
    video = processor.video_processor
    return np.full((video.num_frames, video.image_size, video.image_size, 3), 128, np.uint8)
