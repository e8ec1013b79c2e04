"""Where the distillation targets of a batch come from: the live teacher or the teacher cache.

A source is called with the collated batch and returns
``(teacher_features (N_t, Dt), teacher_patches_per_frame (F,))`` for the
batch's frames in order. The live teacher needs the teacher-scale frames
(``teacher_pixel_values_videos``); the cache needs each sample's key (``sample_keys``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch
from torch import Tensor

from videopanda.model.chunking import chunk_lengths
from videopanda.model.configuration_videopanda import VideoPandaConfig
from videopanda.train.config import TeacherConfig

if TYPE_CHECKING:
    from videopanda.model.teacher import VideoTeacher


class TeacherSource(Protocol):
    needs_frames: bool
    needs_keys: bool

    def __call__(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]: ...


@dataclass
class LiveTeacher:
    """Runs the frozen teacher on every batch (what the release does)."""

    teacher: VideoTeacher
    chunk_length: int  # the model's (``chunking.chunk_lengths``): the teacher groups a video's chunks
    needs_frames: bool = True
    needs_keys: bool = False

    @torch.no_grad()
    def __call__(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        from videopanda.model.teacher import teacher_patch_features

        if "teacher_pixel_values_videos" not in batch:
            raise ValueError("the live teacher needs teacher_pixel_values_videos in the batch (collator "
                             "with_teacher=True)")
        frames = batch["teacher_pixel_values_videos"].to(next(self.teacher.parameters()).dtype)  # (F, 4, St, St)
        return teacher_patch_features(self.teacher, frames, chunk_lengths(batch["video_grid_thw"], self.chunk_length))


def build_teacher_source(
    config: TeacherConfig, model_config: VideoPandaConfig, device: torch.device
) -> TeacherSource:
    if config.cache:
        from videopanda.train.teacher_cache import CachedTeacher

        return CachedTeacher(config.cache, model_config)
    from videopanda.model.teacher import load_teacher

    if config.path is None:
        raise ValueError("distillation needs a teacher: set teacher.path (live teacher) or teacher.cache")
    teacher = load_teacher(config.path).to(device)
    check_teacher_fits(teacher.config.hidden_size, teacher.config.image_size, model_config, config.path)
    return LiveTeacher(teacher, model_config.chunk_length)


def check_teacher_fits(hidden_size: int, image_size: int, model_config: VideoPandaConfig, source: str) -> None:
    """The teacher's width and frame size must be the ones the model's distillation head and data expect."""
    expected = (model_config.teacher_hidden_size, model_config.teacher_image_size)
    if (hidden_size, image_size) != expected:
        raise ValueError(
            f"teacher {source} has width {hidden_size} and frame size {image_size}, the model expects "
            f"teacher_hidden_size={expected[0]} and teacher_image_size={expected[1]}"
        )
