"""Run ``videopanda`` with Accelerate's FSDP allowed on CPU processes (gloo), for the FSDP tests.

Accelerate only turns its FSDP plugin on for GPU-like process groups; on CPU it silently runs
plain DDP instead. PyTorch's FSDP2 (``fully_shard``) itself works on CPU with gloo, so this
launcher lifts that one gate: the Trainer, Accelerate's FSDP2 preparation, the wrap policy (the
STAB and each LLM decoder layer), sharded optimizer steps and the full-state-dict save all run as
they would on GPUs. Use: ``torchrun ... tests/fsdp_on_cpu.py train --config CONFIG``.

With ``KILL_AFTER_CHECKPOINT=N`` in the environment, the run crashes after checkpoint-N
(``crash_after_checkpoint.py``).
"""

from __future__ import annotations

import sys

import crash_after_checkpoint  # noqa: F401  (KILL_AFTER_CHECKPOINT)
from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType

from videopanda.cli import main

_original_init = AcceleratorState.__init__


def _init_allowing_cpu_fsdp(self, *args, fsdp_plugin=None, **kwargs):
    _original_init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
    if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
        self.distributed_type = DistributedType.FSDP
        self.fsdp_plugin = fsdp_plugin
        PartialState._shared_state["distributed_type"] = DistributedType.FSDP  # later states copy it from here


AcceleratorState.__init__ = _init_allowing_cpu_fsdp

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
