"""Key mapping between the Video-Panda release's state dicts and this project's model.

Pure functions on ``{name: tensor}`` dicts; file IO lives in ``release.py``.

    release                                   ours
    model.video_tower.*                  <->  stab.*            (internal renames below)
    model.vision_tower.*, model.mm_projector.*   duplicates of the video_* tensors: checked and
                                              dropped on import, written again on export
    model.video_projector.{0,2}.*        <->  projector.{0,2}.*
    model.video_tower_compressor.*       <->  distill_head.*
    model.video_teacher.video_tower.*     ->  teacher weights, kept apart (the teacher is no submodule)
    model.{embed_tokens,layers,norm}.*, lm_head.*  <->  language_model.model.*, language_model.lm_head.*
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

# STAB submodules whose release names say less than ours.
STAB_RENAMES: tuple[tuple[str, str], ...] = (
    ("lmhra1.", "lste.lmhra."),
    ("lmhra2.", "lste.unused_lmhra."),
    ("dpe.", "lste.dpe."),
    ("dec.", "gstra."),
    ("local_attention.", "lsd."),
    ("global_attention.", "fsra."),
    ("proj.", "fusion_head."),
)
# (release prefix, our prefix) for everything but the STAB internals.
PREFIXES: tuple[tuple[str, str], ...] = (
    ("model.video_tower_compressor.", "distill_head."),
    ("model.video_tower.", "stab."),
    ("model.video_projector.", "projector."),
    ("model.embed_tokens.", "language_model.model.embed_tokens."),
    ("model.layers.", "language_model.model.layers."),
    ("model.norm.", "language_model.model.norm."),
    ("lm_head.", "language_model.lm_head."),
)
DUPLICATES: tuple[tuple[str, str], ...] = (
    ("model.vision_tower.", "model.video_tower."),
    ("model.mm_projector.", "model.video_projector."),
)
TEACHER_PREFIX = "model.video_teacher."
# Buffers older LLaMA checkpoints store and current transformers recompute.
IGNORED = re.compile(r"^model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq$")


class CheckpointKeyError(KeyError):
    """Keys that cannot be mapped, or that a module does not expect."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


@dataclass
class ConvertedCheckpoint:
    model: dict[str, Tensor]
    teacher: dict[str, Tensor] = field(default_factory=dict)


def release_to_ours(state_dict: dict[str, Tensor]) -> ConvertedCheckpoint:
    """Map a release state dict to ours; the teacher's weights come back separately."""
    converted = ConvertedCheckpoint(model={})
    unknown = []
    _check_duplicates(state_dict)
    for name, tensor in state_dict.items():
        if IGNORED.match(name) or name.startswith(tuple(dup for dup, _ in DUPLICATES)):
            continue
        if name.startswith(TEACHER_PREFIX):
            converted.teacher[_strip_teacher(name)] = tensor
            continue
        ours = _release_name_to_ours(name)
        if ours is None:
            unknown.append(name)
        else:
            converted.model[ours] = tensor
    if unknown:
        raise CheckpointKeyError(_listing("checkpoint keys with no place in a Video-Panda model", unknown))
    return converted


def ours_to_release(state_dict: dict[str, Tensor], teacher: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
    """Map our state dict to the release's names, with its duplicate and teacher entries."""
    release: dict[str, Tensor] = {}
    unknown = []
    for name, tensor in state_dict.items():
        mapped = _our_name_to_release(name)
        if mapped is None:
            unknown.append(name)
        else:
            release[mapped] = tensor
    if unknown:
        raise CheckpointKeyError(_listing("model keys with no name in the release layout", unknown))
    for duplicate, source in DUPLICATES:
        for name in [n for n in release if n.startswith(source)]:
            release[duplicate + name[len(source) :]] = release[name]
    for name, tensor in (teacher or {}).items():
        release[f"{TEACHER_PREFIX}video_tower.{name}"] = tensor
    return release


def check_keys(module: nn.Module, state_dict: dict[str, Tensor], ignore_missing: tuple[str, ...] = ()) -> None:
    """Raise ``CheckpointKeyError`` listing missing and unexpected keys for ``module``."""
    expected = set(module.state_dict())
    missing = sorted(k for k in expected - set(state_dict) if not k.startswith(ignore_missing))
    unexpected = sorted(set(state_dict) - expected)
    problems = []
    if missing:
        problems.append(_listing("missing keys", missing))
    if unexpected:
        problems.append(_listing("unexpected keys", unexpected))
    if problems:
        raise CheckpointKeyError("; ".join(problems))


def _release_name_to_ours(name: str) -> str | None:
    for release_prefix, our_prefix in PREFIXES:
        if name.startswith(release_prefix):
            rest = name[len(release_prefix) :]
            return our_prefix + (_rename(rest, STAB_RENAMES) if our_prefix == "stab." else rest)
    return None


def _our_name_to_release(name: str) -> str | None:
    for release_prefix, our_prefix in PREFIXES:
        if name.startswith(our_prefix):
            rest = name[len(our_prefix) :]
            inverse = tuple((b, a) for a, b in STAB_RENAMES)
            return release_prefix + (_rename(rest, inverse) if our_prefix == "stab." else rest)
    return None


def _rename(rest: str, table: tuple[tuple[str, str], ...]) -> str:
    for old, new in table:
        if rest.startswith(old):
            return new + rest[len(old) :]
    return rest


def _strip_teacher(name: str) -> str:
    rest = name[len(TEACHER_PREFIX) :]
    return rest[len("video_tower.") :] if rest.startswith("video_tower.") else rest


def _check_duplicates(state_dict: dict[str, Tensor]) -> None:
    """The release stores STAB/projector twice; refuse a checkpoint whose copies disagree."""
    for duplicate, source in DUPLICATES:
        for name in (n for n in state_dict if n.startswith(duplicate)):
            twin = source + name[len(duplicate) :]
            if twin not in state_dict:
                raise CheckpointKeyError(f"{name} has no twin {twin}: the checkpoint's shared modules disagree")
            if not torch.equal(state_dict[twin], state_dict[name]):
                raise CheckpointKeyError(f"{name} differs from {twin}: the checkpoint's shared modules disagree")


def _listing(what: str, names: list[str], limit: int = 20) -> str:
    shown = ", ".join(names[:limit])
    more = f" ... and {len(names) - limit} more" if len(names) > limit else ""
    return f"{len(names)} {what}: {shown}{more}"
