"""Imported by the tests' training launchers: with ``KILL_AFTER_CHECKPOINT=N`` in the environment, once every
rank has written checkpoint-N, rank 0 sends SIGKILL to torchrun and every rank (each rank has its own process
group): a crash at a known step."""

from __future__ import annotations

import os
import signal

import torch.distributed as dist
from transformers import Trainer

_original_save = Trainer._save_checkpoint


def _save_then_maybe_crash(self, *args, **kwargs):
    _original_save(self, *args, **kwargs)
    if self.state.global_step == int(os.environ.get("KILL_AFTER_CHECKPOINT", -1)):
        pids = [None] * dist.get_world_size()
        dist.all_gather_object(pids, os.getpid())  # also a barrier: every rank's part is on disk
        if dist.get_rank() == 0:
            for pid in [os.getppid(), *pids[1:], os.getpid()]:  # torchrun first, so it restarts nothing
                os.kill(pid, signal.SIGKILL)


Trainer._save_checkpoint = _save_then_maybe_crash
