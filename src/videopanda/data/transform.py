"""Any-pixel preprocessing (spec section 1): resize, centred padding, validity mask, CLIP norm.

Geometry is computed at teacher scale (long side 224, short side a whole
number of 14-pixel patches, padding centred on whole patches) and doubled
for the student (448), so every padding boundary falls on whole LSD windows.
Each frame becomes a ``(4, S, S)`` tensor: normalised RGB + validity mask.

Resizing is bicubic with antialiasing, on all frames at once: the release
resizes with PIL's bicubic filter, which torch's antialiased bicubic
reproduces (PIL filters over the whole source footprint when downscaling;
plain bicubic interpolation would alias on large reductions such as
1920 -> 448). It runs on uint8, as PIL does, and is normalised afterwards.

Shapes: T frames, H x W source size, S = image_size, St = teacher_image_size.
"""

from __future__ import annotations

import math
from dataclasses import astuple, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class CanvasGeometry:
    """Where the resized image sits on a square canvas of side ``size`` (pixels)."""

    size: int
    height: int
    width: int
    top: int
    left: int


@dataclass
class VisualInputs:
    pixel_values: Tensor  # (N, 4, S, S): N = num_frames for a video, 1 for an image
    teacher_pixel_values: Tensor | None  # (N, 4, St, St)
    num_real_frames: int


def teacher_geometry(height: int, width: int, teacher_size: int = 224, patch_size: int = 14) -> CanvasGeometry:
    """Spec 1: long side -> teacher_size, short side -> whole patches, padding centred on patches."""
    if height <= 0 or width <= 0:
        raise ValueError(f"frame size must be positive, got {height}x{width}")
    grid = teacher_size // patch_size
    long_side, short_side = max(height, width), min(height, width)
    short_resized = math.ceil(teacher_size * short_side / long_side / patch_size) * patch_size
    before = ((grid - short_resized // patch_size) // 2) * patch_size
    if height >= width:
        return CanvasGeometry(teacher_size, teacher_size, short_resized, 0, before)
    return CanvasGeometry(teacher_size, short_resized, teacher_size, before, 0)


def scaled(geometry: CanvasGeometry, factor: int) -> CanvasGeometry:
    """The same layout ``factor`` times larger (teacher -> student scale)."""
    return CanvasGeometry(*(factor * v for v in astuple(geometry)))


def to_canvas(
    frames: Tensor, geometry: CanvasGeometry, mean: tuple[float, ...] = CLIP_MEAN, std: tuple[float, ...] = CLIP_STD,
    scale: float = 1 / 255, normalize: bool = True,
) -> Tensor:
    """frames (T, 3, H, W) uint8 -> (T, 4, S, S) float32: RGB ``(x * scale - mean) / std`` + validity mask.

    Padding pixels take the mean colour, ``int(255 * mean)`` per channel: they normalise to about 0.
    ``normalize=False``: ``x * scale`` alone.
    """
    # uint8 in, uint8 out: torch's integer path rounds each pass like PIL (within one level)
    # and, on channels-last frames, runs about 15x faster than the float path.
    resized = F.interpolate(frames, size=(geometry.height, geometry.width), mode="bicubic", antialias=True)
    rows = slice(geometry.top, geometry.top + geometry.height)
    cols = slice(geometry.left, geometry.left + geometry.width)
    canvas = torch.empty(frames.shape[0], 4, geometry.size, geometry.size)  # (T, 4, S, S)
    rgb, mask = canvas[:, :3], canvas[:, 3]
    pad_colour = torch.tensor([int(255 * m) for m in mean], dtype=torch.uint8)
    rgb.copy_(pad_colour.view(1, 3, 1, 1).expand_as(rgb))
    rgb[:, :, rows, cols] = resized
    mean_ = torch.tensor(mean if normalize else (0.0,) * 3).view(1, 3, 1, 1)
    std_ = torch.tensor(std if normalize else (1.0,) * 3).view(1, 3, 1, 1)
    divisor = 255 * std_ if scale == 1 / 255 else std_ / scale  # the release's exact arithmetic at 1/255
    rgb.mul_(1 / divisor).sub_(mean_ / std_)  # (x * scale - mean) / std
    mask.zero_()
    mask[:, rows, cols] = 1
    return canvas


def preprocess_frames(
    frames: np.ndarray,
    *,
    image_size: int = 448,
    teacher_image_size: int = 224,
    patch_size: int = 14,
    num_frames: int | None = 8,
    train: bool = False,
    generator: torch.Generator | None = None,
    with_teacher: bool = True,
    mean: tuple[float, ...] = CLIP_MEAN,
    std: tuple[float, ...] = CLIP_STD,
    scale: float = 1 / 255,
    normalize: bool = True,
) -> VisualInputs:
    """frames (T, H, W, 3) uint8 -> VisualInputs, padded with all-zero frames to ``num_frames``.

    ``patch_size`` is the teacher-scale unit that sizes and padding round to: models take their canvases
    from ``VideoPandaVideoProcessor``, which owns that choice (its ``canvas_unit``).

    ``num_frames=None`` keeps T frames (images). In training the whole clip is
    flipped horizontally with p=0.5 (image and mask alike), drawn from ``generator``.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"frames must be (T>0, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    if train and generator is None:
        raise ValueError("training flips draw from an explicit torch.Generator: pass generator=")
    if image_size % teacher_image_size:
        raise ValueError(f"image_size {image_size} must be a multiple of teacher_image_size {teacher_image_size}")
    if num_frames is not None and len(frames) > num_frames:
        raise ValueError(f"got {len(frames)} frames for a {num_frames}-frame input")
    frames = np.require(frames, requirements=("C", "W"))  # torch needs a writable array
    video = torch.from_numpy(frames).permute(0, 3, 1, 2)  # (T, 3, H, W) uint8, channels-last
    geometry = teacher_geometry(video.shape[2], video.shape[3], teacher_image_size, patch_size)
    student = to_canvas(video, scaled(geometry, image_size // teacher_image_size), mean, std, scale, normalize)
    teacher = to_canvas(video, geometry, mean, std, scale, normalize) if with_teacher else None
    if train and torch.rand((), generator=generator) < 0.5:  # flip the canvas: image and mask alike
        student = student.flip(-1)
        teacher = None if teacher is None else teacher.flip(-1)
    total = len(frames) if num_frames is None else num_frames
    return VisualInputs(
        pixel_values=_pad_frames(student, total),
        teacher_pixel_values=None if teacher is None else _pad_frames(teacher, total),
        num_real_frames=len(frames),
    )


def preprocess_image(image: np.ndarray, **kwargs) -> VisualInputs:
    """image (1, H, W, 3) or (H, W, 3) uint8 -> a one-frame VisualInputs."""
    if image.ndim == 3:
        image = image[None]
    return preprocess_frames(image, num_frames=None, **kwargs)


def _pad_frames(frames: Tensor, total: int) -> Tensor:
    """Append all-zero 4-channel frames (mask 0) up to ``total``."""
    missing = total - frames.shape[0]
    return frames if missing <= 0 else torch.cat([frames, frames.new_zeros(missing, *frames.shape[1:])])
