"""LoRA through `videopanda train`: adapters on the LLM only, save, merge, the merged model answers as the unmerged
one, resume from a checkpoint; QLoRA's clear error without CUDA."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoProcessor

from conftest import REPO_ROOT
from test_train_support import stage_overrides, write_tiny_llm, write_video_dataset
from videopanda.cli import main
from videopanda.data.processing_videopanda import VideoPandaProcessor
from videopanda.inference import GenerationConfig, VideoPandaPredictor
from videopanda.model.directory import LORA_ADAPTER_DIR
from videopanda.model.llm import load_tokenizer
from videopanda.model.modeling_videopanda import VideoPandaForCausalLM
from videopanda.model.release import export_release_checkpoint, load_release_checkpoint
from videopanda.train.config import load_train_config
from videopanda.train.lora import NON_LLM_WEIGHTS, load_lora_output
from videopanda.train.run import train_stage

LORA_CONFIG = REPO_ROOT / "configs" / "finetune_lora.yaml"  # the shipped config, sized down by overrides
LORA = {"gradient_accumulation_steps": 1, "data.num_workers": 0, "model.lora.r": 4, "model.lora.alpha": 8,
        "model.lora.dropout": 0.0, "optim.lr": 2e-2}


@pytest.fixture(scope="module")
def world(tmp_path_factory, smollm2_tokenizer) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lora_world")
    llm = write_tiny_llm(root / "llm", smollm2_tokenizer)
    annotations = write_video_dataset(root / "data", num_videos=4)
    prealigned = train_stage(load_train_config(None, stage_overrides(llm, annotations, root / "prealign", "prealign")))
    return {"root": root, "annotations": annotations, "prealigned": prealigned}


def train_cli(*args: str) -> int:
    return main(["train", "--config", str(LORA_CONFIG), *args])


def finetune_overrides(world, output: Path, **extra) -> list[str]:
    return stage_overrides(world["prealigned"], world["annotations"], output, "finetune", **{**LORA, **extra})


@pytest.fixture(scope="module")
def lora_run(world) -> Path:
    output = world["root"] / "lora"
    assert train_cli("--merge", *finetune_overrides(world, output, max_steps=2)) == 0
    return output


def test_lora_trains_adapters_not_the_base_llm(world, lora_run):
    before = load_file(str(world["prealigned"] / "model.safetensors"))
    adapter = load_file(str(lora_run / LORA_ADAPTER_DIR / "adapter_model.safetensors"))
    assert adapter and all("lora_" in name for name in adapter)
    assert any(name.endswith("lora_B.weight") and value.abs().sum() > 0 for name, value in adapter.items())
    unmerged, _ = load_lora_output(lora_run, merge=False)
    base_llm = {k.removeprefix("language_model.base_model.model."): v for k, v in unmerged.state_dict().items()
                if k.startswith("language_model.") and "lora_" not in k}
    for name, value in base_llm.items():  # peft's base_layer is the frozen original
        original = "language_model." + name.replace(".base_layer", "")
        torch.testing.assert_close(value, before[original], rtol=0, atol=0, msg=original)
    stab = load_file(str(lora_run / NON_LLM_WEIGHTS))
    assert any(not torch.equal(stab[k], before[k]) for k in stab if k.startswith("stab."))  # the STAB trained fully


def test_merged_model_answers_exactly_as_the_unmerged_one(world, lora_run, make_video):
    merged = VideoPandaForCausalLM.from_pretrained(lora_run).eval()
    unmerged, tokenizer = load_lora_output(lora_run, merge=False)
    unmerged.eval()
    changed = merged.state_dict()["language_model.model.layers.0.self_attn.q_proj.weight"]
    original = load_file(str(world["prealigned"] / "model.safetensors"))[
        "language_model.model.layers.0.self_attn.q_proj.weight"
    ]
    assert not torch.equal(changed, original)  # the adapter was folded in

    config = GenerationConfig(max_new_tokens=8, batch_size=2)
    merged_predictor = VideoPandaPredictor.from_pretrained(lora_run, config)
    unmerged_predictor = VideoPandaPredictor(unmerged, VideoPandaProcessor.for_model(tokenizer, unmerged.config,
                                                                           template=merged_predictor.template), config)
    videos = [merged_predictor.load_video(make_video(f"q{i}.mp4", seed=i)) for i in range(2)]
    saved = AutoProcessor.from_pretrained(lora_run)  # the merged directory holds its processor
    assert saved.template == merged_predictor.template
    assert saved.video_processor.to_dict() == merged_predictor.processor.video_processor.to_dict()
    questions = ["What moves?", "Describe the video."]
    batch = merged_predictor.processor.batch_prompts(questions, videos)
    with torch.no_grad():
        logits = [model(**{k: v for k, v in batch.items()}).logits for model in (merged, unmerged)]
    torch.testing.assert_close(logits[0], logits[1], rtol=1e-4, atol=1e-4)
    tokens = [model.generate(**batch, max_new_tokens=8, pad_token_id=tokenizer.pad_token_id)
              for model in (merged, unmerged)]
    assert torch.equal(tokens[0], tokens[1])
    assert merged_predictor.answer(videos, questions) == unmerged_predictor.answer(videos, questions)


def test_merged_model_exports_to_the_release_layout(lora_run, tmp_path):
    merged = VideoPandaForCausalLM.from_pretrained(lora_run)
    export_release_checkpoint(merged, tmp_path / "release", tokenizer=load_tokenizer(lora_run))
    reloaded, _ = load_release_checkpoint(tmp_path / "release")
    mine = merged.state_dict()
    for name, value in reloaded.state_dict().items():
        torch.testing.assert_close(value, mine[name], rtol=0, atol=0, msg=name)


def test_lora_resumes_from_its_checkpoint_to_the_same_adapter(world, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert train_cli(*finetune_overrides(world, straight, max_steps=4)) == 0
    assert train_cli(*finetune_overrides(world, resumed, max_steps=4, save_steps=2)) == 0
    shutil.rmtree(resumed / "checkpoint-4")  # as if the run had died after its step-2 checkpoint
    (resumed / LORA_ADAPTER_DIR / "adapter_model.safetensors").unlink()
    assert train_cli(*finetune_overrides(world, resumed, max_steps=4, save_steps=2)) == 0
    assert (resumed / "checkpoint-4" / "trainer_state.json").is_file()
    for part in (f"{LORA_ADAPTER_DIR}/adapter_model.safetensors", NON_LLM_WEIGHTS):
        a, b = load_file(str(straight / part)), load_file(str(resumed / part))
        assert a.keys() == b.keys()
        for name in a:
            torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)


def test_an_unmerged_lora_output_is_the_next_stages_init(world, tmp_path):
    unmerged = tmp_path / "unmerged"
    assert train_cli(*finetune_overrides(world, unmerged)) == 0
    assert not (unmerged / "config.json").exists()
    overrides = stage_overrides(world["prealigned"], world["annotations"], tmp_path / "next", "finetune",
                                **{"model.init": unmerged})
    follow = train_stage(load_train_config(None, overrides))
    assert VideoPandaForCausalLM.from_pretrained(follow).config.model_type == "videopanda"


def test_prealign_ignores_lora_and_keeps_the_llm_frozen(world, tmp_path, smollm2_tokenizer, caplog):
    llm = write_tiny_llm(tmp_path / "llm", smollm2_tokenizer)
    overrides = stage_overrides(llm, world["annotations"], tmp_path / "pre", "prealign", **{"model.lora.r": 4})
    with caplog.at_level("INFO", logger="videopanda"):
        output = train_stage(load_train_config(None, overrides))
    assert "keeps the LLM frozen: model.lora ignored" in caplog.text
    assert (output / "model.safetensors").is_file() and not (output / LORA_ADAPTER_DIR).exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU error of QLoRA")
def test_qlora_without_cuda_is_a_one_line_error(world, tmp_path, capsys):
    overrides = finetune_overrides(world, tmp_path / "q", **{"model.load_in_4bit": True})
    assert train_cli(*overrides) == 1
    message = capsys.readouterr().err
    assert "model.load_in_4bit" in message and "CUDA" in message and message.count("\n") == 1
