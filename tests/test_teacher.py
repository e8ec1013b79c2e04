"""Frozen LanguageBind video teacher: golden parity, loading a LanguageBind directory, padding patches."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import golden_cases
from videopanda.model.convert import release_to_ours
from videopanda.model.teacher import (
    TeacherConfig,
    VideoTeacher,
    load_teacher,
    teacher_patch_features,
    temporal_groups,
)

TINY = TeacherConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, image_size=56)


def random_teacher(config: TeacherConfig = TINY, seed: int = 0) -> VideoTeacher:
    torch.manual_seed(seed)
    teacher = VideoTeacher(config).eval()
    with torch.no_grad():
        for param in teacher.parameters():
            param.normal_(0, 0.2)
    return teacher


@pytest.mark.parametrize("case", golden_cases("teacher"))
def test_teacher_matches_release(case):
    meta = json.loads(case.with_suffix(".json").read_text())
    tensors = load_file(str(case.with_suffix(".safetensors")))
    teacher = VideoTeacher(TeacherConfig.from_dict(meta)).eval()
    teacher.load_state_dict(release_to_ours({k: v for k, v in tensors.items() if k.startswith("model.")}).teacher)
    videos = [k for k in tensors if k.startswith("input.video")]
    assert len(videos) == meta["videos"]
    for name in videos:
        chunks = tensors[name]  # (C, 3, 4, S, S)
        frames = chunks.transpose(1, 2).flatten(0, 1)  # (C*4, 3, S, S)
        lengths = torch.full((len(chunks),), chunks.shape[2])
        with torch.no_grad():
            out = teacher(frames, lengths)
        torch.testing.assert_close(out, tensors[name.replace("input.", "output.")], atol=1e-4, rtol=1e-5)


def test_temporal_groups_cut_video_runs_and_isolate_images():
    # two 8-frame videos (4 chunks), an image, a 12-frame video (3 chunks) with groups of 8
    groups = temporal_groups(torch.tensor([4, 4, 4, 4, 1, 4, 4, 4]), num_frames=8)
    assert groups.num_groups == 5 and groups.max_length == 8
    assert groups.position.tolist() == list(range(8)) * 2 + [0] + list(range(8)) + list(range(4))
    assert groups.key_mask.sum(1).tolist() == [8, 8, 1, 8, 4]


def test_groups_are_independent_and_match_separate_calls():
    teacher = random_teacher()
    frames = torch.randn(9, 3, 56, 56)
    together = teacher(frames, torch.tensor([4, 4, 1]))
    torch.testing.assert_close(together[:8], teacher(frames[:8], torch.tensor([4, 4])), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(together[8:], teacher(frames[8:], torch.tensor([1])), atol=1e-5, rtol=1e-5)
    shuffled = frames.clone()
    shuffled[:8] = frames[:8].flip(0)  # the image's features cannot depend on the video
    torch.testing.assert_close(teacher(shuffled, torch.tensor([4, 4, 1]))[8], together[8], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(teacher(shuffled[:8], torch.tensor([4, 4]))[0], together[7], atol=1e-3)


def test_padding_patches_and_frames_are_dropped():
    teacher = random_teacher()
    pixels = torch.randn(8, 4, 56, 56)
    pixels[:, 3] = 0
    pixels[:6, 3, 14:42, :] = 1  # letterboxed: patch rows 1-2 of 4 are real in frames 0-5
    pixels[6:] = 0  # padding frames
    features, counts = teacher_patch_features(teacher, pixels, torch.tensor([4, 4]))
    assert counts.tolist() == [8] * 6 + [0, 0]
    full = teacher(pixels[:, :3], torch.tensor([4, 4]))  # (8, 16, D)
    expected = full[:6].view(6, 4, 4, -1)[:, 1:3].reshape(-1, TINY.hidden_size)
    torch.testing.assert_close(features, expected)


def peft_name(name: str) -> str:
    """How LanguageBind names a weight when its encoder is saved inside the peft LoRA wrapper."""
    name = name.replace("encoder.", "encoder.base_model.model.")
    return name.replace("temporal_attn.q_proj.", "temporal_attn.q_proj.base_layer.")


def write_languagebind_dir(directory, teacher: VideoTeacher, fmt: str) -> None:
    """A LanguageBind_Video_merge-style directory: full-model config.json + vision_model/text_model weights."""
    vision = teacher.config.to_dict() | {"model_type": "clip_vision_model", "lora_r": 0, "projection_dim": 16}
    config = {"model_type": "LanguageBindVideo", "projection_dim": 16, "vision_config": vision,
              "text_config": {"hidden_size": 16, "num_hidden_layers": 1}}
    (directory / "config.json").write_text(json.dumps(config))
    rename = peft_name if fmt == "peft" else str
    weights = {f"vision_model.{rename(k)}": v.clone() for k, v in teacher.state_dict().items()}
    weights["vision_model.embeddings.position_ids"] = torch.arange(17)[None]
    weights["visual_projection.weight"] = torch.randn(16, 32)
    weights["text_model.final_layer_norm.weight"] = torch.ones(16)
    weights["logit_scale"] = torch.tensor(2.0)
    if fmt != "bin":
        save_file(weights, str(directory / "model.safetensors"))
    else:
        torch.save(weights, directory / "pytorch_model.bin")


@pytest.mark.parametrize("fmt", ["safetensors", "bin", "peft"])
def test_load_teacher_round_trip(tmp_path, fmt):
    teacher = random_teacher()
    write_languagebind_dir(tmp_path, teacher, fmt)
    loaded = load_teacher(tmp_path)
    assert loaded.config == teacher.config and not loaded.training
    assert not any(p.requires_grad for p in loaded.parameters())
    frames = torch.randn(8, 3, 56, 56)
    torch.testing.assert_close(loaded(frames), teacher(frames), atol=0, rtol=0)


def test_load_teacher_names_what_is_wrong(tmp_path):
    with pytest.raises(ValueError, match="no config.json"):
        load_teacher(tmp_path)
    teacher = random_teacher()
    write_languagebind_dir(tmp_path, teacher, "safetensors")
    config = json.loads((tmp_path / "config.json").read_text())
    config["vision_config"]["num_hidden_layers"] = 4
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="missing .*encoder.layers.3"):
        load_teacher(tmp_path)


def test_wrong_frame_size_is_refused():
    with pytest.raises(ValueError, match=r"\(F, 3, 56, 56\)"):
        random_teacher()(torch.randn(2, 3, 28, 28))


def test_unmerged_lora_teacher_is_refused(tmp_path):
    write_languagebind_dir(tmp_path, random_teacher(), "safetensors")
    weights = load_file(str(tmp_path / "model.safetensors"))
    weights["vision_model.encoder.layers.0.temporal_attn.q_proj.lora_A.default.weight"] = torch.zeros(2, 32)
    save_file(weights, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="unmerged LoRA"):
        load_teacher(tmp_path)
