"""Release <-> ours key mapping on a real (tiny) Video-Panda model's state dict."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_llama_config
from videopanda.model.configuration_videopanda import VideoPandaConfig
from videopanda.model.convert import CheckpointKeyError, check_keys, ours_to_release, release_to_ours
from videopanda.model.modeling_videopanda import VideoPandaForCausalLM

TEACHER = {"encoder.layers.0.mlp.fc1.weight": torch.randn(4, 2), "post_layernorm.bias": torch.randn(2)}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = VideoPandaConfig(text_config=tiny_llama_config(), stab_hidden_size=16, image_size=56,
                              teacher_image_size=28, use_distillation=True, teacher_hidden_size=8)
    return VideoPandaForCausalLM(config)


@pytest.fixture(scope="module")
def release(model):
    return ours_to_release(model.state_dict(), teacher=TEACHER)


def test_export_uses_release_names_with_duplicates_and_teacher(model, release):
    for name in (
        "model.video_tower.lmhra1.pos_embed.0.running_mean", "model.video_tower.lmhra2.pos_embed.3.weight",
        "model.video_tower.dpe.bias", "model.video_tower.dec.attn.in_proj_weight", "model.video_tower.dec.ln_3.weight",
        "model.video_tower.local_attention.q.1.weight", "model.video_tower.global_attention.kv.0.bias",
        "model.video_tower.proj.2.weight", "model.video_tower.temporal_cls_token", "model.video_tower.balance",
        "model.video_projector.2.bias", "model.mm_projector.0.weight", "model.vision_tower.dec.mlp.c_fc.weight",
        "model.video_tower_compressor.norm_layer.0.1.weight", "model.embed_tokens.weight",
        "model.layers.1.self_attn.o_proj.weight", "model.norm.weight", "lm_head.weight",
        "model.video_teacher.video_tower.encoder.layers.0.mlp.fc1.weight",
    ):
        assert name in release, name
    assert release["model.vision_tower.dpe.weight"] is release["model.video_tower.dpe.weight"]
    assert torch.equal(release["lm_head.weight"], model.language_model.lm_head.weight)
    stab_keys = [k for k in model.state_dict() if k.startswith("stab.")]
    assert len([k for k in release if k.startswith("model.vision_tower.")]) == len(stab_keys)


def test_round_trip_restores_every_tensor_and_the_teacher(model, release):
    converted = release_to_ours(release)
    ours = model.state_dict()
    assert sorted(converted.model) == sorted(ours)
    assert all(torch.equal(converted.model[k], ours[k]) for k in ours)
    assert sorted(converted.teacher) == sorted(TEACHER)
    check_keys(model, converted.model)
    model.load_state_dict(converted.model, strict=True)


def test_disagreeing_duplicates_are_refused(release):
    broken = dict(release)
    broken["model.mm_projector.0.weight"] = broken["model.mm_projector.0.weight"] + 1
    with pytest.raises(CheckpointKeyError, match=r"model\.mm_projector\.0\.weight differs from model\.video_projector"):
        release_to_ours(broken)
    orphan = dict(release)
    orphan["model.vision_tower.extra"] = torch.zeros(1)
    with pytest.raises(CheckpointKeyError, match=r"model\.vision_tower\.extra has no twin"):
        release_to_ours(orphan)


def test_unknown_keys_are_listed_and_rotary_buffers_ignored(release):
    extra = dict(release)
    extra["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(4)
    assert "language_model.model.layers.0.self_attn.rotary_emb.inv_freq" not in release_to_ours(extra).model
    extra["model.image_newline"] = torch.zeros(1)
    extra["vision_head.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointKeyError, match=r"2 checkpoint keys .*model\.image_newline, vision_head\.weight"):
        release_to_ours(extra)
    with pytest.raises(CheckpointKeyError, match=r"1 model keys .*: head\.weight"):
        ours_to_release({"head.weight": torch.zeros(1)})


def test_check_keys_lists_missing_and_unexpected(model):
    weights = dict(model.state_dict())
    del weights["stab.balance"]
    weights["stab.surplus"] = torch.zeros(1)
    with pytest.raises(CheckpointKeyError, match=r"1 missing keys: stab\.balance; 1 unexpected keys: stab\.surplus"):
        check_keys(model, weights)
    del weights["stab.surplus"]
    check_keys(model, weights, ignore_missing=("stab.balance",))
