"""Long videos: more frames than the model trained with at inference (`ask --num-frames`), a 32-frame training
step with the quickstart's STAB geometry, and activation checkpointing that covers the STAB."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import small_videopanda_config
from test_train_support import write_tiny_llm, write_video_dataset
from videopanda.cli import main
from videopanda.config import ConfigError
from videopanda.data.decode import find_video_file
from videopanda.data.synth import QA_DIR
from videopanda.inference import GenerationConfig, VideoPandaPredictor
from videopanda.model.modeling_videopanda import VideoPandaForCausalLM
from videopanda.quickstart.config import QuickstartConfig
from videopanda.train.config import load_train_config
from videopanda.train.run import setup_stage, train_stage

pytestmark = pytest.mark.slow


def held_out_video(quickstart_dir: Path) -> Path:
    question = json.loads((quickstart_dir / "data" / QA_DIR / "test_q.json").read_text())[0]
    return find_video_file(quickstart_dir / "data" / QA_DIR / "videos", question["video_name"])


def test_ask_with_32_frames_on_a_model_trained_with_8(quickstart_dir, capsys):
    model_dir = quickstart_dir / "model"
    assert VideoPandaForCausalLM.config_class.from_pretrained(model_dir).num_frames == 8
    video = held_out_video(quickstart_dir)
    predictor = VideoPandaPredictor.from_pretrained(model_dir, GenerationConfig(num_frames=32, max_new_tokens=4))
    visuals = predictor.load_video(video)
    assert visuals.pixel_values.shape[0] == 32
    prompt = predictor.processor.batch_prompts(["What colour?"], [visuals])
    eight = VideoPandaPredictor.from_pretrained(model_dir, GenerationConfig(max_new_tokens=4))
    prompt8 = eight.processor.batch_prompts(["What colour?"], [eight.load_video(video)])
    placeholders = [int((p["input_ids"] == predictor.model.config.image_token_id).sum()) for p in (prompt, prompt8)]
    assert placeholders[0] == 4 * placeholders[1]  # 4x the frames, 4x the visual tokens (same frame size)

    assert main(["ask", "--model", str(model_dir), "--video", str(video), "--num-frames", "32",
                 "--max-new-tokens", "4", "--json", "What colour is the object?"]) == 0
    reply = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert isinstance(reply["answer"], str)


def test_a_frame_count_that_does_not_split_into_chunks_is_one_line(quickstart_dir, capsys):
    assert main(["ask", "--model", str(quickstart_dir / "model"), "--video", str(held_out_video(quickstart_dir)),
                 "--num-frames", "6", "q?"]) == 1
    error = capsys.readouterr().err
    errors = [line for line in error.splitlines() if ": error: " in line]  # progress bars may precede it
    assert len(errors) == 1 and "multiple of the chunk length 4" in errors[0] and "Traceback" not in error


def test_a_32_frame_training_step_with_the_quickstart_stab(tmp_path, smollm2_tokenizer):
    """The quickstart's STAB geometry, 32 frames per video, checkpointing on; a tiny LLM (the frame count
    only reaches the STAB and the data pipeline, SmolLM2 would add 540 MB to save and reload)."""
    annotations = write_video_dataset(tmp_path / "data", num_videos=2)
    llm = write_tiny_llm(tmp_path / "llm", smollm2_tokenizer)
    overrides = [
        "stage=finetune", f"output_dir={tmp_path / 'long'}", f"model.init={llm}", "model.use_distillation=false",
        f"model.config={json.dumps(QuickstartConfig().model)}", "model.num_frames=32",
        f"data.annotation_files={json.dumps([str(annotations)])}", f"data.media_root={annotations.parent}",
        "per_device_batch_size=1", "max_steps=1", "precision=fp32", "gradient_checkpointing=true",
        "save_steps=1000", "optim.warmup_ratio=0.0",
    ]
    config = load_train_config(None, overrides)
    sample = setup_stage(config).dataset[0]
    assert sample.pixel_values_videos.shape[0] == 32 and sample.video_grid_thw[:, 0].tolist() == [32]
    output = train_stage(config)
    assert VideoPandaForCausalLM.from_pretrained(output).config.num_frames == 32
    with pytest.raises(ConfigError, match="model.num_frames"):
        setup_stage(load_train_config(None, overrides + ["model.num_frames=30"]))


def saved_activation_bytes(model, batch) -> int:
    """Bytes the autograd graph keeps for the backward pass during one STAB forward."""
    total = 0

    def pack(tensor):
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model.stab(*batch)
    out.tokens.square().mean().backward()
    return total


def test_activation_checkpointing_covers_the_stab(smollm2_tokenizer):
    torch.manual_seed(0)
    model = VideoPandaForCausalLM(small_videopanda_config(smollm2_tokenizer, stab_dropout=0.0)).train()
    pixel_values = torch.randn(16, 4, 112, 112)
    pixel_values[:, 3] = 1.0
    batch = (pixel_values, torch.tensor([4, 4, 4, 4]))
    plain = saved_activation_bytes(model, batch)
    plain_grads = {n: p.grad.clone() for n, p in model.stab.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.activation_checkpointing_enable()
    assert model.stab.gstra.gradient_checkpointing and model.stab.lsd.gradient_checkpointing
    checkpointed = saved_activation_bytes(model, batch)
    assert checkpointed < 0.8 * plain, (checkpointed, plain)
    for name, param in model.stab.named_parameters():
        if name in plain_grads:
            torch.testing.assert_close(param.grad, plain_grads[name], rtol=1e-5, atol=1e-6, msg=name)
