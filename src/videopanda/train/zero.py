"""What DeepSpeed ZeRO needs from a stage beyond the Trainer's own integration.

* DeepSpeed's communication layer starts over the process group the Trainer's arguments set up, before
  the model loads: ZeRO-3's ``zero.Init`` (inside ``from_pretrained``) reads the world size from it.
* In 16-bit training DeepSpeed holds the weights themselves in that precision (its optimizer keeps the
  float32 master copy). It casts parameters but not buffers, and under ZeRO-3 it leaves modules built
  outside ``zero.Init`` (a fresh STAB and projector) as they are; ``cast_for_engine`` casts every
  parameter and persistent buffer first, and ``PrecisionCheck`` refuses to train if any is left out.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import TrainerCallback


def start_deepspeed_comm(backend: str) -> None:
    """Wrap the process group the Trainer's arguments started (also one of a single process) for DeepSpeed."""
    import deepspeed

    deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False)


def state_tensors(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """Every floating parameter and persistent buffer: the model's state. Non-persistent buffers (an LLM's
    rotary frequencies) are constants their modules derive and compute in their own precision."""
    tensors = [(name, p) for name, p in model.named_parameters()]
    for prefix, module in model.named_modules():
        tensors += [(f"{prefix}.{name}" if prefix else name, buffer) for name, buffer in module._buffers.items()
                    if buffer is not None and name not in module._non_persistent_buffers_set]
    return [(name, t) for name, t in tensors if torch.is_floating_point(t)]


def stored_dtype(tensor: torch.Tensor) -> torch.dtype:
    """The dtype a tensor is kept in (a ZeRO-3 parameter's own shard when partitioned)."""
    return getattr(tensor, "ds_tensor", tensor).dtype


def cast_for_engine(model: nn.Module, dtype: torch.dtype) -> None:
    """Cast the parameters and persistent buffers not yet in ``dtype`` (ZeRO-3's partitioned ones already are)."""
    for _, tensor in state_tensors(model):
        if stored_dtype(tensor) != dtype:
            tensor.data = tensor.data.to(dtype)


class PrecisionCheck(TrainerCallback):
    """Fails before the first step if the engine holds any parameter or persistent buffer in another dtype."""

    def __init__(self, trainer, dtype: torch.dtype) -> None:
        self.trainer = trainer
        self.dtype = dtype

    def on_train_begin(self, args, state, control, **kwargs):
        wrong = [(name, stored_dtype(t)) for name, t in state_tensors(self.trainer.model_wrapped)
                 if stored_dtype(t) != self.dtype]
        if wrong:
            shown = ", ".join(f"{name} ({str(dtype).removeprefix('torch.')})" for name, dtype in wrong[:5])
            raise RuntimeError(f"the DeepSpeed engine holds {len(wrong)} tensors outside the training precision "
                               f"{str(self.dtype).removeprefix('torch.')}: {shown}")
