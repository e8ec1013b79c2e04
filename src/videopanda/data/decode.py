"""Decoding only the sampled frames of a video with PyAV.

Long videos (ActivityNet runs for minutes) are read by seeking to the
keyframe before each wanted frame and decoding forward to it, instead of
decoding every frame; short ones and streams without reliable timestamps
(GIF) are decoded sequentially up to the last wanted frame.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from videopanda.data.sampling import sample_frame_indices

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif")
# Below this many frames between wanted frames, decoding forward beats a seek.
SEEK_GAP_FRAMES = 48


class VideoDecodeError(ValueError):
    """A missing, empty, corrupt or unreadable video; the message names the path."""


@dataclass(frozen=True)
class VideoInfo:
    frame_count: int
    fps: float


def find_video_file(video_dir: str | Path, name: str) -> Path | None:
    """``<name>.<ext>`` for the benchmarks' extensions, also with ActivityNet's ``v_`` prefix."""
    video_dir = Path(video_dir)
    if Path(name).suffix.lower() in VIDEO_EXTENSIONS and (video_dir / name).is_file():
        return video_dir / name
    for stem in (name, f"v_{name}"):
        for ext in VIDEO_EXTENSIONS:
            if (candidate := video_dir / f"{stem}{ext}").is_file():
                return candidate
    return None


def probe_video(path: str | Path) -> VideoInfo:
    """Frame count and average fps (frames counted by demuxing when the container doesn't say)."""
    with _open(path) as container:
        return _probe(container, Path(path))


def read_video_frames(path: str | Path, num_frames: int = 8, clip: tuple[float, float] | None = None) -> np.ndarray:
    """The release's sampled frames of ``path``: (T <= num_frames, H, W, 3) uint8 RGB."""
    path = Path(path)
    with _open(path) as container:
        info = _probe(container, path)
        wanted = sample_frame_indices(info.frame_count, info.fps, num_frames, clip)
        try:
            frames = _decode_frames(container, wanted, info)
        except (av.FFmpegError, OSError, ValueError) as err:
            raise VideoDecodeError(f"{path}: decoding failed ({err})") from err
    if not frames:
        raise VideoDecodeError(f"{path}: no decodable frames")
    return np.stack(frames)


def read_image(path: str | Path) -> np.ndarray:
    """An image file as (1, H, W, 3) uint8 RGB."""
    with _open(path) as container:
        try:
            frame = next(container.decode(video=0))
        except (StopIteration, av.FFmpegError) as err:
            raise VideoDecodeError(f"{path}: unreadable image ({err})") from err
    return frame.to_ndarray(format="rgb24")[None]


def _open(path: str | Path):
    path = Path(path)
    if not path.is_file():
        raise VideoDecodeError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise VideoDecodeError(f"{path}: empty file")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as err:
        raise VideoDecodeError(f"{path}: cannot open ({err})") from err
    if not container.streams.video:
        container.close()
        raise VideoDecodeError(f"{path}: no video stream")
    return container


def _probe(container, path: Path) -> VideoInfo:
    stream = container.streams.video[0]
    fps = float(stream.average_rate or stream.guessed_rate or 0.0)
    frame_count = stream.frames
    if frame_count <= 0:  # mkv/webm do not store it: count packets without decoding
        try:
            frame_count = sum(1 for p in container.demux(stream) if p.size > 0)
        except av.FFmpegError as err:
            raise VideoDecodeError(f"{path}: unreadable stream ({err})") from err
        container.seek(0)
    if frame_count <= 0:
        raise VideoDecodeError(f"{path}: no frames")
    return VideoInfo(frame_count=frame_count, fps=fps)


def _decode_frames(container, wanted: list[int], info: VideoInfo) -> list[np.ndarray]:
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    seekable = info.fps > 0 and stream.time_base is not None and stream.codec_context.name != "gif"
    gaps = np.diff([0, *wanted])
    if seekable and gaps.max(initial=0) > SEEK_GAP_FRAMES:
        return _decode_seeking(container, stream, wanted, info.fps)
    return _decode_sequential(container, stream, wanted)


def _decode_sequential(container, stream, wanted: list[int]) -> list[np.ndarray]:
    remaining, frames = set(wanted), {}
    for index, frame in enumerate(container.decode(stream)):
        if index in remaining:
            frames[index] = frame.to_ndarray(format="rgb24")
            remaining.discard(index)
            if not remaining:
                break
    # Containers can over-report frame counts: repeat the last decoded frame for the tail.
    last = None
    result = []
    for index in wanted:
        last = frames.get(index, last)
        if last is not None:
            result.append(last)
    return result


def _decode_seeking(container, stream, wanted: list[int], fps: float) -> list[np.ndarray]:
    time_base = float(stream.time_base)
    start = stream.start_time or 0
    result: list[np.ndarray] = []
    frames = None
    position = -(10**9)
    for index in wanted:
        if frames is None or index - position > SEEK_GAP_FRAMES:
            container.seek(start + int(index / fps / time_base), stream=stream, backward=True, any_frame=False)
            frames = container.decode(stream)
        for frame in frames:
            position = int(round((frame.pts - start) * time_base * fps)) if frame.pts is not None else position + 1
            if position >= index:
                result.append(frame.to_ndarray(format="rgb24"))
                break
        else:
            break  # stream ended early
    return result
