"""Run ``videopanda`` for the DeepSpeed tests: ``torchrun ... tests/deepspeed_on_cpu.py train --config CONFIG``.

DeepSpeed's communication layer compiles a shared-memory all-reduce op for CPU processes the first time it
starts on a machine (46-85 s on 2 cores). Only its inference all-reduce calls that op (training's collectives
are the process group's own, here gloo), so this launcher skips building it. With ``KILL_AFTER_CHECKPOINT=N`` in the
environment, the run crashes after checkpoint-N (``crash_after_checkpoint.py``).
"""

from __future__ import annotations

import importlib
import sys

import crash_after_checkpoint  # noqa: F401  (KILL_AFTER_CHECKPOINT)

from videopanda.cli import main

# By module name: ``deepspeed.comm.torch`` as an attribute chain is the real ``torch`` (deepspeed.comm imports it).
importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
