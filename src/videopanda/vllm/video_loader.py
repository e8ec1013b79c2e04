"""The ``videopanda`` video loader: the release's frame sampling, the frames ``videopanda ask`` decodes.

vLLM hands a loader the video's bytes (a ``file://`` URL read, or a ``data:`` URL decoded); they are
written to a temporary file and read by ``read_video_frames`` (PyAV, 1 frame per second, at most
``num_frames``), so vLLM sees the very frames our own inference sees.
"""

from __future__ import annotations

import tempfile
from typing import Any

import numpy as np
from vllm.multimodal.video import VIDEO_LOADER_REGISTRY, VideoLoader

from videopanda.data.decode import read_video_frames
from videopanda.vllm import VIDEO_LOADER


@VIDEO_LOADER_REGISTRY.register(VIDEO_LOADER)
class VideoPandaVideoLoader(VideoLoader):
    @classmethod
    def load_bytes(cls, data: bytes, num_frames: int = 8, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        """Video bytes -> the release's sampled frames (T <= num_frames, H, W, 3) uint8, and vLLM's metadata."""
        if num_frames <= 0:
            raise ValueError(f"the videopanda loader samples a fixed number of frames, got num_frames={num_frames}")
        with tempfile.NamedTemporaryFile(suffix=".video") as file:
            file.write(data)
            file.flush()
            frames = read_video_frames(file.name, num_frames=num_frames)
        return frames, {"total_num_frames": len(frames), "fps": 1.0, "duration": float(len(frames)),
                        "video_backend": VIDEO_LOADER, "frames_indices": list(range(len(frames))),
                        "do_sample_frames": False}
