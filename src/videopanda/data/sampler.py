"""Modality- and length-grouped sampling, like the release's ``group_by_modality_length``.

The sampler yields the *global* order of one epoch. It is built for the HF
Trainer, whose (accelerate) data loader hands consecutive batches of
``batch_size`` indices to ranks 0..W-1 in turn: every run of
``world_size * batch_size`` indices (one optimizer step across all ranks) is
a single modality (video-only, image-only or text-only). Within a shuffled
megabatch of ``megabatch_factor`` global batches, indices are sorted by
length so a global batch holds similar lengths, then dealt to ranks in snake
order so ranks get similar totals. Full global batches are shuffled; each
modality's last, partial global batch comes at the end (the only place where
a step may mix modalities). Deterministic for ``(seed, epoch)``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


def snake_split(indices: list[int], parts: int) -> list[list[int]]:
    """Deal length-sorted ``indices`` to ``parts`` lists as 0..P-1, P-1..0, ... (balanced totals)."""
    out: list[list[int]] = [[] for _ in range(parts)]
    for position, index in enumerate(indices):
        turn, slot = divmod(position, parts)
        out[slot if turn % 2 == 0 else parts - 1 - slot].append(index)
    return out


def grouped_order(
    modalities: Sequence[str],
    lengths: Sequence[int],
    batch_size: int,
    world_size: int,
    generator: torch.Generator,
    megabatch_factor: int = 8,
) -> list[int]:
    """All indices, ordered so every ``world_size * batch_size`` run is one modality of similar lengths."""
    step = batch_size * world_size
    full: list[list[int]] = []
    partial: list[list[int]] = []
    for modality in sorted(set(modalities)):
        group = [i for i, m in enumerate(modalities) if m == modality]
        order = [group[i] for i in torch.randperm(len(group), generator=generator).tolist()]
        for start in range(0, len(order), step * megabatch_factor):
            mega = sorted(order[start : start + step * megabatch_factor], key=lambda i: -lengths[i])
            for begin in range(0, len(mega), step):
                ranks = snake_split(mega[begin : begin + step], world_size)
                (full if len(mega) - begin >= step else partial).append([i for batch in ranks for i in batch])
    shuffled = [full[i] for i in torch.randperm(len(full), generator=generator).tolist()]
    return [i for steps in shuffled + partial for i in steps]


class ModalityLengthGroupedSampler(Sampler[int]):
    """Train sampler: pass it as the HF Trainer's train sampler (override ``_get_train_sampler``).

    ``modality_lengths``: per sample ``(modality, length)``, e.g.
    ``VideoLLaVADataset.modality_lengths()``. ``batch_size`` is the per-device
    batch size (times the accumulation steps to keep whole optimizer steps one
    modality), ``world_size`` the number of data-parallel ranks; every rank
    builds the same order from the same seed.
    """

    def __init__(
        self,
        modality_lengths: Sequence[tuple[str, int]],
        batch_size: int,
        world_size: int = 1,
        seed: int = 0,
        megabatch_factor: int = 8,
    ) -> None:
        if batch_size < 1 or world_size < 1 or megabatch_factor < 1:
            raise ValueError(f"batch_size={batch_size}, world_size={world_size}, megabatch_factor must be >= 1")
        self.modalities = [m for m, _ in modality_lengths]
        self.lengths = [n for _, n in modality_lengths]
        self.batch_size = batch_size
        self.world_size = world_size
        self.seed = seed
        self.megabatch_factor = megabatch_factor
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = grouped_order(
            self.modalities, self.lengths, self.batch_size, self.world_size, generator, self.megabatch_factor
        )
        return iter(order)
