"""`videopanda train`: run one training stage, or several in sequence.

    videopanda train --config configs/small/prealign.yaml [key=value ...]
    videopanda train --config configs/prealign.yaml --data-root /data/videopanda   # fills DATA_ROOT/...
    videopanda train --stages prealign,pretrain,finetune --config-dir configs/small [key=value ...]
    videopanda train --config configs/finetune_lora.yaml --merge     # LoRA: adapter + merged model

Under several processes, launch it with ``torchrun`` (see ``scripts/*.sh``).
"""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the top-level parser."""
    parser = subparsers.add_parser("train", help="run training stage(s)", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="one stage's YAML config")
    source.add_argument("--stages", help="comma-separated stages to chain, e.g. prealign,pretrain,finetune")
    parser.add_argument("--config-dir", default="configs", help="with --stages: directory holding <stage>.yaml")
    parser.add_argument("--data-root", metavar="DIR",
                        help="the seed's data directory: replaces the leading DATA_ROOT of the config's data paths")
    parser.add_argument("--merge", action="store_true",
                        help="with model.lora: also save the merged model (loadable like any model directory)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. optim.lr=1e-4")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from videopanda.train.config import load_train_config
    from videopanda.train.run import check_stage_config, stage_chain, train_stage

    overrides = list(args.overrides) + (["merge_lora=true"] if args.merge else [])
    if args.config:
        configs = [check_stage_config(load_train_config(args.config, overrides, args.data_root))]
    else:  # every stage's config is loaded and checked before the first one trains
        stages = [s.strip() for s in args.stages.split(",") if s.strip()]
        configs = stage_chain(stages, args.config_dir, overrides, args.data_root)
    if any(config.distributed == "deepspeed" for config in configs):
        single_process_world()
    with _output_locks(configs):
        for config in configs:
            output = train_stage(config)
    if _is_main_process():
        print(output)
    _leave_process_group()
    return 0


def _leave_process_group() -> None:
    """Every rank waits for the others, then the process group is torn down before the interpreter exits.

    Left to interpreter shutdown, its communication threads can be destroyed while still joinable, and the
    C++ runtime aborts the process (SIGABRT, "terminate called without an active exception") after a
    successful run.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


@contextmanager
def _output_locks(configs: list) -> Iterator[None]:
    """One ``train`` per output directory, locked before any model loads. Under torchrun only rank 0 (``RANK``,
    which the launcher sets for each process) takes the locks: the other ranks are the same run."""
    from videopanda.files import OutputLock

    with ExitStack() as held:
        if int(os.environ.get("RANK", "0")) == 0:
            for config in configs:
                held.enter_context(OutputLock(config.output_dir, "train"))
        yield


def single_process_world() -> None:
    """Without a launcher (no RANK), the environment of a one-process torch.distributed world on this host.

    DeepSpeed needs a process group even for one process, and without RANK it looks for an MPI launcher.
    """
    if "RANK" in os.environ:
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    os.environ.update({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1",
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})


def _is_main_process() -> bool:
    """Rank 0 under torchrun (the Trainer set up the process group), always in a single process."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
