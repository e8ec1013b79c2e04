"""Weight files (safetensors, torch ``.bin``) read with one error that names a damaged file and what to do.

A truncated copy, an empty file or a garbage header fails in ``safetensors`` with
a bare ``SafetensorError`` deep inside ``from_pretrained``; ``check_weight_files``
reads every header of a model directory first (cheap: the header only), so a bad
file is a ``CorruptWeightsError`` naming it before anything is built.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import Tensor

GOOD_COPY_HINT = ("copy it again from where it came from (download it again, or rerun the `videopanda convert` or "
                  "training run that wrote it)")


class CorruptWeightsError(ValueError):
    """A weight file that is empty, truncated or not in its format."""


def corrupt(path: Path, err: BaseException) -> CorruptWeightsError:
    reason = " ".join(str(err).split()) or type(err).__name__
    return CorruptWeightsError(f"{path}: corrupt or truncated weights file ({reason}); {GOOD_COPY_HINT}")


def check_weight_files(directory: str | os.PathLike[str]) -> None:
    """Every ``*.safetensors`` of ``directory`` has a whole, readable header covering the file."""
    for path in sorted(Path(directory).glob("*.safetensors")):
        try:
            with safe_open(str(path), "pt"):
                pass
        except SafetensorError as err:
            raise corrupt(path, err) from err


def load_weight_file(file: str | Path) -> dict[str, Tensor]:
    """A ``.safetensors`` or torch ``.bin`` state dict (on the CPU)."""
    file = Path(file)
    try:
        if file.suffix == ".safetensors":
            return load_file(str(file))
        return torch.load(file, map_location="cpu", weights_only=True)
    except (SafetensorError, pickle.UnpicklingError, EOFError, RuntimeError) as err:
        raise corrupt(file, err) from err
