"""Shared helpers of the training tests (no tests here): a tiny LLM directory, a synthetic video dataset."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from conftest import moving_square_frames, tiny_llama_config

COLORS = [
    (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255), (255, 255, 255), (0, 0, 0)
]
# A tiny STAB: 56x56 student frames (2x2 LSD grid, 7 tokens per frame), 28x28 teacher frames.
TINY_MODEL = {"stab_hidden_size": 32, "image_size": 56, "teacher_image_size": 28, "teacher_hidden_size": 32}


def write_tiny_llm(directory: Path, tokenizer, seed: int = 0) -> Path:
    """A 2-layer width-32 random LLaMA sized for ``tokenizer``, saved with it (a valid ``model.init``)."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    config = tiny_llama_config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def write_tiny_teacher(directory: Path, seed: int = 0) -> Path:
    """A random 2-layer LanguageBind video tower at 28x28, saved as a LanguageBind directory."""
    from safetensors.torch import save_file

    from videopanda.model.teacher import TeacherConfig, VideoTeacher

    config = TeacherConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=TINY_MODEL["teacher_image_size"])
    torch.manual_seed(seed)
    teacher = VideoTeacher(config)
    with torch.no_grad():
        for param in teacher.parameters():
            param.normal_(0, 0.2)
    directory.mkdir(parents=True, exist_ok=True)
    config_json = {"model_type": "LanguageBindVideo", "vision_config": config.to_dict()}
    (directory / "config.json").write_text(json.dumps(config_json))
    save_file({f"vision_model.{k}": v.contiguous() for k, v in teacher.state_dict().items()},
              str(directory / "model.safetensors"))
    return directory


def write_video_dataset(root: Path, num_videos: int = 8) -> Path:
    """Real mp4 files of moving squares + one Video-LLaVA JSON whose samples all have the same text length."""
    from videopanda.data.video_writer import write_video

    root.mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(num_videos):
        frames = moving_square_frames(16, 48, 64, color=COLORS[i % len(COLORS)], seed=i)
        write_video(root / f"v{i}.mp4", frames, fps=8.0)
        items.append({
            "id": f"v{i}", "video": f"v{i}.mp4",
            "conversations": [{"from": "human", "value": "<video>\nDescribe the video."},
                              {"from": "gpt", "value": "A square moves to the right."}],
        })
    annotations = root / "train.json"
    annotations.write_text(json.dumps(items))
    return annotations


def stage_overrides(llm_dir: Path, annotations: Path, output_dir: Path, stage: str, **extra) -> list[str]:
    """``key=value`` overrides of a tiny fp32 CPU run of ``stage``."""
    values = {
        "stage": stage, "output_dir": str(output_dir), "model.init": str(llm_dir),
        "model.use_distillation": False, "data.annotation_files": json.dumps([str(annotations)]),
        "data.media_root": str(annotations.parent), "data.fraction": 1.0, "per_device_batch_size": 2,
        "max_steps": 1, "precision": "fp32", "gradient_checkpointing": False, "save_steps": 1000,
        "logging_steps": 1, "optim.warmup_ratio": 0.0,
    }
    if not Path(str(llm_dir), "config.json").read_text().count('"videopanda"'):
        values["model.config"] = json.dumps(TINY_MODEL)
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]
