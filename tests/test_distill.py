"""Distillation head: golden parity with the release (every distill_* case)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import golden_cases, tiny_llama_config
from videopanda.model.configuration_videopanda import VideoPandaConfig
from videopanda.model.convert import release_to_ours
from videopanda.model.distill import DistillationHead, selected_layer_indices


def head_from_golden(case):
    meta = json.loads(case.with_suffix(".json").read_text())
    tensors = load_file(str(case.with_suffix(".safetensors")))
    config = VideoPandaConfig(
        text_config=tiny_llama_config(hidden_size=meta["llm_hidden_size"], num_hidden_layers=meta["num_hidden_layers"]),
        teacher_hidden_size=meta["teacher_hidden_size"], distill_layer_rate=meta["layer_rate"],
        distill_num_heads=meta["num_heads"], use_distillation=True,
    )
    head = DistillationHead(config).eval()
    weights = release_to_ours({k: v for k, v in tensors.items() if k.startswith("model.")}).model
    head.load_state_dict({k[len("distill_head.") :]: v for k, v in weights.items()}, strict=True)
    return meta, tensors, head


@pytest.mark.parametrize("case", golden_cases("distill"))
def test_distillation_head_matches_release(case):
    meta, tensors, head = head_from_golden(case)
    assert head.layer_indices == meta["selected_hidden_state_indices"]
    frames = range(meta["frames"])
    hidden = torch.cat([tensors[f"input.hidden_states.frame{f}"] for f in frames])  # (N, L+1, D)
    teacher = torch.cat([tensors[f"input.teacher.frame{f}"] for f in frames])
    counts = torch.tensor([tensors[f"input.teacher.frame{f}"].shape[0] for f in frames])
    out = head(hidden[:, head.layer_indices], teacher, counts)  # all frames in one call
    for f, student in zip(frames, out.student.split(counts.tolist()), strict=True):
        torch.testing.assert_close(student, tensors[f"output.student.frame{f}"], atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(
            out.per_frame_loss[f : f + 1], tensors[f"output.loss.frame{f}"], atol=1e-4, rtol=1e-5
        )
    torch.testing.assert_close(out.loss.reshape(1), tensors["output.loss.mean"], atol=1e-4, rtol=1e-5)


def test_selected_layers_of_the_release():
    assert selected_layer_indices(32, 4) == [32, 28, 24, 20, 16, 12, 8, 4, 0]


def test_loss_is_zero_when_student_equals_teacher_and_mismatch_raises():
    config = VideoPandaConfig(
        text_config=tiny_llama_config(num_hidden_layers=4), teacher_hidden_size=16, use_distillation=True
    )
    head = DistillationHead(config)
    hidden = torch.randn(10, len(head.layer_indices), 32)
    teacher = head.student_features(hidden).detach() * 3.0  # cosine is scale-free
    out = head(hidden, teacher, torch.tensor([4, 6]))
    torch.testing.assert_close(out.per_frame_loss, torch.zeros(2), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="must agree"):
        head(hidden, teacher[:9], torch.tensor([4, 6]))


def test_gradient_reaches_every_selected_layer_and_every_parameter():
    config = VideoPandaConfig(
        text_config=tiny_llama_config(num_hidden_layers=8), teacher_hidden_size=16, use_distillation=True
    )
    head = DistillationHead(config)
    assert head.layer_indices == [8, 4, 0]
    hidden = torch.randn(7, 9, 32, requires_grad=True)  # all L+1 entries
    out = head(hidden[:, head.layer_indices], torch.randn(7, 16), torch.tensor([3, 4]))
    out.loss.backward()
    grad_per_entry = hidden.grad.abs().sum((0, 2))  # (L+1,)
    assert (grad_per_entry[head.layer_indices] > 0).all()
    assert (grad_per_entry[[i for i in range(9) if i not in head.layer_indices]] == 0).all()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())


def test_frame_without_patches_is_refused():
    config = VideoPandaConfig(
        text_config=tiny_llama_config(num_hidden_layers=4), teacher_hidden_size=16, use_distillation=True
    )
    head = DistillationHead(config)
    with pytest.raises(ValueError, match="at least one patch"):
        head(torch.randn(4, 2, 32), torch.randn(4, 16), torch.tensor([4, 0]))
