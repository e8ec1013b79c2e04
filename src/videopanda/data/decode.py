"""Decoding only the sampled frames of a video with PyAV or TorchCodec; reading images with Pillow.

Long videos (ActivityNet runs for minutes) are read by seeking to the
keyframe before each wanted frame and decoding forward to it, instead of
decoding every frame. Streams where that is unreliable (GIF, no timestamps,
a seek that lands past its target) are decoded sequentially up to the last
wanted frame. Containers that do not store a frame count (mkv, webm) have
their packets counted by demuxing, without decoding.

Both backends decode the same frame indices (chosen from PyAV's probe) with
FFmpeg's RGB conversion; ``backend="torchcodec"`` needs the optional
``torchcodec`` extra and FFmpeg's shared libraries.

Every failure on a bad file (missing, empty, corrupt, truncated, no video
stream) is a ``VideoDecodeError`` whose message starts with the path.
"""

from __future__ import annotations

import logging
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import av
import numpy as np
from PIL import Image

from videopanda.data.sampling import sample_frame_indices
from videopanda.paths import media_path

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif")
# Below this many frames between wanted frames, decoding forward beats a seek.
SEEK_GAP_FRAMES = 48
# Containers may over-report their frame count by a frame or two; more than
# this many missing frames at the end (or 2% of the video) means truncation.
MISSING_TAIL_FRAMES = 2
MISSING_TAIL_SHARE = 0.02

_DECODE_ERRORS = (av.FFmpegError, OSError, ValueError)
DecodeBackend = Literal["pyav", "torchcodec"]
DECODE_BACKENDS: tuple[DecodeBackend, ...] = ("pyav", "torchcodec")


class VideoDecodeError(ValueError):
    """A missing, empty, corrupt or unreadable video or image; the message starts with the path."""


@dataclass(frozen=True)
class VideoInfo:
    frame_count: int
    fps: float  # average frame rate; 0.0 when the container does not say


def find_video_file(video_dir: str | Path, name: str) -> Path | None:
    """The one lookup rule for benchmark videos: ``<name>.<ext>`` (mp4 avi mov mkv webm gif),
    also with ActivityNet's ``v_`` prefix; ``name`` may already carry its extension. A name that
    leaves ``video_dir`` (absolute, ``..``) is a ``ValueError``."""
    video_dir = Path(video_dir)
    named = media_path(video_dir, name)
    if named.suffix.lower() in VIDEO_EXTENSIONS and named.is_file():
        return named
    for stem in (name, f"v_{name}"):
        for ext in VIDEO_EXTENSIONS:
            if (candidate := video_dir / f"{stem}{ext}").is_file():
                return candidate
    return None


def probe_video(path: str | Path) -> VideoInfo:
    """Frame count and average fps (frames counted by demuxing when the container doesn't say)."""
    path = Path(path)
    with closing(_open(path)) as container:
        return _probe(container, path)


def read_video_frames(
    path: str | Path, num_frames: int = 8, clip: tuple[float, float] | None = None, *, seek: bool = True,
    backend: DecodeBackend = "pyav",
) -> np.ndarray:
    """The release's sampled frames of ``path`` (spec 1): (T <= num_frames, H, W, 3) uint8 RGB.

    ``clip`` is (start, end) in seconds. ``seek=False`` decodes every frame up
    to the last wanted one (the reference the seeking path is tested and
    benchmarked against; PyAV only). Raises ``VideoDecodeError`` for bad files.
    """
    if backend not in DECODE_BACKENDS:
        raise ValueError(f"unknown video decoding backend {backend!r}: choose one of {', '.join(DECODE_BACKENDS)}")
    path = Path(path)
    with closing(_open(path)) as container:
        info = _probe(container, path)
        wanted = sample_frame_indices(info.frame_count, info.fps, num_frames, clip)
        if backend == "torchcodec":
            return _assemble(_decode_torchcodec(path, wanted), wanted, info.frame_count, path)
        try:
            seeking = seek and _should_seek(container, wanted, info)
            decoded = _decode_seeking(container, wanted, info.fps) if seeking else None
            if decoded is None:  # not worth seeking, or seeking was unreliable: decode from the start
                decoded = _decode_sequential(container, wanted)
        except _DECODE_ERRORS as err:
            raise VideoDecodeError(f"{path}: decoding failed ({err})") from err
    return _assemble(decoded, wanted, info.frame_count, path)


def read_image(path: str | Path) -> np.ndarray:
    """An image file as (1, H, W, 3) uint8 RGB (Pillow, as the release reads images)."""
    path = Path(path)
    _check_file(path)
    try:
        with Image.open(path) as image:
            return np.array(image.convert("RGB"))[None]  # (1, H, W, 3)
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise VideoDecodeError(f"{path}: unreadable image ({err})") from err


@dataclass
class _Decoded:
    frames: dict[int, np.ndarray]  # frame index -> (H, W, 3) uint8
    last_index: int  # index of the last frame the stream gave (-1: none)


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise VideoDecodeError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise VideoDecodeError(f"{path}: empty file")


def _open(path: Path) -> av.container.InputContainer:
    _check_file(path)
    try:
        container = av.open(str(path))
    except _DECODE_ERRORS as err:
        raise VideoDecodeError(f"{path}: cannot open ({err})") from err
    if not container.streams.video:
        container.close()
        raise VideoDecodeError(f"{path}: no video stream")
    return container


def _probe(container: av.container.InputContainer, path: Path) -> VideoInfo:
    stream = container.streams.video[0]
    fps = float(stream.average_rate or stream.guessed_rate or 0.0)
    frame_count = stream.frames or _count_packets(path, fps, container.duration)
    return VideoInfo(frame_count=frame_count, fps=fps)


def _count_packets(path: Path, fps: float, duration_us: int | None) -> int:
    """Frames of a container without a frame count (mkv, webm), by demuxing alone.

    Its header still states the full duration when the file was cut short:
    fewer packets than that duration holds means a truncated file.
    """
    try:
        with av.open(str(path)) as container:
            count = sum(1 for packet in container.demux(video=0) if packet.size > 0)
    except _DECODE_ERRORS as err:
        raise VideoDecodeError(f"{path}: unreadable stream ({err})") from err
    if count == 0:
        raise VideoDecodeError(f"{path}: no frames")
    expected = round(duration_us / 1e6 * fps) if duration_us and fps > 0 else 0
    if expected - count > _tail_tolerance(expected):
        raise VideoDecodeError(f"{path}: truncated ({count} frames of the {expected} its header announces)")
    return count


def _should_seek(container: av.container.InputContainer, wanted: list[int], info: VideoInfo) -> bool:
    stream = container.streams.video[0]
    if info.fps <= 0 or stream.time_base is None or stream.codec_context.name == "gif":
        return False
    return int(np.diff([0, *wanted]).max(initial=0)) > SEEK_GAP_FRAMES


def _decode_sequential(container: av.container.InputContainer, wanted: list[int]) -> _Decoded:
    remaining, frames, index = set(wanted), {}, -1
    for index, frame in enumerate(container.decode(video=0)):
        if index in remaining:
            frames[index] = frame.to_ndarray(format="rgb24")
            remaining.discard(index)
            if not remaining:
                break
    return _Decoded(frames, index)


def _decode_seeking(container: av.container.InputContainer, wanted: list[int], fps: float) -> _Decoded | None:
    """Keyframe seek before each far-away wanted frame, decode forward to its timestamp.

    Returns None, rewound to the start, when a seek lands past its target
    (unreliable index): the caller then decodes sequentially.
    """
    stream = container.streams.video[0]
    if stream.time_base is None:  # no timestamps to seek by
        return None
    seconds_per_tick, start = float(stream.time_base), stream.start_time or 0
    frames: dict[int, np.ndarray] = {}
    decoder, index_now = None, -1
    for target in wanted:
        seeked = decoder is None or target - index_now > SEEK_GAP_FRAMES
        if seeked or decoder is None:  # the first target always seeks
            container.seek(start + int(target / fps / seconds_per_tick), stream=stream, backward=True)
            decoder = container.decode(stream)
        for frame in decoder:
            index_now = round((frame.pts - start) * seconds_per_tick * fps) if frame.pts is not None else index_now + 1
            if seeked and index_now > target:
                logger.debug("seek to frame %d landed at %d: decoding sequentially", target, index_now)
                container.seek(0)
                return None
            seeked = False
            if index_now >= target:
                frames[target] = frame.to_ndarray(format="rgb24")
                break
        else:
            break  # the stream ended before ``target``
    return _Decoded(frames, index_now)


def _decode_torchcodec(path: Path, wanted: list[int]) -> _Decoded:
    """The wanted frames by TorchCodec's exact (index-scanned) seeking."""
    from torchcodec.decoders import VideoDecoder  # optional extra: imported only when chosen

    try:
        decoder = VideoDecoder(str(path), seek_mode="exact", dimension_order="NHWC")
        num_frames = decoder.metadata.num_frames
        if num_frames is None:  # exact mode scans the file: no count means an unreadable stream
            raise ValueError("no frame count")
        available = sorted({i for i in wanted if i < num_frames})
        frames: np.ndarray | list[np.ndarray] = (
            decoder.get_frames_at(available).data.numpy() if available else []  # (T, H, W, 3) uint8
        )
    except (RuntimeError, ValueError, IndexError) as err:
        raise VideoDecodeError(f"{path}: decoding failed ({err})") from err
    return _Decoded(dict(zip(available, frames, strict=True)), num_frames - 1)


def _assemble(decoded: _Decoded, wanted: list[int], frame_count: int, path: Path) -> np.ndarray:
    """Stack the wanted frames; a slightly over-reported frame count repeats the last frame."""
    missing = frame_count - 1 - decoded.last_index
    if not decoded.frames or (len(decoded.frames) < len(wanted) and missing > _tail_tolerance(frame_count)):
        raise VideoDecodeError(
            f"{path}: truncated or corrupt (stream ends after {decoded.last_index + 1} of {frame_count} frames)"
        )
    result, last = [], None
    for index in wanted:
        last = decoded.frames.get(index, last)
        if last is not None:
            result.append(last)
    return np.stack(result)  # (T, H, W, 3)


def _tail_tolerance(frame_count: int) -> int:
    """Frames a stream may lack at its end before it counts as truncated."""
    return max(MISSING_TAIL_FRAMES, int(frame_count * MISSING_TAIL_SHARE))
