"""VideoPandaForCausalLM keeps transformers' contract for a causal LM: what transformers' generation tests
check (prompt + new tokens, inputs_embeds, continuing from a cache, batched = one by one, left padding), the
forward's cache and output flags, resizing, meta-device init, and the Auto classes after ``import videopanda``."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from conftest import moving_square_frames, small_videopanda_config
from videopanda.data.collator import VideoPandaCollator
from videopanda.data.conversation import Turn
from videopanda.data.processing_videopanda import VideoPandaProcessor
from videopanda.data.transform import preprocess_frames
from videopanda.model.modeling_videopanda import VideoPandaForCausalLM

QUESTION = [Turn("user", "<video>\nWhich colour moves?")]
GREEDY = dict(max_new_tokens=4, min_new_tokens=4, do_sample=False)


def video(height, width, seed=0):
    return preprocess_frames(moving_square_frames(8, height, width, seed=seed), image_size=112, teacher_image_size=56)


@pytest.fixture(scope="module")
def tiny(smollm2_tokenizer):
    torch.manual_seed(0)
    config = small_videopanda_config(smollm2_tokenizer, stab_dropout=0.0)
    config._attn_implementation = "eager"  # attention weights for output_attentions
    model = VideoPandaForCausalLM(config).eval()
    return model, VideoPandaProcessor.for_model(smollm2_tokenizer, config)


@pytest.fixture(scope="module")
def prompt(tiny, smollm2_tokenizer):
    _, processor = tiny
    return VideoPandaCollator(smollm2_tokenizer.pad_token_id, padding_side="left")(
        [processor.encode_prompt(QUESTION, video(64, 128))])


def generate(model, inputs, **kwargs):
    return model.generate(**inputs, **{**GREEDY, "pad_token_id": 0, **kwargs})


def test_generate_returns_the_prompt_then_the_new_tokens(tiny, prompt):
    model, _ = tiny
    out = generate(model, prompt)
    length = prompt["input_ids"].shape[1]
    assert out.shape == (1, length + 4) and torch.equal(out[:, :length], prompt["input_ids"])
    with torch.no_grad():
        first = model(**prompt).logits[0, -1].argmax()
    assert int(out[0, length]) == int(first)  # the first new token is the forward's greedy one


def test_generate_accepts_inputs_embeds(tiny, prompt):
    model, _ = tiny
    with torch.no_grad():
        video_features = model.get_video_features(prompt["pixel_values_videos"], prompt["video_grid_thw"])
        embeds = model.embed_inputs(prompt["input_ids"], video_features)  # (1, L, D)
    out = model.generate(inputs_embeds=embeds, attention_mask=prompt["attention_mask"], pad_token_id=0, **GREEDY)
    assert torch.equal(out, generate(model, prompt)[:, prompt["input_ids"].shape[1] :])  # new tokens only


def test_generation_continues_from_a_returned_cache_without_the_frames(tiny, prompt):
    model, _ = tiny
    one_shot = generate(model, prompt, max_new_tokens=6, min_new_tokens=6)
    first = generate(model, prompt, max_new_tokens=3, min_new_tokens=3, return_dict_in_generate=True)
    sequences = first.sequences  # (1, L + 3)
    second = model.generate(input_ids=sequences, attention_mask=torch.ones_like(sequences), cache=first.cache,
                            pad_token_id=0, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert torch.equal(second, one_shot)


def test_batched_left_padded_generation_equals_one_by_one(tiny, smollm2_tokenizer):
    model, processor = tiny
    samples = [processor.encode_prompt(QUESTION, video(64, 128)), processor.encode_prompt([Turn("user", "Hi")]),
               processor.encode_prompt(QUESTION, video(128, 64, seed=1))]
    left = VideoPandaCollator(smollm2_tokenizer.pad_token_id, padding_side="left")
    batch = left(samples)
    assert not bool(batch["attention_mask"][1, 0])  # the text-only row is left-padded
    batched = generate(model, batch)[:, batch["input_ids"].shape[1] :]
    for row, sample in enumerate(samples):
        alone = left([sample])
        assert torch.equal(batched[row], generate(model, alone)[0, alone["input_ids"].shape[1] :])


def test_forward_honours_the_cache(tiny, prompt):
    model, _ = tiny
    ids = prompt["input_ids"]
    with torch.no_grad():
        full = model(**prompt).logits[:, -1]  # (1, V)
        head = model(input_ids=ids[:, :-1], attention_mask=prompt["attention_mask"][:, :-1],
                     pixel_values_videos=prompt["pixel_values_videos"], video_grid_thw=prompt["video_grid_thw"],
                     use_cache=True)
        for name in ("cache", "past_key_values"):  # transformers 5's name and the one it replaced
            step = model(input_ids=ids[:, -1:], attention_mask=prompt["attention_mask"], **{name: head.cache},
                         use_cache=True).logits[:, -1]
            torch.testing.assert_close(step, full, rtol=1e-4, atol=1e-4)
            head.cache.crop(-1)  # drop the step: the next name starts from the prompt head again


def test_return_dict_false_gives_a_tuple(tiny, prompt):
    model, _ = tiny
    with torch.no_grad():
        as_tuple = model(**prompt, return_dict=False, use_cache=False)
        as_dict = model(**prompt, use_cache=False)
    assert isinstance(as_tuple, tuple) and torch.equal(as_tuple[0], as_dict.logits)


def test_output_flags_from_arguments_and_config(tiny, prompt):
    model, _ = tiny
    layers = model.config.text_config.num_hidden_layers
    with torch.no_grad():
        out = model(**prompt, output_attentions=True, output_hidden_states=True)
        assert len(out.attentions) == layers and len(out.hidden_states) == layers + 1
        assert model(**prompt).hidden_states is None
        model.config.output_hidden_states = True
        try:
            assert len(model(**prompt).hidden_states) == layers + 1
        finally:
            model.config.output_hidden_states = False


def test_resize_token_embeddings_resizes_input_and_output_with_the_image_row(smollm2_tokenizer, prompt):
    torch.manual_seed(0)
    model = VideoPandaForCausalLM(small_videopanda_config(smollm2_tokenizer, stab_dropout=0.0)).eval()
    vocab = model.config.text_config.vocab_size
    image_row = model.get_input_embeddings().weight[model.config.image_token_id].clone()
    model.resize_token_embeddings(vocab + 8)
    assert model.get_input_embeddings().weight.shape[0] == vocab + 8
    assert model.get_output_embeddings().weight.shape[0] == vocab + 8
    assert model.config.text_config.vocab_size == vocab + 8
    assert torch.equal(model.get_input_embeddings().weight[model.config.image_token_id], image_row)
    with torch.no_grad():
        assert model(**prompt).logits.shape[-1] == vocab + 8


def test_meta_device_init_sets_every_buffer_and_the_zero_branches(smollm2_tokenizer):
    config = small_videopanda_config(smollm2_tokenizer)
    with torch.device("meta"):
        model = VideoPandaForCausalLM(config)
    model.to_empty(device="cpu")
    model.init_weights()
    held = model.stab.lste.unused_lmhra.pos_embed[0]
    norms = [m for m in model.stab.modules() if isinstance(m, nn.BatchNorm3d) and m is not held]
    assert norms and all(bool((m.running_var == 1).all()) and not m.running_mean.any()
                         and int(m.num_batches_tracked) == 0 for m in norms)
    fresh = VideoPandaForCausalLM(config)
    buffers = dict(fresh.stab.named_buffers())  # the BatchNorms' statistics, the never-called LMHRA's held zeros
    assert all(torch.equal(b, buffers[name]) for name, b in model.stab.named_buffers()), "buffers differ from init"
    zero = [name for name, p in fresh.stab.named_parameters() if not p.any()]
    assert zero and all(not model.stab.get_parameter(name).any() for name in zero)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_import_videopanda_registers_the_auto_classes_without_torch(tiny, tmp_path):
    model, processor = tiny
    model.save_pretrained(tmp_path)
    processor.tokenizer.save_pretrained(tmp_path)
    script = (
        "import sys, videopanda\n"
        "assert 'torch' not in sys.modules\n"
        "from transformers import AutoModelForCausalLM\n"
        f"model = AutoModelForCausalLM.from_pretrained({str(tmp_path)!r})\n"
        "print(type(model).__name__)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["VideoPandaForCausalLM"]
