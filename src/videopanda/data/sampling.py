"""The release's frame sampling (spec section 1): 1 frame per second, at most ``num_frames``."""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)


def sample_frame_indices(
    frame_count: int, fps: float, num_frames: int = 8, clip: tuple[float, float] | None = None
) -> list[int]:
    """Frame indices to decode, increasing; at most ``num_frames`` of them.

    1. ``clip`` (start, end) in seconds restricts [first, last] first.
    2. Positions ``first, first + round(fps), ...`` up to ``last`` (1 per second).
    3. More than ``num_frames`` positions: ``linspace(0, n-1, num_frames).astype(int)`` of them.
       Fewer: ``m = min(num_frames, last-first+1)`` indices with stride
       ``max(1, (last-first) // (m-1))`` from ``first``.

    Two cases that crash the release don't crash here: a one-frame range gives
    that frame, and an fps that rounds to 0 (some GIFs) uses a stride of 1.
    """
    if frame_count <= 0:
        raise ValueError(f"a video needs at least one frame, got frame_count={frame_count}")
    if num_frames <= 0:
        raise ValueError(f"num_frames must be positive, got {num_frames}")
    first, last = _frame_range(frame_count, fps, clip)
    positions = list(range(first, last + 1, max(1, round(fps))))
    if len(positions) > num_frames:
        return [positions[i] for i in np.linspace(0, len(positions) - 1, num_frames).astype(int)]
    if len(positions) == num_frames:
        return positions
    count = min(num_frames, last - first + 1)
    if count == 1:
        return [first]
    stride = max(1, (last - first) // (count - 1))
    return [first + i * stride for i in range(count)]


def _frame_range(frame_count: int, fps: float, clip: tuple[float, float] | None) -> tuple[int, int]:
    """[first, last] frame indices, restricted to ``clip`` seconds when given (and fps is known)."""
    first, last = 0, frame_count - 1
    if clip is None:
        return first, last
    if fps <= 0:
        logger.warning("clip %s ignored: the stream reports no frame rate", clip)
        return first, last
    first = min(last, max(0, round(clip[0] * fps)))
    last = max(first, min(last, round(clip[1] * fps)))
    return first, last
