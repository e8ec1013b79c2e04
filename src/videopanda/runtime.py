"""Where and in which precision a run computes: one policy for every entry point.

``resolve_precision("auto", "cpu")`` never picks something slower than float32
on the machine at hand: bfloat16 on CUDA devices that support it, on a CPU
only where bfloat16 matrix units exist (AMX: elsewhere, e.g. AVX512 without
AMX, CPU bf16 autocast measured 1.5x *slower* than float32), float32
otherwise. The choice and its reason are recorded next to every result
(``Precision.as_dict``).

Names: ``auto``, ``float32``, ``bfloat16``, ``float16`` (``fp32``, ``bf16``, ``fp16`` accepted).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Literal, TypeVar

if TYPE_CHECKING:
    import torch

    ModuleT = TypeVar("ModuleT", bound=torch.nn.Module)

# torch is imported where it is used: the CLI's parsers read DTYPE_CHOICES and must stay import-light.
logger = logging.getLogger(__name__)

DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")
_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
TrainerName = Literal["fp32", "bf16", "fp16"]  # TrainConfig.precision spelling
TRAINER_NAMES: dict[str, TrainerName] = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


class DeviceError(ValueError):
    """A device or precision this machine does not have."""


def canonical_dtype_name(name: str) -> str:
    """``bf16`` -> ``bfloat16`` etc.; a ``ValueError`` names the known choices."""
    name = _ALIASES.get(str(name).lower(), str(name).lower())
    if name not in DTYPE_CHOICES:
        raise ValueError(f"unknown precision {name!r} (choose one of {', '.join(DTYPE_CHOICES)})")
    return name


def cpu_capability() -> str:
    """What PyTorch's CPU kernels were dispatched for: ``AVX2``, ``AVX512``, ``AVX512_AMX`` (x86), ..."""
    import torch

    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):  # older builds, non-x86
        return "unknown"


def cpu_has_fast_bf16(capability: str | None = None) -> bool:
    """AMX tiles are what make CPU bf16 faster than float32; AVX512-BF16 alone measured slower."""
    return "AMX" in (capability or cpu_capability()).upper()


def resolve_device(device: str = "cpu") -> torch.device:
    """``cpu``, ``cuda``, ``cuda:1``, ``auto`` (CUDA when present) -> a device that exists, or a ``DeviceError``."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise DeviceError(f"unknown device {device!r}: use cpu, cuda, cuda:N or auto") from err
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {device!r}: this machine has no CUDA device (PyTorch sees none); use --device cpu"
            )
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise DeviceError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    return resolved


@dataclass(frozen=True)
class Precision:
    """A resolved precision: ``dtype`` is a canonical name; ``reason`` says why it was chosen."""

    dtype: str
    requested: str
    device: str
    reason: str
    cpu_capability: str

    @property
    def torch_dtype(self) -> torch.dtype:
        import torch

        return getattr(torch, self.dtype)

    @property
    def trainer_name(self) -> TrainerName:
        """The ``TrainConfig.precision`` spelling (``bf16``, ``fp16``, ``fp32``)."""
        return TRAINER_NAMES[self.dtype]

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def resolve_precision(requested: str = "auto", device: str | torch.device = "cpu") -> Precision:
    """The precision to compute in on ``device``; ``auto`` picks the fastest one that is not a downgrade."""
    import torch

    requested = canonical_dtype_name(requested)
    device_type = torch.device(device).type
    capability = cpu_capability()
    if requested != "auto":
        if device_type == "cpu" and requested == "bfloat16" and not cpu_has_fast_bf16(capability):
            logger.warning("bfloat16 on this CPU (%s, no AMX) is slower than float32", capability)
        choice = Precision(requested, requested, device_type, "requested", capability)
    elif device_type == "cuda" and torch.cuda.is_bf16_supported():
        choice = Precision("bfloat16", "auto", device_type, "CUDA device with bfloat16 support", capability)
    elif device_type == "cpu" and cpu_has_fast_bf16(capability):
        choice = Precision("bfloat16", "auto", device_type, f"CPU with AMX ({capability})", capability)
    else:
        reason = f"CPU without fast bfloat16 ({capability})" if device_type == "cpu" else f"{device_type} device"
        choice = Precision("float32", "auto", device_type, reason, capability)
    logger.info("precision: %s on %s (%s)", choice.dtype, device_type, choice.reason)
    return choice


def cast_weights(model: ModuleT, dtype: torch.dtype) -> ModuleT:
    """``model`` with its floating parameters and saved buffers in ``dtype`` (in place); the float32 buffers
    it does not save (RoPE ``inv_freq``: rounded to bf16, every position's rotation shifts) stay float32,
    as ``from_pretrained(dtype=...)`` leaves them."""
    import torch

    kept = [(module, name, buffer) for module in model.modules() for name, buffer in module._buffers.items()
            if buffer is not None and name in module._non_persistent_buffers_set and buffer.dtype == torch.float32]
    model.to(dtype)
    for module, name, buffer in kept:
        module._buffers[name] = buffer
    return model
