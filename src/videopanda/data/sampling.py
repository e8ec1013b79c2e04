"""The release's frame sampling (spec section 1): 1 frame per second, at most ``num_frames``."""

from __future__ import annotations

import numpy as np


def sample_frame_indices(
    frame_count: int, fps: float, num_frames: int = 8, clip: tuple[float, float] | None = None
) -> list[int]:
    """Frame indices to decode, in order; at most ``num_frames`` of them.

    ``clip`` (start, end) in seconds restricts the range first. A one-frame
    video gives that frame, and an fps that rounds to 0 (some GIFs) samples
    every frame: two cases that crash the release.
    """
    if frame_count <= 0:
        raise ValueError(f"a video needs at least one frame, got frame_count={frame_count}")
    first, last = 0, frame_count - 1
    if clip is not None:
        first = min(last, max(0, int(round(clip[0] * fps))))
        last = max(first, min(last, int(round(clip[1] * fps))))
    step = max(1, int(round(fps)))
    positions = list(range(first, last + 1, step))
    if len(positions) > num_frames:
        return [positions[i] for i in np.linspace(0, len(positions) - 1, num_frames).astype(int)]
    if len(positions) < num_frames:
        count = min(num_frames, last - first + 1)
        stride = max(1, (last - first) // (count - 1)) if count > 1 else 1
        return [first + i * stride for i in range(count)]
    return positions
