"""VideoPandaForCausalLM on a tiny random LLaMA and on the embedded SmolLM2."""

from __future__ import annotations

import pytest
import torch

from conftest import moving_square_frames, small_videopanda_config
from videopanda.data.collator import VideoPandaCollator
from videopanda.data.conversation import Turn
from videopanda.data.processing_videopanda import VideoPandaProcessor
from videopanda.data.transform import preprocess_frames
from videopanda.model.modeling_videopanda import VideoPandaForCausalLM, patch_token_mask, pool_patch_grid

QA = [Turn("user", "<video>\nWhich colour moves?"), Turn("assistant", "red")]


def video(height, width, seed=0, size=112):
    return preprocess_frames(moving_square_frames(8, height, width, seed=seed), image_size=size, teacher_image_size=size // 2)


@pytest.fixture
def tiny(smollm2_tokenizer):
    torch.manual_seed(0)
    config = small_videopanda_config(smollm2_tokenizer, use_distillation=True, teacher_hidden_size=16)
    return VideoPandaForCausalLM(config), VideoPandaProcessor(smollm2_tokenizer, config)


def test_forward_backward_generate_and_save_load(tiny, tmp_path, smollm2_tokenizer):
    model, processor = tiny
    samples = [processor.encode(QA, video(64, 128)), processor.encode(QA, video(128, 64, seed=1)),
               processor.encode([Turn("user", "Hi"), Turn("assistant", "Hello")], None)]
    batch = VideoPandaCollator(smollm2_tokenizer.pad_token_id)(samples)
    out = model(**batch)
    assert torch.isfinite(out.loss) and out.distill_loss is None
    out.loss.backward()
    for prefix in ("stab.", "projector.", "language_model."):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if n.startswith(prefix))
    model.eval()
    prompts = [processor.encode_prompt(QA[:1], video(64, 128)), processor.encode_prompt(QA[:1], video(128, 64, seed=1))]
    left = VideoPandaCollator(smollm2_tokenizer.pad_token_id, padding_side="left")(prompts)
    generated = model.generate(left["input_ids"], left["attention_mask"], left["pixel_values"], left["chunk_lengths"],
                               max_new_tokens=4, pad_token_id=smollm2_tokenizer.pad_token_id)
    assert generated.shape[0] == 2 and 1 <= generated.shape[1] <= 4
    single = VideoPandaCollator(smollm2_tokenizer.pad_token_id, padding_side="left")(prompts[1:])
    one = model.generate(single["input_ids"], single["attention_mask"], single["pixel_values"], single["chunk_lengths"],
                         max_new_tokens=4, pad_token_id=smollm2_tokenizer.pad_token_id)
    assert generated[1, : one.shape[1]].tolist() == one[0].tolist()  # batched == one by one
    model.save_pretrained(tmp_path / "m")
    reloaded = VideoPandaForCausalLM.from_pretrained(tmp_path / "m").eval()
    assert torch.equal(model(**batch).logits, reloaded(**batch).logits)


def test_placeholder_mismatch_names_both_counts(tiny, smollm2_tokenizer):
    model, processor = tiny
    sample = processor.encode(QA, video(64, 128))
    batch = VideoPandaCollator(smollm2_tokenizer.pad_token_id)([sample])
    first = int((batch["input_ids"][0] == model.config.image_token_id).nonzero()[0])
    batch["input_ids"][0, first] = smollm2_tokenizer.pad_token_id  # one placeholder too few
    with pytest.raises(ValueError, match=r"holds \d+ image placeholder positions but the frames give \d+"):
        model(**batch)


def test_distillation_loss_falls_on_a_fixed_batch(tiny, smollm2_tokenizer):
    model, processor = tiny
    sample = processor.encode(QA, video(64, 128))  # wide: real frames have a 2x4 LSD grid
    batch = VideoPandaCollator(smollm2_tokenizer.pad_token_id)([sample])
    patches = torch.tensor([8] * 8)  # 8 real frames of 2x4 patches (teacher grid 4x4 cropped to 2x4)
    teacher = torch.randn(64, 16, generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        out = model(**batch, teacher_features=teacher, teacher_patches_per_frame=patches)
        losses.append(out.distill_loss.item())
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    assert losses[-1] < losses[0] - 0.1


def test_patch_mask_and_pooling_by_hand():
    is_patch, frame = patch_token_mask(torch.tensor([[1, 2], [2, 1]]))
    # frame 0: ctx, p, p, split | frame 1: ctx, p, split, p, split
    assert is_patch.tolist() == [False, True, True, False, False, True, False, True, False]
    assert frame.tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 1]
    tokens = torch.arange(16.0)[:, None]  # one 4x4 frame, row-major
    pooled, hw = pool_patch_grid(tokens, torch.tensor([[4, 4]]), 2)
    assert hw.tolist() == [[2, 2]] and pooled.flatten().tolist() == [2.5, 4.5, 10.5, 12.5]


@pytest.mark.slow
def test_smollm2_forward_backward_and_greedy_generation(smollm2_tokenizer):
    from videopanda.model.llm import load_llm

    llm = load_llm("smollm2")
    llm.resize_token_embeddings(len(smollm2_tokenizer), mean_resizing=False)
    model = VideoPandaForCausalLM.from_llm(llm, smollm2_tokenizer.convert_tokens_to_ids("<image>"),
                                           stab_hidden_size=64, image_size=112, teacher_image_size=56)
    processor = VideoPandaProcessor(smollm2_tokenizer, model.config, template="chat_template")
    batch = VideoPandaCollator(smollm2_tokenizer.pad_token_id)([processor.encode(QA, video(64, 128))])
    out = model(**batch)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert model.stab.patch_embedding.weight.grad.abs().sum() > 0
    model.eval()
    prompt = processor.encode_prompt(QA[:1], video(64, 128))
    new = model.generate(prompt.input_ids[None], torch.ones_like(prompt.input_ids)[None], prompt.pixel_values,
                         prompt.chunk_lengths, max_new_tokens=6)
    assert 1 <= new.shape[1] <= 6
    assert isinstance(smollm2_tokenizer.decode(new[0], skip_special_tokens=True), str)
