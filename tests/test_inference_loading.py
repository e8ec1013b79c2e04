"""inference.loading: every kind of model directory is told apart and loads to the model it holds; a directory of
no model is a one-line error; bfloat16 weights keep the LLM's RoPE inv_freq in float32."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from conftest import moving_square_frames
from videopanda.cli import main as cli_main
from videopanda.inference import GenerationConfig, VideoPandaPredictor, cast_weights, load_model_dir
from videopanda.model.directory import (
    LORA_ADAPTER_DIR,
    ModelDirError,
    ModelDirKind,
    model_dir_kind,
    require_videopanda_dir,
)
from videopanda.model.llm import load_tokenizer
from videopanda.model.modeling_videopanda import VideoPandaForCausalLM
from videopanda.model.release import export_release_checkpoint
from videopanda.train.config import LoraSettings, ModelInit
from videopanda.train.lora import add_lora, merge_lora_output, save_lora_output
from videopanda.train.run import load_model

INV_FREQ = "language_model.model.rotary_emb.inv_freq"
SETTINGS = GenerationConfig(max_new_tokens=4, batch_size=1)


def inv_freq(model: torch.nn.Module) -> torch.Tensor:
    return dict(model.named_buffers())[INV_FREQ]  # not saved: absent from state_dict()


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory, tiny_videopanda_dir) -> Path:
    """A real (unmerged) LoRA output on the tiny model, its adapters non-zero (as after training)."""
    base = ModelInit(init=str(tiny_videopanda_dir))
    model, tokenizer = load_model(base)
    add_lora(model, LoraSettings(r=4, alpha=8, dropout=0.0))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)
    path = tmp_path_factory.mktemp("lora") / "lora-out"
    save_lora_output(model, tokenizer, base, path)
    return path


@pytest.fixture(scope="module")
def release_dir(tmp_path_factory, tiny_videopanda_dir) -> Path:
    path = tmp_path_factory.mktemp("release") / "tiny-release"
    model = VideoPandaForCausalLM.from_pretrained(tiny_videopanda_dir)
    return export_release_checkpoint(model, path, tokenizer=load_tokenizer(tiny_videopanda_dir))


def scores(model_dir: Path, dtype: str = "float32") -> torch.Tensor:
    """The greedy logits (steps, V) of one video question, through the predictor of ``ask``."""
    predictor = VideoPandaPredictor.from_pretrained(model_dir, SETTINGS, dtype=dtype)
    visuals = predictor.preprocess_video(moving_square_frames(8, 48, 64))
    return torch.cat(predictor.greedy_scores(visuals, "What moves?").scores).float()


def test_each_directory_kind_is_told_apart(tiny_videopanda_dir, lora_dir, release_dir, tmp_path):
    merged = shutil.copytree(lora_dir, tmp_path / "merged")
    merge_lora_output(merged)
    llm = tmp_path / "llm"
    VideoPandaForCausalLM.from_pretrained(tiny_videopanda_dir).language_model.save_pretrained(llm)
    assert model_dir_kind(tiny_videopanda_dir) is ModelDirKind.VIDEOPANDA
    assert model_dir_kind(lora_dir) is ModelDirKind.LORA_ADAPTER
    assert (merged / LORA_ADAPTER_DIR).is_dir() and model_dir_kind(merged) is ModelDirKind.VIDEOPANDA
    assert model_dir_kind(release_dir) is ModelDirKind.RELEASE
    assert model_dir_kind(llm) is ModelDirKind.LLM
    assert model_dir_kind(tmp_path / "absent") is model_dir_kind(tmp_path) is ModelDirKind.NOT_A_MODEL


def test_a_lora_output_loads_as_its_merged_directory(lora_dir, tiny_videopanda_dir, tmp_path):
    merged = merge_lora_output(shutil.copytree(lora_dir, tmp_path / "merged"))
    adapter = scores(lora_dir)
    assert not torch.allclose(adapter, scores(tiny_videopanda_dir))  # the adapter changes the answer's logits
    torch.testing.assert_close(adapter, scores(merged))
    loaded = load_model_dir(lora_dir)
    assert loaded.kind is ModelDirKind.LORA_ADAPTER and not any("lora_" in k for k in loaded.model.state_dict())


def test_a_lora_output_exports_to_the_release_layout_as_its_merged_model(lora_dir, tmp_path):
    merged = merge_lora_output(shutil.copytree(lora_dir, tmp_path / "merged"))
    assert cli_main(["convert", "--to-release", "--model", str(lora_dir), "--out", str(tmp_path / "exported")]) == 0
    assert model_dir_kind(tmp_path / "exported") is ModelDirKind.RELEASE
    torch.testing.assert_close(scores(tmp_path / "exported"), scores(merged))


def test_a_release_checkpoint_and_its_conversion_load_as_the_model_exported(release_dir, tiny_videopanda_dir, tmp_path):
    assert cli_main(["convert", "--release", str(release_dir), "--out", str(tmp_path / "converted")]) == 0
    original = scores(tiny_videopanda_dir)
    torch.testing.assert_close(scores(release_dir), original)
    torch.testing.assert_close(scores(tmp_path / "converted"), original)
    assert load_model_dir(release_dir).kind is ModelDirKind.RELEASE


@pytest.mark.slow  # the shared reduced quickstart
def test_the_quickstart_model_loads(quickstart_dir):
    loaded = load_model_dir(quickstart_dir / "model")
    assert loaded.kind is ModelDirKind.VIDEOPANDA and loaded.model.config.model_type == "videopanda"


@pytest.mark.parametrize("make", ["empty", "llm_config", "missing"])
def test_a_directory_of_no_video_panda_model_is_a_one_line_error(make, tmp_path):
    path = tmp_path / "dir"
    if make != "missing":
        path.mkdir()
    if make == "llm_config":
        (path / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(ModelDirError) as caught:
        VideoPandaPredictor.from_pretrained(path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    assert {"empty": "config.json", "llm_config": "videopanda train", "missing": "not found"}[make] in message
    with pytest.raises(ModelDirError, match="is not a Video-Panda model directory|not found"):
        require_videopanda_dir(path)


def test_a_lora_output_is_not_taken_for_a_saved_model(lora_dir):
    with pytest.raises(ModelDirError, match="unmerged LoRA output: merge it"):
        require_videopanda_dir(lora_dir)


def test_bfloat16_weights_keep_rope_inv_freq_in_float32(tiny_videopanda_dir, lora_dir, smollm2_tokenizer):
    exact = inv_freq(VideoPandaForCausalLM.from_pretrained(tiny_videopanda_dir))
    assert exact.dtype == torch.float32
    assert not torch.equal(exact.to(torch.bfloat16).float(), exact)  # a plain .to(bfloat16) rounds it
    for model_dir in (tiny_videopanda_dir, lora_dir):  # from_pretrained's dtype, and the cast of a rebuilt model
        model = load_model_dir(model_dir, dtype="bfloat16").model
        assert model.dtype == torch.bfloat16
        assert torch.equal(inv_freq(model), exact), model_dir
    in_memory = VideoPandaForCausalLM.from_pretrained(tiny_videopanda_dir)
    predictor = VideoPandaPredictor.for_model(in_memory, smollm2_tokenizer, SETTINGS, load_model_dir(
        tiny_videopanda_dir, dtype="bfloat16").precision)
    assert predictor.model.dtype == torch.bfloat16 and torch.equal(inv_freq(predictor.model), exact)
    assert in_memory.dtype == torch.float32  # a copy was cast, not the caller's model


def test_cast_weights_casts_saved_buffers(tiny_videopanda_dir):
    model = cast_weights(VideoPandaForCausalLM.from_pretrained(tiny_videopanda_dir), torch.bfloat16)
    state = model.state_dict()
    assert state["stab.lste.lmhra.pos_embed.0.running_mean"].dtype == torch.bfloat16  # saved: cast as a weight
    assert state["stab.lste.lmhra.pos_embed.0.num_batches_tracked"].dtype == torch.int64
