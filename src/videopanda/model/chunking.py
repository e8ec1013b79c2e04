"""The release's chunking rule: which frames the STAB models together in time (docs/video_panda.md).

A video's frames form chunks of ``chunk_length`` consecutive frames; an image (a one-frame video)
is a chunk of its own. The model's inputs describe each video by its row of
``video_grid_thw (V, 3)``: ``(num_frames, S // patch_size, S // patch_size)``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def chunk_lengths(video_grid_thw: Tensor, chunk_length: int) -> Tensor:
    """video_grid_thw (V, 3) long -> (C,) long frames per chunk, videos in order (sum = total frames).

    One chunk of 1 for a one-frame video (an image); ``num_frames // chunk_length`` chunks of
    ``chunk_length`` for a video, whose frame count must be a multiple of ``chunk_length``.
    """
    if video_grid_thw.dim() != 2 or video_grid_thw.shape[1] != 3:
        raise ValueError(f"video_grid_thw must be (V, 3), got {tuple(video_grid_thw.shape)}")
    frames = video_grid_thw[:, 0].long()  # (V,)
    if bool((frames < 1).any()):
        raise ValueError(f"every video needs at least one frame, got {frames.tolist()}")
    is_image = frames == 1
    if bool((frames[~is_image] % chunk_length).any()):
        raise ValueError(f"frames per video {frames.tolist()} do not split into chunks of {chunk_length}")
    per_video = torch.where(is_image, 1, frames // chunk_length)  # (V,) chunks of each video
    sizes = torch.where(is_image, 1, chunk_length)  # (V,) their length
    return torch.repeat_interleave(sizes, per_video)


def video_grid_row(num_frames: int, frame_size: int, patch_size: int) -> Tensor:
    """(1, 3) long: one video's row ``(num_frames, frame_size // patch_size, frame_size // patch_size)``."""
    grid = frame_size // patch_size
    return torch.tensor([[num_frames, grid, grid]], dtype=torch.long)
