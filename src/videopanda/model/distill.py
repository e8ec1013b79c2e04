"""Distillation head (spec section 4): LLM hidden states at patch positions -> teacher space.

Shape legend
    N   patch tokens of all distilled frames, concatenated frame by frame
    K   selected hidden-state entries (L, L-4, ..., 0: 9 of 33 for L=32)
    D   LLM width;  Dt  teacher width

Per selected entry j: ``LN(D) -> Linear(D, Dt, no bias)``. The projected last
layer queries the other projected layers (8 heads, scale ``Dt ** -0.5``, no
extra projections); the student feature is ``input_layer(raw last layer) +
output_layer(attention result)``. Loss per frame: ``1 - mean cosine`` over its
patches; the batch loss is the mean over frames. Parameter names are the
release's (``model.video_tower_compressor.*``).

Only frames with real content are passed in (the caller drops padding frames
and non-patch tokens, and pools a finer student grid to the teacher's first:
``modeling_videopanda.pool_patch_grid``); a frame with no patches is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from videopanda.model.configuration_videopanda import VideoPandaConfig


def selected_layer_indices(num_hidden_layers: int, layer_rate: int) -> list[int]:
    """Hidden-state entries ``L, L-rate, ..., 0`` (entry 0 is the embedding output)."""
    return list(range(num_hidden_layers, -1, -layer_rate))


@dataclass
class DistillOutput:
    loss: Tensor  # () mean over frames of per_frame_loss
    per_frame_loss: Tensor  # (F,)
    student: Tensor  # (N, Dt)


class DistillationHead(nn.Module):
    def __init__(self, config: VideoPandaConfig) -> None:
        super().__init__()
        llm_width, teacher_width = config.llm_hidden_size, config.teacher_hidden_size
        self.layer_indices = selected_layer_indices(config.llm_config.num_hidden_layers, config.distill_layer_rate)
        self.num_heads = config.distill_num_heads
        self.scale = teacher_width**-0.5
        self.norm_layer = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(llm_width), nn.Linear(llm_width, teacher_width, bias=False))
            for _ in self.layer_indices
        )
        self.input_layer = nn.Linear(llm_width, teacher_width)
        self.output_layer = nn.Linear(teacher_width, teacher_width)

    def student_features(self, hidden_states: Tensor) -> Tensor:
        """hidden_states (N, K, D), entries in ``layer_indices`` order -> (N, Dt)."""
        if hidden_states.dim() != 3 or hidden_states.shape[1] != len(self.layer_indices):
            raise ValueError(
                f"hidden_states must be (N, {len(self.layer_indices)}, D) for entries {self.layer_indices}, "
                f"got {tuple(hidden_states.shape)}"
            )
        # (N, K, Dt)
        projected = torch.stack([layer(hidden_states[:, j]) for j, layer in enumerate(self.norm_layer)], 1)
        num_tokens, _, width = projected.shape
        heads = projected.view(num_tokens, -1, self.num_heads, width // self.num_heads).transpose(1, 2)  # (N, H, K, hd)
        query, keys = heads[:, :, :1], heads[:, :, 1:]
        weights = ((query @ keys.transpose(-1, -2)) * self.scale).softmax(-1)  # (N, H, 1, K-1)
        fused = (weights @ keys).transpose(1, 2).reshape(num_tokens, width)  # (N, Dt)
        return self.input_layer(hidden_states[:, 0]) + self.output_layer(fused)

    def forward(self, hidden_states: Tensor, teacher_features: Tensor, tokens_per_frame: Tensor) -> DistillOutput:
        """hidden_states (N, K, D), teacher_features (N, Dt), tokens_per_frame (F,) summing to N.

        ``hidden_states[:, j]`` is hidden-state entry ``layer_indices[j]`` (select with
        ``all_entries[:, head.layer_indices]`` from the ``(N, L+1, D)`` stack).
        """
        if bool((tokens_per_frame < 1).any()):
            raise ValueError(f"every frame needs at least one patch, got tokens_per_frame {tokens_per_frame.tolist()}")
        if teacher_features.shape[0] != hidden_states.shape[0] or int(tokens_per_frame.sum()) != hidden_states.shape[0]:
            raise ValueError(
                f"{hidden_states.shape[0]} student patches, {teacher_features.shape[0]} teacher patches and "
                f"tokens_per_frame summing to {int(tokens_per_frame.sum())} must agree"
            )
        student = self.student_features(hidden_states)
        cosine = F.cosine_similarity(student.float(), teacher_features.float(), dim=-1)  # (N,)
        frame_ids = torch.repeat_interleave(torch.arange(len(tokens_per_frame), device=cosine.device), tokens_per_frame)
        per_frame = 1 - cosine.new_zeros(len(tokens_per_frame)).index_add(0, frame_ids, cosine) / tokens_per_frame
        return DistillOutput(loss=per_frame.mean(), per_frame_loss=per_frame, student=student)
