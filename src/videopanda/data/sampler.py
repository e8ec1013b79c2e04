"""Modality- and length-grouped sampling, like the release's ``group_by_modality_length``.

Visual and text-only samples never share a batch; within a shuffled
megabatch, samples of similar length are batched together. Deterministic for
a seed and epoch; each rank takes its slice of every global batch.
"""

from __future__ import annotations

import torch
from torch.utils.data import Sampler


def grouped_indices(lengths: list[int], batch_size: int, generator: torch.Generator, megabatch_factor: int = 8) -> list[int]:
    """Indices ordered so that every run of ``batch_size`` is one modality of similar lengths."""
    batches: list[list[int]] = []
    for modality in (lambda n: n > 0, lambda n: n <= 0):
        group = [i for i, n in enumerate(lengths) if modality(n)]
        order = [group[i] for i in torch.randperm(len(group), generator=generator).tolist()]
        mega = batch_size * megabatch_factor
        for start in range(0, len(order), mega):
            chunk = sorted(order[start : start + mega], key=lambda i: -abs(lengths[i]))
            batches += [chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size)]
    full = [b for b in batches if len(b) == batch_size]
    partial = [b for b in batches if len(b) < batch_size]  # last, so full batches stay aligned
    shuffled = [full[b] for b in torch.randperm(len(full), generator=generator).tolist()]
    return [i for batch in shuffled + partial for i in batch]


class ModalityLengthGroupedSampler(Sampler[int]):
    def __init__(self, lengths: list[int], batch_size: int, seed: int = 0, world_size: int = 1, rank: int = 0) -> None:
        self.lengths = lengths
        self.global_batch = batch_size * world_size
        self.seed = seed
        self.world_size, self.rank = world_size, rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths) // self.world_size

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = grouped_indices(self.lengths, self.global_batch, generator)
        return iter(order[self.rank :: self.world_size][: len(self)])
