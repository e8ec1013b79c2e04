"""VideoPandaVideoProcessor: the one owner of Video-Panda's frame geometry (transformers' video processor).

Frames of any size become square canvases (``data/transform.py``'s pixel primitives): the long side is
resized to the canvas, the short side to whole *canvas units*, the padding is centred on whole units and
marked by a fourth mask channel. The unit (teacher-scale pixels) is the smallest that is a whole number of
teacher patches and, once scaled to the student canvas, a whole number of student LSD windows
(``patch_size * lsd_stride``): ``lcm(teacher_patch_size * factor, patch_size * lsd_stride) / factor`` with
``factor = image_size / teacher_image_size``. Training (student and teacher frames) and inference build
their canvases with this one rule, whatever the student's patch size (14 px in the release: unit 14;
7 px: still 14, since the teacher's patches must stay whole).

A video is padded with all-zero frames (mask 0) to ``num_frames`` and to whole chunks of
``chunk_length`` frames; an image is a one-frame video (so is a one-frame input to ``__call__``).
Each frame costs ``1 + h * (w + 1)`` tokens, ``(h, w)`` its LSD grid after the STAB's crop rule
(``model.stab.frame_grid_hw``).

Shapes: T frames in, F frames out, H x W source size, S = image_size, St = teacher_image_size.
(No ``from __future__ import annotations`` here: transformers reads the kwargs TypedDicts' annotations.)
"""

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessingKwargs, VideosKwargs
from transformers.video_processing_utils import BaseVideoProcessor

from videopanda.data.transform import CLIP_MEAN, CLIP_STD, VisualInputs, preprocess_frames
from videopanda.model.chunking import chunk_lengths, video_grid_row
from videopanda.model.stab import frame_grid_hw, tokens_per_frame


class VideoPandaVideoProcessorKwargs(VideosKwargs, total=False):
    """Video-Panda's geometry, beside transformers' video kwargs (``num_frames``: frames per video)."""

    image_size: int  # S: the student canvas side
    teacher_image_size: int  # St: the distillation teacher's canvas side
    patch_size: int  # the student's patch side (pixels at S)
    teacher_patch_size: int  # the teacher's patch side (pixels at St)
    lsd_stride: int  # the STAB's LSD window, in student patches
    max_crop_patches: int  # the STAB's crop rule (token counts)
    chunk_length: int  # frames per temporal chunk; a video's frames are padded to whole chunks
    return_teacher: bool  # also return ``teacher_pixel_values_videos (F, 4, St, St)``


class VideoPandaProcessorKwargs(ProcessingKwargs, total=False):
    """The kwargs ``VideoPandaProcessor.__call__`` routes to its tokenizer and video processor."""

    videos_kwargs: VideoPandaVideoProcessorKwargs  # type: ignore[misc]  # transformers' pattern: a narrower TypedDict
    _defaults = {"text_kwargs": {"padding": False}, "videos_kwargs": {}}  # type: ignore[misc]


class VideoPandaVideoProcessor(BaseVideoProcessor):
    """Videos (and images, as one-frame videos) -> ``pixel_values_videos (F, 4, S, S)``, ``video_grid_thw (V, 3)``.

    Frames are taken as given (``do_sample_frames=False``: the data pipeline samples with the release's
    rule, ``data.decode.read_video_frames``); with ``do_sample_frames=True`` transformers' uniform sampling
    picks ``num_frames`` (or ``fps``) frames first.
    """

    valid_kwargs = VideoPandaVideoProcessorKwargs  # type: ignore[assignment]  # transformers types it as ImagesKwargs
    model_input_names = ["pixel_values_videos", "video_grid_thw"]
    image_mean = list(CLIP_MEAN)
    image_std = list(CLIP_STD)
    do_convert_rgb = True
    do_rescale = True
    do_normalize = True
    do_resize = True
    do_sample_frames = False
    num_frames = 8
    image_size = 448
    teacher_image_size = 224
    patch_size = 14
    teacher_patch_size = 14
    lsd_stride = 2
    max_crop_patches = 16
    chunk_length = 4
    return_teacher = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.canvas_unit  # noqa: B018  # a geometry that has no unit fails here, at construction

    @classmethod
    def from_model_config(cls, config) -> "VideoPandaVideoProcessor":
        """The video processor of a ``VideoPandaConfig`` (its frames, sizes, patches, LSD, crop and chunks)."""
        return cls(**{name: getattr(config, name) for name in GEOMETRY_FIELDS})

    @property
    def factor(self) -> int:
        """Student canvas / teacher canvas (2 in the release: 448 / 224)."""
        if self.image_size % self.teacher_image_size:
            raise ValueError(f"image_size {self.image_size} must be a multiple of teacher_image_size "
                             f"{self.teacher_image_size}")
        return self.image_size // self.teacher_image_size

    @property
    def canvas_unit(self) -> int:
        """Teacher-scale pixels that resize and padding round to (module docstring)."""
        student_unit = math.lcm(self.teacher_patch_size * self.factor, self.patch_size * self.lsd_stride)
        unit = student_unit // self.factor
        if self.teacher_image_size % unit:
            raise ValueError(f"teacher_image_size {self.teacher_image_size} is not a whole number of {unit}-px units "
                             f"(teacher patches of {self.teacher_patch_size} px that are whole student LSD windows)")
        return unit

    def frames_per_video(self, num_frames: int, wanted: int | None = None) -> int:
        """Frames a ``num_frames``-frame video fills: at least ``wanted`` (default ``self.num_frames``), in whole
        chunks."""
        total = max(num_frames, self.num_frames if wanted is None else wanted)
        return math.ceil(total / self.chunk_length) * self.chunk_length

    def preprocess_video(
        self, frames: np.ndarray, num_frames: int | None = None, with_teacher: bool = False, is_image: bool = False,
    ) -> VisualInputs:
        """frames (T, H, W, 3) uint8 -> one video's canvases, padded to ``frames_per_video`` frames (an image,
        ``is_image``: its one frame). ``num_frames``: frames per video (default ``self.num_frames``);
        ``with_teacher``: the teacher's canvases too."""
        if is_image and len(frames) != 1:
            raise ValueError(f"an image is one frame, got {len(frames)}")
        total = None if is_image else self.frames_per_video(len(frames), num_frames)
        return preprocess_frames(
            frames, image_size=self.image_size, teacher_image_size=self.teacher_image_size,
            patch_size=self.canvas_unit, num_frames=total, with_teacher=with_teacher,
            mean=tuple(_per_channel(self.image_mean)), std=tuple(_per_channel(self.image_std)),
            scale=self.rescale_factor if self.do_rescale else 1.0, normalize=bool(self.do_normalize),
        )

    def preprocess_image(self, image: np.ndarray, with_teacher: bool = False) -> VisualInputs:
        """image (1, H, W, 3) or (H, W, 3) uint8 -> a one-frame input."""
        return self.preprocess_video(image[None] if image.ndim == 3 else image, with_teacher=with_teacher,
                                     is_image=True)

    def frame_token_counts(self, pixel_values: Tensor) -> Tensor:
        """pixel_values (F, 4, S, S) -> (F,) visual tokens per frame, by the STAB's own crop rule."""
        patch_mask = F.avg_pool2d(pixel_values[:, 3:4].float(), self.patch_size)[:, 0]  # (F, Hp, Wp)
        return tokens_per_frame(frame_grid_hw(patch_mask, self.lsd_stride, self.max_crop_patches))

    def num_tokens(self, num_frames: int, height: int, width: int) -> int:
        """Visual tokens of a ``num_frames``-frame ``height x width`` input as ``__call__`` lays it out (an image,
        one frame; a video padded to ``frames_per_video``, its padding frames counted too)."""
        blank = self.preprocess_video(np.zeros((1, height, width, 3), np.uint8), is_image=True).pixel_values
        total = 1 if num_frames == 1 else self.frames_per_video(num_frames)
        real, empty = self.frame_token_counts(torch.cat([blank, torch.zeros_like(blank)])).tolist()
        return num_frames * real + (total - num_frames) * empty

    def grid_thw(self, num_frames: int) -> Tensor:
        """(3,) long: a video's ``(frames, S // patch_size, S // patch_size)``; a frame count the model's
        chunking rule cannot split is a ValueError now, not in the model."""
        grid = video_grid_row(num_frames, self.image_size, self.patch_size)  # (1, 3)
        chunk_lengths(grid, self.chunk_length)
        return grid[0]

    def _prepare_input_videos(self, videos, do_convert_rgb=None, input_data_format=None, device=None) -> list[Tensor]:
        """Each video -> (T, H, W, 3) uint8 (the canvas works on uint8, as the release's PIL resize does)."""
        return [_as_rgb_uint8(video, input_data_format, do_convert_rgb) for video in videos]

    def _preprocess(  # type: ignore[override]  # the geometry comes from this processor, not resize/crop kwargs
        self, videos: list[Tensor], return_tensors=None, **kwargs
    ) -> BatchFeature:
        """Canvases of every video, concatenated frame-wise, and each video's grid."""
        processor = self._with_overrides(kwargs)
        sampled = bool(kwargs.get("do_sample_frames"))
        wanted = None if sampled else kwargs.get("num_frames")  # sampled videos keep the frames they were given
        teacher = bool(kwargs.get("return_teacher"))
        inputs = [processor.preprocess_video(video.numpy(), wanted or len(video), teacher, is_image=len(video) == 1)
                  for video in videos]
        data: dict[str, Tensor] = {
            "pixel_values_videos": torch.cat([v.pixel_values for v in inputs]),  # (F, 4, S, S)
            "video_grid_thw": torch.stack([processor.grid_thw(len(v.pixel_values)) for v in inputs]),  # (V, 3)
        }
        if kwargs.get("return_teacher"):
            data["teacher_pixel_values_videos"] = torch.cat([_teacher(v) for v in inputs])  # (F, 4, St, St)
        return BatchFeature(data=data, tensor_type=return_tensors)

    def _validate_preprocess_kwargs(self, **kwargs) -> None:  # type: ignore[override]  # forwards them all
        """transformers' checks, but the resize target is ``image_size`` (a canvas), not ``size``."""
        super()._validate_preprocess_kwargs(**{**kwargs, "do_resize": False})

    def _with_overrides(self, kwargs: dict) -> "VideoPandaVideoProcessor":
        """This processor, or a copy with the call's geometry and normalisation overrides."""
        names = [*GEOMETRY_FIELDS, "image_mean", "image_std", "do_rescale", "rescale_factor", "do_normalize"]
        overrides = {name: kwargs[name] for name in names if kwargs.get(name) is not None}
        if all(_same(getattr(self, name), value) for name, value in overrides.items()):
            return self
        return type(self)(**{**self.to_dict(), **overrides})


GEOMETRY_FIELDS = ("num_frames", "image_size", "teacher_image_size", "patch_size", "teacher_patch_size",
                   "lsd_stride", "max_crop_patches", "chunk_length")


def _same(current, value) -> bool:
    """An override equal to the processor's own value (numbers and sequences of them alike)."""
    if isinstance(current, list | tuple) or isinstance(value, list | tuple):
        return _per_channel(current) == _per_channel(value)
    return current == value


def _per_channel(value: float | Sequence[float]) -> list[float]:
    return [float(value)] * 3 if isinstance(value, int | float) else [float(v) for v in value]


def _teacher(visuals: VisualInputs) -> Tensor:
    if visuals.teacher_pixel_values is None:
        raise RuntimeError("preprocess_video(with_teacher=True) returned no teacher frames")
    return visuals.teacher_pixel_values


def _as_rgb_uint8(video: np.ndarray | Tensor, input_data_format, do_convert_rgb: bool | None) -> Tensor:
    """One video (T, C, H, W) or (T, H, W, C), C in {1, 3, 4} -> (T, H, W, 3) uint8 (alpha dropped, grey tripled)."""
    tensor = torch.from_numpy(np.asarray(video)) if not isinstance(video, Tensor) else video
    channels_last = str(input_data_format) in ("channels_last", "ChannelDimension.LAST") or (
        input_data_format is None and tensor.shape[-1] in (1, 3, 4) and tensor.shape[1] not in (1, 3, 4)
    )
    tensor = tensor if channels_last else tensor.permute(0, 2, 3, 1)  # (T, H, W, C)
    if tensor.dtype != torch.uint8:
        tensor = (tensor.float() * (255 if tensor.is_floating_point() and tensor.max() <= 1 else 1)).round()
        tensor = tensor.clamp(0, 255).to(torch.uint8)
    if tensor.shape[-1] == 1:
        tensor = tensor.expand(*tensor.shape[:-1], 3)
    elif tensor.shape[-1] == 4 and do_convert_rgb is not False:
        tensor = tensor[..., :3]
    if tensor.shape[-1] != 3:
        raise ValueError(f"frames must have 1, 3 or 4 channels (RGBA with do_convert_rgb), got {tuple(tensor.shape)}")
    return tensor.contiguous().cpu()
