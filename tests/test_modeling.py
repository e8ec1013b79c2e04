"""VideoPandaForCausalLM on a tiny random LLaMA (the SmolLM2 run is in test_smollm2.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from conftest import moving_square_frames, small_videopanda_config, tiny_llama_config
from videopanda.data.collator import VideoPandaCollator
from videopanda.data.conversation import Turn
from videopanda.data.processing_videopanda import VideoPandaProcessor
from videopanda.data.transform import preprocess_frames
from videopanda.model.configuration_videopanda import IMAGE_TOKEN
from videopanda.model.modeling_videopanda import VideoPandaForCausalLM, patch_token_mask, pool_patch_grid

QA = [Turn("user", "<video>\nWhich colour moves?"), Turn("assistant", "red")]


def video(height, width, seed=0, size=112, num_real=8):
    frames = moving_square_frames(num_real, height, width, seed=seed)
    return preprocess_frames(frames, image_size=size, teacher_image_size=size // 2)


def teacher_patch_counts(teacher_pixel_values, patch_size=14):
    """(F,) real teacher patches per frame, from the teacher-scale mask channel."""
    return (F.avg_pool2d(teacher_pixel_values[:, 3:], patch_size).flatten(1) > 0).sum(1)


@pytest.fixture
def tiny(smollm2_tokenizer):
    torch.manual_seed(0)
    config = small_videopanda_config(smollm2_tokenizer, use_distillation=True, teacher_hidden_size=16)
    return VideoPandaForCausalLM(config), VideoPandaProcessor.for_model(smollm2_tokenizer, config)


@pytest.fixture
def mixed_batch(tiny, smollm2_tokenizer):
    """Two videos of opposite aspect ratios and one text-only sample, right-padded."""
    _, processor = tiny
    samples = [processor.encode(QA, video(64, 128)), processor.encode(QA, video(128, 64, seed=1)),
               processor.encode([Turn("user", "Hi"), Turn("assistant", "Hello")], None)]
    return VideoPandaCollator(smollm2_tokenizer.pad_token_id)(samples)


def test_mixed_batch_forward_backward_reaches_every_part(tiny, mixed_batch):
    model, _ = tiny
    out = model(**mixed_batch)
    assert out.logits.shape[:2] == (mixed_batch["input_ids"].shape[0], len(out.logit_positions))
    assert torch.isfinite(out.loss) and out.distill_loss is None and torch.equal(out.loss, out.lm_loss)
    out.loss.backward()
    for prefix in ("stab.", "projector.", "language_model."):
        part = [p for n, p in model.named_parameters() if n.startswith(prefix)]
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part)


def test_a_text_only_batch_runs_the_stab_when_every_forward_must_and_keeps_its_statistics(tiny, smollm2_tokenizer):
    """Under ZeRO-3 a rank's text-only batch still runs the STAB and projector (in the training mode the other
    ranks run them in): every visual parameter gets a (zero) gradient, the loss and the BatchNorm statistics
    are as without that run."""
    model, processor = tiny
    batch = VideoPandaCollator(smollm2_tokenizer.pad_token_id)(
        [processor.encode([Turn("user", "Hi"), Turn("assistant", "Hello")], None)])
    model.train()
    plain = model(**batch).loss
    buffers = {name: b.clone() for name, b in model.stab.named_buffers()}
    model.stab_in_every_forward = True
    modes = []
    hook = model.stab.lste.lmhra.register_forward_hook(lambda module, args, output: modes.append(module.training))
    out = model(**batch)
    hook.remove()
    assert modes == [True]  # as on a rank with video: the same parameters touched in the same order
    assert torch.equal(out.loss, plain)
    assert all(torch.equal(b, buffers[name]) for name, b in model.stab.named_buffers())
    out.loss.backward()
    visual = [(n, p) for n, p in model.named_parameters() if n.startswith(("stab.", "projector."))]
    assert all(p.grad is not None and not p.grad.any() for _, p in visual), [n for n, p in visual if p.grad is None]


def test_loss_on_kept_logits_equals_the_loss_on_all_logits(tiny, mixed_batch):
    """With labels only the labelled positions get logits; the loss is the full-vocabulary one all the same."""
    model = tiny[0].eval()  # no dropout: the two forwards must see the same network
    labels = mixed_batch["labels"]
    out = model(**mixed_batch)
    full = model(**{k: v for k, v in mixed_batch.items() if k != "labels"}).logits  # (B, L, V)
    assert full.shape[:2] == labels.shape
    targets = labels[:, 1:].masked_fill(mixed_batch["input_ids"][:, 1:] == model.config.image_token_id, -100)
    expected = torch.nn.functional.cross_entropy(
        full[:, :-1].flatten(0, 1).float(), targets.flatten(), ignore_index=-100
    )
    assert 0 < len(out.logit_positions) < labels.shape[1] - 1
    assert torch.allclose(out.loss, expected, atol=1e-5)
    assert torch.allclose(out.logits, full[:, out.logit_positions], atol=1e-5)


def test_video_features_match_the_placeholders(tiny, mixed_batch):
    model, _ = tiny
    video = model.get_video_features(mixed_batch["pixel_values_videos"], mixed_batch["video_grid_thw"])
    features, counts, grid_hw = video.pooler_output, video.tokens_per_frame, video.grid_hw
    assert video.last_hidden_state.shape == (16, int(counts.max()), model.config.stab_hidden_size)
    assert features.shape == (int(counts.sum()), model.config.llm_hidden_size)
    assert int(counts.sum()) == int((mixed_batch["input_ids"] == model.config.image_token_id).sum())
    assert grid_hw[0].tolist() == [2, 4] and grid_hw[8].tolist() == [4, 2]  # wide, then tall


def test_placeholder_positions_are_never_learned(tiny, mixed_batch):
    model, _ = tiny
    labels = mixed_batch["input_ids"].clone()  # a careless collator: labels on visual positions too
    labels[mixed_batch["attention_mask"] == 0] = -100
    out = model(**{**mixed_batch, "labels": labels})
    text_only = labels.masked_fill(labels == model.config.image_token_id, -100)
    reference = model(**{**mixed_batch, "labels": text_only})
    assert torch.allclose(out.lm_loss, reference.lm_loss)


def test_batched_generation_equals_one_by_one(tiny, smollm2_tokenizer):
    model, processor = tiny
    model.eval()
    prompts = [processor.encode_prompt(QA[:1], video(64, 128)), processor.encode_prompt(QA[:1], video(128, 64, seed=1)),
               processor.encode_prompt([Turn("user", "Hi")], None)]
    left = VideoPandaCollator(smollm2_tokenizer.pad_token_id, padding_side="left")
    kwargs = dict(max_new_tokens=4, min_new_tokens=4, pad_token_id=smollm2_tokenizer.pad_token_id)
    inputs = left(prompts)
    batched = model.generate(**inputs, **kwargs)[:, inputs["input_ids"].shape[1] :]  # (B, T_new)
    assert batched.shape == (3, 4)
    for row, prompt in enumerate(prompts):
        alone = left([prompt])
        assert batched[row].tolist() == model.generate(**alone, **kwargs)[0, alone["input_ids"].shape[1] :].tolist()
    assert not bool((batched == model.config.image_token_id).any())


def test_generation_refuses_right_padded_prompts(tiny, smollm2_tokenizer):
    model, processor = tiny
    prompts = [processor.encode_prompt(QA[:1], video(64, 128)), processor.encode_prompt([Turn("user", "Hi")], None)]
    right = VideoPandaCollator(smollm2_tokenizer.pad_token_id)(prompts)
    with pytest.raises(ValueError, match="left-padded"):
        model.generate(**right, max_new_tokens=2)


@pytest.mark.parametrize("tied", [False, True])
def test_save_and_load_give_identical_logits(tied, smollm2_tokenizer, mixed_batch, tmp_path):
    torch.manual_seed(0)
    config = small_videopanda_config(smollm2_tokenizer)
    config.text_config.tie_word_embeddings = tied
    model = VideoPandaForCausalLM(config).eval()
    model.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").is_file()
    reloaded = VideoPandaForCausalLM.from_pretrained(tmp_path / "m").eval()
    lm = reloaded.language_model
    assert (lm.lm_head.weight.data_ptr() == lm.model.embed_tokens.weight.data_ptr()) == tied
    with torch.no_grad():
        assert torch.equal(model(**mixed_batch).logits, reloaded(**mixed_batch).logits)


def test_distillation_head_added_on_load_is_initialised(smollm2_tokenizer, tmp_path):
    torch.manual_seed(0)
    model = VideoPandaForCausalLM(small_videopanda_config(smollm2_tokenizer))  # a stage output without the head
    model.save_pretrained(tmp_path / "m")
    loaded = VideoPandaForCausalLM.from_pretrained(tmp_path / "m", use_distillation=True, teacher_hidden_size=16)
    head = loaded.distill_head
    assert torch.equal(head.norm_layer[0][0].weight, torch.ones(32)) and not head.norm_layer[0][0].bias.any()
    bound = 32**-0.5  # torch's default Linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert 0 < head.input_layer.weight.abs().max() <= bound and head.output_layer.weight.abs().max() <= 16**-0.5
    loaded_state = loaded.state_dict()
    assert all(torch.equal(t, loaded_state[n]) for n, t in model.state_dict().items())


def test_placeholder_mismatch_names_both_counts(tiny, smollm2_tokenizer):
    model, processor = tiny
    batch = VideoPandaCollator(smollm2_tokenizer.pad_token_id)([processor.encode(QA, video(64, 128))])
    expected = int((batch["input_ids"] == model.config.image_token_id).sum())
    first = int((batch["input_ids"][0] == model.config.image_token_id).nonzero()[0])
    batch["input_ids"][0, first] = smollm2_tokenizer.pad_token_id  # one placeholder too few
    message = rf"holds {expected - 1} image placeholder positions but the frames give {expected}"
    with pytest.raises(ValueError, match=message):
        model(**batch)


def test_distillation_loss_falls_and_skips_empty_frames(tiny, smollm2_tokenizer):
    model, processor = tiny
    visuals = video(64, 128, num_real=5)  # 5 real frames, 3 all-zero padding frames
    batch = VideoPandaCollator(smollm2_tokenizer.pad_token_id)([processor.encode(QA, visuals)])
    patches = teacher_patch_counts(visuals.teacher_pixel_values)  # (8,)
    assert patches.tolist() == [8] * 5 + [0] * 3  # the wide frames: a 2x4 teacher grid
    teacher = torch.randn(int(patches.sum()), 16, generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    losses = []
    for _ in range(6):
        out = model(**batch, teacher_features=teacher, teacher_patches_per_frame=patches)
        assert torch.allclose(out.loss, out.lm_loss + out.distill_loss)
        losses.append(out.distill_loss.item())
        optimizer.zero_grad()
        out.distill_loss.backward()
        optimizer.step()
    assert losses[-1] < losses[0] - 0.05, losses


def test_distillation_of_frames_without_content_is_zero(tiny, smollm2_tokenizer):
    model, processor = tiny
    batch = VideoPandaCollator(smollm2_tokenizer.pad_token_id)([processor.encode(QA, video(64, 128))])
    out = model(
        **batch, teacher_features=torch.zeros(0, 16), teacher_patches_per_frame=torch.zeros(8, dtype=torch.long)
    )
    assert out.distill_loss.item() == 0.0
    with pytest.raises(ValueError, match=r"student patch grids give \[8, 8, 8, 8, 8, 8, 8, 8\]"):
        model(**batch, teacher_features=torch.zeros(70, 16), teacher_patches_per_frame=torch.full((8,), 9))


def test_gradient_checkpointing_reaches_the_llm(tiny, mixed_batch):
    model, _ = tiny
    model.activation_checkpointing_enable()  # transformers 5 name of gradient_checkpointing_enable
    assert model.language_model.model.gradient_checkpointing
    calls = []
    model.language_model.model.layers[0].mlp.register_forward_pre_hook(lambda *_: calls.append(1))
    model.train()
    out = model(**mixed_batch)
    out.loss.backward()
    assert len(calls) == 2  # the layer ran again in backward: its activations were not kept
    assert model.stab.patch_embedding.weight.grad.abs().sum() > 0


def test_from_llm_adds_a_zero_image_row(smollm2_tokenizer):
    llm = AutoModelForCausalLM.from_config(tiny_llama_config(vocab_size=len(smollm2_tokenizer) - 1))
    model = VideoPandaForCausalLM.from_llm(llm, smollm2_tokenizer, stab_hidden_size=32, image_size=112)
    image_id = smollm2_tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    assert model.config.image_token_id == image_id == len(smollm2_tokenizer) - 1
    assert model.get_input_embeddings().weight.shape[0] == len(smollm2_tokenizer)
    assert not model.get_input_embeddings().weight[image_id].any()
    assert not model.get_output_embeddings().weight[image_id].any()
    assert model.language_model is llm


def test_patch_mask_and_pooling_by_hand():
    is_patch, frame = patch_token_mask(torch.tensor([[1, 2], [2, 1]]))
    # frame 0: ctx, p, p, split | frame 1: ctx, p, split, p, split
    assert is_patch.tolist() == [False, True, True, False, False, True, False, True, False]
    assert frame.tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 1]
    tokens = torch.arange(16.0)[:, None]  # one 4x4 frame, row-major
    pooled, hw = pool_patch_grid(tokens, torch.tensor([[4, 4]]), 2)
    assert hw.tolist() == [[2, 2]] and pooled.flatten().tolist() == [2.5, 4.5, 10.5, 12.5]
