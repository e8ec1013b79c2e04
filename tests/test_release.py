"""Release checkpoint directories: real sharded files in the release layout, tiny sizes."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, AutoProcessor, PreTrainedTokenizerFast

from conftest import moving_square_frames, tiny_llama_config
from videopanda.cli import main as cli_main
from videopanda.data.transform import preprocess_frames
from videopanda.model.configuration_videopanda import IMAGE_TOKEN, VideoPandaConfig
from videopanda.model.convert import CheckpointKeyError, ours_to_release
from videopanda.model.llm import load_tokenizer
from videopanda.model.modeling_videopanda import VideoPandaForCausalLM, build_videopanda
from videopanda.model.release import export_release_checkpoint, load_release_checkpoint

WORDS = ["<unk>", "<s>", "</s>"] + [f"w{i}" for i in range(61)]  # 64 tokens, no <image>
TEACHER = {"embeddings.class_embedding": torch.randn(16), "post_layernorm.weight": torch.ones(16)}


def write_tokenizer(directory):
    vocab = {word: i for i, word in enumerate(WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    tokenizer.save_pretrained(directory)


def release_config_json():
    """A LLaVA-style config.json of the release's kind (LLaMA fields + mm_* and training keys)."""
    return {
        "architectures": ["LlavaLlamaForCausalLM"], "model_type": "llava_llama", "hidden_size": 32,
        "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": len(WORDS), "max_position_embeddings": 4096, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
        "rope_scaling": None, "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
        "tie_word_embeddings": False, "torch_dtype": "float16", "use_cache": True,
        "mm_hidden_size": 32, "mm_projector_type": "mlp2x_gelu", "mm_vision_tower": "LanguageBind/LanguageBind_Image",
        "mm_video_tower": "LanguageBind/LanguageBind_Video_merge", "image_aspect_ratio": "pad",
        "mm_use_im_start_end": False, "mm_use_im_patch_token": False, "tune_mm_mlp_adapter": False,
    }


@pytest.fixture
def source_model():
    """The random model whose weights the fake release holds (no <image> token yet)."""
    torch.manual_seed(0)
    config = VideoPandaConfig(text_config=tiny_llama_config(vocab_size=len(WORDS)), stab_hidden_size=32,
                              image_size=112, teacher_image_size=56, use_distillation=True, teacher_hidden_size=16)
    return VideoPandaForCausalLM(config).eval()


def write_release(directory, model, fmt):
    """Two shards in the release's file naming (+ index), tokenizer and config.json."""
    directory.mkdir()
    state = ours_to_release(model.state_dict(), teacher=TEACHER)
    state["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(4)  # older LLaMA checkpoints store it
    names = sorted(state)
    shards = [names[: len(names) // 2], names[len(names) // 2 :]]
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        if fmt == "bin":
            filename = f"pytorch_model-{i:05d}-of-00002.bin"
            torch.save({n: state[n] for n in shard}, directory / filename)
        else:
            filename = f"model-{i:05d}-of-00002.safetensors"
            save_file({n: state[n].clone() for n in shard}, str(directory / filename))
        weight_map.update(dict.fromkeys(shard, filename))
    index = "pytorch_model.bin.index.json" if fmt == "bin" else "model.safetensors.index.json"
    (directory / index).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (directory / "config.json").write_text(json.dumps(release_config_json()))
    write_tokenizer(directory)
    return directory


def video_batch(model, seed=0):
    """input_ids (1, L) with a video's placeholders between text tokens, and its frames."""
    visuals = preprocess_frames(moving_square_frames(8, 64, 128, seed=seed), image_size=112, teacher_image_size=56)
    grid = torch.tensor([[8, 8, 8]])
    counts = model.get_video_features(visuals.pixel_values, grid).tokens_per_frame
    placeholders = torch.full((int(counts.sum()),), model.config.image_token_id)
    input_ids = torch.cat([torch.tensor([1, 5, 6]), placeholders, torch.tensor([7, 8, 9])])[None]
    return {"input_ids": input_ids, "pixel_values_videos": visuals.pixel_values, "video_grid_thw": grid}


@pytest.mark.parametrize("fmt", ["bin", "safetensors"])
def test_release_shards_load_with_the_image_row_added(fmt, source_model, tmp_path):
    release = write_release(tmp_path / "videopanda_fitu", source_model, fmt)
    model, teacher = load_release_checkpoint(release, image_size=112, teacher_image_size=56)
    config = model.config
    assert (config.stab_hidden_size, config.patch_size, config.teacher_hidden_size) == (32, 14, 16)
    assert config.use_distillation
    assert (config.num_frames, config.chunk_length, config.lsd_stride) == (8, 4, 2)  # release defaults
    assert config.image_token_id == len(WORDS) and config.text_config.vocab_size == len(WORDS) + 1
    assert model.distill_head.layer_indices == source_model.distill_head.layer_indices
    assert set(teacher) == set(TEACHER)
    assert torch.equal(teacher["embeddings.class_embedding"], TEACHER["embeddings.class_embedding"])
    ours = model.state_dict()
    grown = ("language_model.model.embed_tokens.weight", "language_model.lm_head.weight")  # + the <image> row
    for name, tensor in source_model.state_dict().items():
        assert torch.equal(ours[name][: len(WORDS)] if name in grown else ours[name], tensor), name
    assert not model.get_input_embeddings().weight[len(WORDS)].any()
    text = torch.tensor([[1, 5, 6, 7, 8]])
    with torch.no_grad():
        logits = model(input_ids=text).logits
        assert torch.equal(logits[..., : len(WORDS)], source_model(input_ids=text).logits)
        assert torch.isfinite(model(**video_batch(model)).logits).all()


def test_export_then_load_gives_identical_logits(source_model, tmp_path):
    model, teacher = load_release_checkpoint(write_release(tmp_path / "release", source_model, "safetensors"))
    export_release_checkpoint(model, tmp_path / "exported", teacher=teacher,
                              tokenizer=load_tokenizer(tmp_path / "release"), max_shard_size="100KB")
    shards = sorted(p.name for p in (tmp_path / "exported").glob("model-*-of-*.safetensors"))
    assert len(shards) > 1 and (tmp_path / "exported" / "model.safetensors.index.json").is_file()
    written = json.loads((tmp_path / "exported" / "config.json").read_text())
    assert written["mm_hidden_size"] == 32 and written["num_hidden_layers"] == 2
    index = json.loads((tmp_path / "exported" / "model.safetensors.index.json").read_text())["weight_map"]
    for name in ("model.video_tower.patch_embedding.weight", "model.vision_tower.patch_embedding.weight",
                 "model.video_projector.0.weight", "model.video_tower_compressor.input_layer.weight",
                 "model.video_teacher.video_tower.embeddings.class_embedding", "model.layers.1.mlp.up_proj.weight",
                 "lm_head.weight"):
        assert name in index, name
    reloaded, reloaded_teacher = load_release_checkpoint(tmp_path / "exported")
    assert reloaded.config.image_token_id == model.config.image_token_id
    assert reloaded.config.to_diff_dict() == model.config.to_diff_dict()
    assert torch.equal(reloaded_teacher["embeddings.class_embedding"], teacher["embeddings.class_embedding"])
    batch = video_batch(model, seed=1)
    with torch.no_grad():
        assert torch.equal(model.eval()(**batch).logits, reloaded.eval()(**batch).logits)


def test_unknown_and_missing_keys_are_listed(source_model, tmp_path):
    release = write_release(tmp_path / "release", source_model, "safetensors")
    first = release / "model-00001-of-00002.safetensors"
    state = load_file(str(first))
    dropped = next(n for n in state if n.startswith("model.layers."))
    kept = {n: t for n, t in state.items() if n != dropped}
    save_file({**kept, "model.extra_head.weight": torch.zeros(2)}, str(first))
    index = json.loads((release / "model.safetensors.index.json").read_text())
    index["weight_map"]["model.extra_head.weight"] = first.name
    (release / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointKeyError, match=r"model\.extra_head\.weight"):
        load_release_checkpoint(release)
    del index["weight_map"]["model.extra_head.weight"]
    (release / "model.safetensors.index.json").write_text(json.dumps(index))
    save_file({n: t for n, t in state.items() if n != dropped}, str(first))
    with pytest.raises(CheckpointKeyError, match=rf"missing keys: language_model\.{dropped}"):
        load_release_checkpoint(release)


def test_a_directory_without_weights_is_named(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(release_config_json()))
    write_tokenizer(tmp_path)
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        load_release_checkpoint(tmp_path)


def test_convert_command_both_ways(source_model, tmp_path):
    release = write_release(tmp_path / "release", source_model, "bin")
    assert cli_main(["convert", "--release", str(release), "--out", str(tmp_path / "ours")]) == 0
    assert (tmp_path / "ours" / "teacher.safetensors").is_file()
    ours = VideoPandaForCausalLM.from_pretrained(tmp_path / "ours").eval()
    processor = AutoProcessor.from_pretrained(tmp_path / "ours")  # the converted directory holds its processor
    assert processor.template == "vicuna_v1_eval" and processor.video_processor.image_size == ours.config.image_size
    assert cli_main(["convert", "--to-release", "--model", str(tmp_path / "ours"), "--out", str(tmp_path / "back"),
                     "--teacher", str(tmp_path / "ours" / "teacher.safetensors")]) == 0
    back, teacher = load_release_checkpoint(tmp_path / "back")
    assert set(teacher) == set(TEACHER)
    batch = video_batch(ours)
    with torch.no_grad():
        assert torch.equal(ours(**batch).logits, back.eval()(**batch).logits)


def test_build_from_a_local_llm_directory(tmp_path):
    """build_videopanda on a plain HF LLM directory (config.json + safetensors + tokenizer)."""
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(tiny_llama_config(vocab_size=len(WORDS))).save_pretrained(tmp_path / "llm")
    write_tokenizer(tmp_path / "llm")
    model, tokenizer = build_videopanda(tmp_path / "llm", stab_hidden_size=32, image_size=112, teacher_image_size=56)
    assert tokenizer.convert_tokens_to_ids(IMAGE_TOKEN) == model.config.image_token_id == len(WORDS)
    assert tokenizer.pad_token is not None
    assert not model.get_input_embeddings().weight[len(WORDS)].any()
    with torch.no_grad():
        assert torch.isfinite(model(**video_batch(model)).logits).all()
    with pytest.raises(FileNotFoundError, match="not found"):
        build_videopanda(tmp_path / "absent")


def test_build_in_bfloat16_keeps_rope_frequencies_in_float32(tmp_path):
    """Rounded to bf16, RoPE's inv_freq would shift every position's rotation (as from_pretrained avoids)."""
    AutoModelForCausalLM.from_config(tiny_llama_config(vocab_size=len(WORDS))).save_pretrained(tmp_path / "llm")
    write_tokenizer(tmp_path / "llm")
    built = {dtype: build_videopanda(tmp_path / "llm", dtype, stab_hidden_size=32, image_size=112,
                                     teacher_image_size=56)[0] for dtype in (torch.float32, torch.bfloat16)}
    rope = {dtype: dict(model.named_buffers())["language_model.model.rotary_emb.inv_freq"]
            for dtype, model in built.items()}
    assert built[torch.bfloat16].dtype == torch.bfloat16
    assert rope[torch.bfloat16].dtype == torch.float32
    assert torch.equal(rope[torch.bfloat16], rope[torch.float32])
