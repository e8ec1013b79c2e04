"""What a task's ``doc_to_visual`` returns -> one model input, as lmms-eval's video tasks hand it over.

- one video file path: the release's sampling (``predictor.load_video``);
- one directory of frame images (MVBench's ``episodic_reasoning`` as lmms-eval 0.7.3's YAML hands it
  over): its images in natural name order (2 before 10), as a list of frames;
- a list of frames (PIL images or (H, W, 3) uint8 arrays), any length (MVBench's frame-folder subtasks):
  sampled to the model's frame count by the release's rule (``data.sampling.sample_frame_indices``, each
  frame one step of 1 s: every frame up to the count, ``linspace`` over them beyond it), then padded to
  whole chunks like a decoded video;
- one image (PIL or array): a one-frame image input.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from videopanda.data.decode import read_image
from videopanda.data.sampling import sample_frame_indices
from videopanda.data.transform import VisualInputs
from videopanda.inference import VideoPandaPredictor

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def request_visuals(visuals: Sequence[Any] | None, predictor: VideoPandaPredictor) -> VisualInputs | None:
    """``doc_to_visual(doc)`` -> the model's input for one request (None: a text-only request)."""
    flat = _flatten(visuals)
    if not flat:
        return None
    if all(isinstance(v, str | Path) for v in flat):
        if len(flat) > 1:
            raise ValueError(f"videopanda takes one video per request, got {len(flat)} paths: {flat[:3]!r:.200}")
        if not Path(flat[0]).is_dir():
            return predictor.load_video(flat[0])
        flat = _frame_files(Path(flat[0]))
    frames = [_rgb_array(v) for v in flat]
    if len(frames) == 1:
        return predictor.preprocess_image(frames[0])
    wanted = sample_frame_indices(len(frames), fps=1.0, num_frames=predictor.num_frames)
    size = frames[0].shape[:2]
    return predictor.preprocess_video(np.stack([_resized(frames[i], size) for i in wanted]))  # (T, H, W, 3)


def _flatten(visuals: Sequence[Any] | None) -> list[Any]:
    if visuals is None:
        return []
    if isinstance(visuals, str | Path | np.ndarray) or hasattr(visuals, "convert"):
        return [visuals]
    return [v for item in visuals for v in (item if isinstance(item, list | tuple) else [item])]


def _frame_files(folder: Path) -> list[np.ndarray]:
    files = sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=_natural_key)
    if not files:
        raise ValueError(f"{folder}: a directory without frame images ({', '.join(IMAGE_SUFFIXES)})")
    return [read_image(p)[0] for p in files]


def _natural_key(path: Path) -> list[int | str]:
    """frame_2.jpg before frame_10.jpg."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def _rgb_array(visual: Any) -> np.ndarray:
    """A PIL image or an (H, W, 3) uint8 array -> (H, W, 3) uint8 RGB."""
    if hasattr(visual, "convert"):
        return np.asarray(visual.convert("RGB"))
    if isinstance(visual, np.ndarray) and visual.ndim == 3 and visual.shape[-1] == 3 and visual.dtype == np.uint8:
        return visual
    raise ValueError("videopanda takes a video file path, PIL images or (H, W, 3) uint8 arrays per request, got "
                     f"{type(visual).__name__} {getattr(visual, 'shape', '')}")


def _resized(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Frames of one clip share a size (the first frame's): a stray size is resized, not refused."""
    if frame.shape[:2] == size:
        return frame
    from PIL import Image

    return np.asarray(Image.fromarray(frame).resize((size[1], size[0]), Image.Resampling.BICUBIC))
