"""Video loading throughput: seeking vs decoding every frame, and PyAV vs TorchCodec.

    python benchmarks/video_loading.py [--cache-dir DIR] [--repeats 5]

Writes (once, into the cache dir) a 3-minute 30 fps 640x360 H.264 mp4
(libx264 ultrafast, x264's default keyframe interval of 250 frames) showing a
camera panning over a textured scene, then times, in the same run,
``read_video_frames`` with keyframe seeking and with sequential decoding,
each alone and followed by ``preprocess_frames`` at 448 (student only), and
prints samples/second and the ratio. Then, when TorchCodec is installed, the
two decoding backends on that mp4, a 20-second GIF and a 30-second webm (the
same panning scene), 8 and 32 sampled frames, checking both give the same pixels.
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
import time
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import as_strided

from videopanda.data.decode import DecodeBackend, probe_video, read_video_frames
from videopanda.data.transform import preprocess_frames
from videopanda.data.video_writer import write_video

PAN_PIXELS_PER_FRAME = 2


def panning_frames(num_frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """(T, H, W, 3) uint8 read-only view of a camera panning right over a smooth random texture.

    Frame t is the window at column ``2t`` of one wide texture, so T frames cost
    one texture's memory (a 3-minute clip would otherwise need 3.7 GB).
    """
    rng = np.random.default_rng(seed)
    texture_width = width + PAN_PIXELS_PER_FRAME * num_frames
    cells = rng.integers(0, 256, (height // 8 + 1, texture_width // 8 + 1, 3), dtype=np.uint8)
    texture = np.kron(cells, np.ones((8, 8, 1), np.uint8))[:height, :texture_width]  # 8x8 blocks
    texture = np.ascontiguousarray(texture)
    row, col, channel = texture.strides
    return as_strided(texture, (num_frames, height, width, 3), (PAN_PIXELS_PER_FRAME * col, row, col, channel),
                      writeable=False)


def benchmark_video(cache_dir: Path, seconds: int = 180, fps: int = 30, height: int = 360, width: int = 640,
                    suffix: str = ".mp4") -> Path:
    path = cache_dir / f"pan_{seconds}s_{fps}fps_{width}x{height}{suffix}"
    if not path.exists():
        print(f"writing {path} ({seconds * fps} frames, once) ...", flush=True)
        partial = path.with_suffix(f".partial{suffix}")
        write_video(partial, panning_frames(seconds * fps, height, width), fps=fps)
        partial.rename(path)
    return path


def time_loading(path: Path, repeats: int, seek: bool, preprocess: bool) -> float:
    """Samples per second: read the 8 sampled frames (and preprocess them at 448) ``repeats`` times."""
    start = time.perf_counter()
    for _ in range(repeats):
        frames = read_video_frames(path, num_frames=8, seek=seek)  # (8, 360, 640, 3)
        if preprocess:
            preprocess_frames(frames, image_size=448, with_teacher=False)  # (8, 4, 448, 448)
    return repeats / (time.perf_counter() - start)


def time_backend(path: Path, repeats: int, num_frames: int, backend: DecodeBackend) -> float:
    """Samples per second of ``read_video_frames`` with ``backend``."""
    start = time.perf_counter()
    for _ in range(repeats):
        read_video_frames(path, num_frames=num_frames, backend=backend)
    return repeats / (time.perf_counter() - start)


def compare_backends(paths: list[Path], repeats: int) -> None:
    for path in paths:
        for num_frames in (8, 32):
            pyav = read_video_frames(path, num_frames=num_frames, backend="pyav")
            same = np.array_equal(pyav, read_video_frames(path, num_frames=num_frames, backend="torchcodec"))
            rates = {b: time_backend(path, repeats, num_frames, b) for b in ("pyav", "torchcodec")}
            print(f"{path.suffix[1:]:5s} {num_frames:2d} frames  PyAV {rates['pyav']:7.2f} samples/s   TorchCodec "
                  f"{rates['torchcodec']:7.2f} samples/s   TorchCodec/PyAV {rates['torchcodec'] / rates['pyav']:5.2f}x"
                  f"   same pixels: {same}", flush=True)
            assert same, f"{path}: the two backends decode different pixels"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "videopanda_bench")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-seeking", action="store_true", help="only the PyAV vs TorchCodec comparison")
    args = parser.parse_args()
    path = benchmark_video(args.cache_dir)
    info = probe_video(path)
    print(f"{path.name}: {info.frame_count} frames at {info.fps:g} fps, {path.stat().st_size / 1e6:.1f} MB")
    others = [benchmark_video(args.cache_dir, seconds=20, fps=10, suffix=".gif"),
              benchmark_video(args.cache_dir, seconds=30, suffix=".webm")]
    if importlib.util.find_spec("torchcodec") is None:
        print("TorchCodec is not installed: no backend comparison (pip install 'videopanda[torchcodec]')")
    else:
        compare_backends([path, *others], args.repeats)
    if args.skip_seeking:
        return
    np.testing.assert_array_equal(read_video_frames(path, seek=True), read_video_frames(path, seek=False))
    for preprocess in (False, True):
        label = "decode + preprocess at 448" if preprocess else "decode only"
        seeking = time_loading(path, args.repeats, seek=True, preprocess=preprocess)
        sequential = time_loading(path, args.repeats, seek=False, preprocess=preprocess)
        print(f"{label:28s} seeking {seeking:7.2f} samples/s   every frame {sequential:7.2f} samples/s"
              f"   ratio {seeking / sequential:5.1f}x")


if __name__ == "__main__":
    main()
