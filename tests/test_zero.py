"""train/zero.py without an engine: what is cast to the engine's precision, and the check that refuses the rest."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from videopanda.train.zero import PrecisionCheck, cast_for_engine, state_tensors


class WithRotary(nn.Module):
    """A BatchNorm (parameters, persistent running statistics) and a non-persistent derived constant."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(4)
        self.register_buffer("inv_freq", torch.rand(2), persistent=False)


def test_cast_for_engine_casts_parameters_and_persistent_buffers_only():
    model = WithRotary()
    cast_for_engine(model, torch.bfloat16)
    assert {name: t.dtype for name, t in state_tensors(model)} == {
        "norm.weight": torch.bfloat16, "norm.bias": torch.bfloat16, "norm.running_mean": torch.bfloat16,
        "norm.running_var": torch.bfloat16}  # num_batches_tracked is an integer
    assert model.inv_freq.dtype == torch.float32 and model.norm.num_batches_tracked.dtype == torch.long


def test_precision_check_names_what_the_engine_left_in_another_dtype():
    model = WithRotary().to(torch.bfloat16)
    model.norm.running_var.data = model.norm.running_var.data.float()  # a buffer the engine did not cast
    check = PrecisionCheck(SimpleNamespace(model_wrapped=model), torch.bfloat16)
    with pytest.raises(RuntimeError, match=r"1 tensors outside the training precision bfloat16: norm.running_var "
                                           r"\(float32\)"):
        check.on_train_begin(None, None, None)
    cast_for_engine(model, torch.bfloat16)
    check.on_train_begin(None, None, None)  # nothing left out: no error
