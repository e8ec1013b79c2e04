"""Writing real video files with PyAV (synthetic datasets, tests, benchmarks)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# Codec and pixel format per container: widely decodable, available in PyAV's wheels.
CONTAINER_CODECS: dict[str, tuple[str, str]] = {
    ".mp4": ("libx264", "yuv420p"),
    ".mkv": ("libx264", "yuv420p"),
    ".avi": ("mpeg4", "yuv420p"),
    ".webm": ("libvpx", "yuv420p"),
    ".gif": ("gif", "rgb8"),
    ".mov": ("libx264", "yuv420p"),
}


def write_video(path: str | Path, frames: np.ndarray, fps: float = 8.0) -> Path:
    """Encode ``frames`` (T, H, W, 3) uint8 RGB into ``path``; the suffix picks the container.

    Even H and W are required by the 4:2:0 codecs.
    """
    path = Path(path)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    codec, pix_fmt = CONTAINER_CODECS.get(path.suffix.lower(), (None, None))
    if codec is None:
        raise ValueError(f"unsupported video container {path.suffix!r} (known: {sorted(CONTAINER_CODECS)})")
    height, width = frames.shape[1:3]
    if pix_fmt == "yuv420p" and (height % 2 or width % 2):
        raise ValueError(f"{codec} needs even frame sizes, got {width}x{height}")
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps).limit_denominator(1000)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=rate)
        if not isinstance(stream, av.VideoStream):  # every codec in CONTAINER_CODECS is a video codec
            raise TypeError(f"{codec} did not open a video stream")
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if codec == "libx264":
            stream.options = {"preset": "ultrafast", "crf": "18"}
        elif codec in ("mpeg4", "libvpx"):
            stream.bit_rate = 8_000_000  # near-lossless at our small sizes
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
