"""The frozen distillation teacher: LanguageBind's video vision tower (spec section 4).

A CLIP ViT whose every encoder layer first mixes time, then space:

    x = x + temporal_embedding[position of the frame in its temporal group]
    x = x + temporal_attn(temporal_layer_norm1(x))      across the group's frames, per patch position
    x = x + self_attn(layer_norm1(x))                   across the frame's patches (CLS included)
    x = x + mlp(layer_norm2(x))

Features are the hidden states after ``feature_layer`` (-2: the penultimate
layer; ``post_layernorm`` is loaded but not part of the features), CLS dropped.

Temporal groups. The release's tower groups ``num_frames`` (8) consecutive
frames of whatever it is fed; it is fed whole videos (both 4-frame chunks), so
an 8-frame video is one group. Here, runs of consecutive multi-frame chunks
(``chunk_lengths > 1``) are cut into groups of ``num_frames`` frames; a
single-frame chunk (an image) is a group of its own. For videos padded to a
multiple of ``num_frames`` (the release's 8 frames) this is exactly the
release; a shorter last group attends over its own frames only (masked).

Shape legend
    F   frames;  C  chunks;  G  temporal groups;  Tg  longest group
    n   tokens per frame (1 + P);  P  patches per frame ((S / patch)^2);  D  width

Parameter names are the release's (``model.video_teacher.video_tower.*``) and
LanguageBind's (``vision_model.*``) after their prefix.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.activations import ACT2FN

from videopanda.model.weights import load_weight_file

logger = logging.getLogger(__name__)

LANGUAGEBIND_PREFIX = "vision_model."
# A LanguageBind encoder saved inside its peft LoRA wrapper (weights merged): names to plain ones.
PEFT_RENAMES = (("encoder.base_model.model.", "encoder."), (".base_layer.", "."))
# Buffers that some checkpoints store and this module recomputes.
IGNORED_KEYS = ("embeddings.position_ids",)


@dataclass(frozen=True)
class TeacherConfig:
    """The vision config of the teacher; defaults are LanguageBind_Video_merge (ViT-L/14, 224, 8 frames)."""

    hidden_size: int = 1024
    intermediate_size: int = 4096
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    num_channels: int = 3
    image_size: int = 224
    patch_size: int = 14
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    add_time_attn: bool = True
    num_frames: int = 8
    feature_layer: int = -2

    @classmethod
    def from_dict(cls, values: dict) -> TeacherConfig:
        """Keep the known fields of a (LanguageBind or golden) vision config; ignore the rest."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_layers_run(self) -> int:
        """Encoder layers needed for ``feature_layer`` (hidden-state entry 0 is the embedding output)."""
        entries = self.num_hidden_layers + 1
        if not -entries <= self.feature_layer < entries:
            raise ValueError(f"feature_layer {self.feature_layer} outside the {entries} hidden-state entries")
        return self.feature_layer % entries


@dataclass
class TemporalGroups:
    """Where each frame sits in the padded ``(G, Tg)`` grid of temporal groups."""

    slot: Tensor  # (F,) long: group * Tg + position
    position: Tensor  # (F,) long: position of the frame inside its group
    num_groups: int
    max_length: int
    key_mask: Tensor | None  # (G, Tg) bool, True on real frames; None when every group is full


def temporal_groups(chunk_lengths: Tensor, num_frames: int) -> TemporalGroups:
    """Cut runs of multi-frame chunks into groups of ``num_frames``; single-frame chunks stand alone."""
    if chunk_lengths.dim() != 1 or bool((chunk_lengths < 1).any()):
        raise ValueError(f"chunk_lengths must be a 1-D tensor of positive lengths, got {chunk_lengths.tolist()}")
    device = chunk_lengths.device
    is_image = torch.repeat_interleave(chunk_lengths == 1, chunk_lengths)  # (F,)
    index = torch.arange(len(is_image), device=device)
    run_start = is_image | torch.cat([is_image.new_ones(1), is_image[:-1]])  # first frame, images, after an image
    start_index = torch.where(run_start, index, 0).cummax(0).values
    position = (index - start_index) % num_frames  # (F,)
    group = torch.cumsum(position == 0, 0) - 1  # (F,)
    lengths = torch.bincount(group)  # (G,)
    max_length = int(lengths.max())
    key_mask = None
    if bool((lengths != max_length).any()):
        key_mask = torch.arange(max_length, device=device) < lengths[:, None]
    return TemporalGroups(group * max_length + position, position, len(lengths), max_length, key_mask)


class TeacherAttention(nn.Module):
    """CLIP attention: separate q/k/v/out projections with bias, scale ``head_dim ** -0.5``."""

    def __init__(self, config: TeacherConfig) -> None:
        super().__init__()
        width = config.hidden_size
        if width % config.num_attention_heads:
            raise ValueError(f"hidden_size {width} does not split into {config.num_attention_heads} attention heads")
        self.num_heads = config.num_attention_heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(width, width) for _ in range(4))

    def forward(self, x: Tensor, key_mask: Tensor | None = None) -> Tensor:
        """x (B, T, D), key_mask (B, 1, 1, T) bool or None -> (B, T, D)."""
        batch, length, width = x.shape

        def heads(t: Tensor) -> Tensor:
            return t.view(batch, length, self.num_heads, -1).transpose(1, 2)  # (B, H, T, hd)

        query, key, value = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        out = F.scaled_dot_product_attention(query, key, value, key_mask)  # (B, H, T, hd)
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, width))


class TeacherMLP(nn.Module):
    def __init__(self, config: TeacherConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.act = ACT2FN[config.hidden_act]

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class TeacherLayer(nn.Module):
    def __init__(self, config: TeacherConfig) -> None:
        super().__init__()
        width, eps = config.hidden_size, config.layer_norm_eps
        self.add_time_attn = config.add_time_attn
        # LanguageBind adds no temporal embedding when its groups are single frames.
        self.add_time_embedding = config.add_time_attn and config.num_frames > 1
        if config.add_time_attn:
            self.temporal_embedding = nn.Parameter(torch.zeros(1, config.num_frames, width))
            self.temporal_layer_norm1 = nn.LayerNorm(width, eps=eps)
            self.temporal_attn = TeacherAttention(config)
        self.layer_norm1 = nn.LayerNorm(width, eps=eps)
        self.self_attn = TeacherAttention(config)
        self.layer_norm2 = nn.LayerNorm(width, eps=eps)
        self.mlp = TeacherMLP(config)

    def forward(self, x: Tensor, groups: TemporalGroups) -> Tensor:
        """x (F, n, D) -> (F, n, D)."""
        if self.add_time_attn:
            if self.add_time_embedding:
                x = x + self.temporal_embedding[0, groups.position][:, None]  # (F, 1, D)
            x = x + self.temporal_mix(self.temporal_layer_norm1(x), groups)
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))

    def temporal_mix(self, x: Tensor, groups: TemporalGroups) -> Tensor:
        """Attention across each group's frames, independently for every token position: (F, n, D)."""
        _, tokens, width = x.shape
        grid = x.new_zeros(groups.num_groups * groups.max_length, tokens, width).index_copy(0, groups.slot, x)
        grid = grid.view(groups.num_groups, groups.max_length, tokens, width).transpose(1, 2)  # (G, n, Tg, D)
        mask = None
        if groups.key_mask is not None:
            mask = groups.key_mask[:, None, None, None].expand(-1, tokens, -1, -1, -1).flatten(0, 1)  # (G*n, 1, 1, Tg)
        mixed = self.temporal_attn(grid.flatten(0, 1), mask)  # (G*n, Tg, D)
        mixed = mixed.view(groups.num_groups, tokens, groups.max_length, width).transpose(1, 2)  # (G, Tg, n, D)
        return mixed.flatten(0, 1)[groups.slot]


class TeacherEmbeddings(nn.Module):
    def __init__(self, config: TeacherConfig) -> None:
        super().__init__()
        width = config.hidden_size
        self.class_embedding = nn.Parameter(torch.zeros(width))
        self.patch_embedding = nn.Conv2d(
            config.num_channels, width, kernel_size=config.patch_size, stride=config.patch_size, bias=False
        )
        self.position_embedding = nn.Embedding(config.grid_size**2 + 1, width)

    def forward(self, pixel_values: Tensor) -> Tensor:
        """pixel_values (F, 3, S, S) -> (F, 1 + P, D)."""
        patches = self.patch_embedding(pixel_values).flatten(2).transpose(1, 2)  # (F, P, D)
        cls = self.class_embedding.expand(len(patches), 1, -1)
        return torch.cat([cls, patches], 1) + self.position_embedding.weight


class TeacherEncoder(nn.Module):
    def __init__(self, config: TeacherConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(TeacherLayer(config) for _ in range(config.num_hidden_layers))


class VideoTeacher(nn.Module):
    """LanguageBind's video vision tower; ``forward`` gives per-frame patch features (CLS dropped)."""

    def __init__(self, config: TeacherConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = TeacherEmbeddings(config)
        self.pre_layrnorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.encoder = TeacherEncoder(config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)  # kept for loading only

    def forward(self, pixel_values: Tensor, chunk_lengths: Tensor | None = None) -> Tensor:
        """pixel_values (F, 3, S, S), chunk_lengths (C,) summing to F (None: one run of video frames) -> (F, P, D)."""
        cfg = self.config
        if pixel_values.dim() != 4 or pixel_values.shape[1:] != (cfg.num_channels, cfg.image_size, cfg.image_size):
            raise ValueError(
                f"teacher pixel_values must be (F, {cfg.num_channels}, {cfg.image_size}, {cfg.image_size}), "
                f"got {tuple(pixel_values.shape)}"
            )
        if chunk_lengths is None:
            chunk_lengths = torch.tensor([len(pixel_values)], device=pixel_values.device)
        if int(chunk_lengths.sum()) != len(pixel_values):
            raise ValueError(f"chunk_lengths sum to {int(chunk_lengths.sum())} for {len(pixel_values)} frames")
        groups = temporal_groups(chunk_lengths.to(pixel_values.device), cfg.num_frames)
        x = self.pre_layrnorm(self.embeddings(pixel_values))  # (F, n, D)
        for layer in self.encoder.layers[: cfg.num_layers_run]:
            x = layer(x, groups)
        return x[:, 1:]


@torch.no_grad()
def teacher_patch_features(
    teacher: VideoTeacher, teacher_pixel_values: Tensor, chunk_lengths: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Distillation targets of a batch: features of every real patch, frames in order.

    teacher_pixel_values (F, 4, St, St): normalised RGB + validity mask (all-zero padding frames
    still run, as in the release: they take part in the temporal attention).
    chunk_lengths (C,): the batch's chunks (see the module docstring); None = one run of video frames.
    Returns ``features (N_t, Dt)`` (padding patches dropped: teacher-scale mask average-pooled
    by the patch size is 0) and ``patches_per_frame (F,)`` long (0 for padding frames).
    """
    if teacher_pixel_values.dim() != 4 or teacher_pixel_values.shape[1] != 4:
        raise ValueError(f"teacher_pixel_values must be (F, 4, St, St), got {tuple(teacher_pixel_values.shape)}")
    features = teacher(teacher_pixel_values[:, :3], chunk_lengths)  # (F, P, D)
    patch = teacher.config.patch_size
    real = F.avg_pool2d(teacher_pixel_values[:, 3:].float(), patch).flatten(1) > 0  # (F, P)
    return features[real], real.sum(1)


def load_teacher(directory: str | Path, dtype: torch.dtype | None = None) -> VideoTeacher:
    """Load the video tower of a local LanguageBind_Video_merge directory, frozen and in eval mode.

    The directory holds the full LanguageBind model: ``config.json`` (its ``vision_config`` is the
    tower's) and weights (``*.safetensors`` or ``pytorch_model*.bin``) where ``vision_model.*`` is the tower.
    """
    directory = Path(directory)
    config = read_teacher_config(directory)
    weights = _tower_weights(directory)
    teacher = VideoTeacher(config)
    missing, unexpected = teacher.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"teacher weights in {directory} do not fit the tower of its config.json: "
            f"missing {sorted(missing)[:10]}, unexpected {sorted(unexpected)[:10]}"
        )
    if dtype is not None:
        teacher.to(dtype)
    logger.info("loaded teacher from %s (%d layers, width %d)", directory, config.num_hidden_layers, config.hidden_size)
    return teacher.eval().requires_grad_(False)


def read_teacher_config(directory: Path) -> TeacherConfig:
    path = directory / "config.json"
    if not path.is_file():
        raise ValueError(f"no config.json in teacher directory {directory}")
    values = json.loads(path.read_text())
    return TeacherConfig.from_dict(values.get("vision_config", values))


def _tower_weights(directory: Path) -> dict[str, Tensor]:
    files = sorted(directory.glob("*.safetensors")) or sorted(directory.glob("pytorch_model*.bin"))
    if not files:
        raise ValueError(f"no *.safetensors or pytorch_model*.bin weights in teacher directory {directory}")
    tower: dict[str, Tensor] = {}
    for file in files:
        for name, tensor in load_weight_file(file).items():
            if name.startswith(LANGUAGEBIND_PREFIX) and not name.endswith(IGNORED_KEYS):
                tower[_plain_name(name[len(LANGUAGEBIND_PREFIX) :])] = tensor
    if not tower:
        raise ValueError(f"no {LANGUAGEBIND_PREFIX}* weights in {[f.name for f in files]} ({directory})")
    if any("lora_" in name for name in tower):
        raise ValueError(f"the teacher in {directory} holds unmerged LoRA weights; use the merged (_merge) model")
    return tower


def _plain_name(name: str) -> str:
    for old, new in PEFT_RENAMES:
        name = name.replace(old, new)
    return name


