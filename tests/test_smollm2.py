"""Video-Panda around the embedded SmolLM2-135M-Instruct: one real LLM end to end."""

from __future__ import annotations

import pytest
import torch

from conftest import moving_square_frames
from videopanda.data.collator import VideoPandaCollator
from videopanda.data.conversation import Turn
from videopanda.data.processing_videopanda import VideoPandaProcessor
from videopanda.data.transform import preprocess_frames
from videopanda.model.llm import load_llm
from videopanda.model.modeling_videopanda import VideoPandaForCausalLM

QA = [Turn("user", "<video>\nWhat moves in this video?"), Turn("assistant", "A red square.")]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2_videopanda(smollm2_tokenizer):
    """What ``build_videopanda("smollm2", ...)`` builds, reusing the session's tokenizer."""
    torch.manual_seed(0)
    model = VideoPandaForCausalLM.from_llm(load_llm("smollm2"), smollm2_tokenizer,
                                           stab_hidden_size=64, image_size=112, teacher_image_size=56)
    return model, VideoPandaProcessor.for_model(smollm2_tokenizer, model.config, template="chat_template")


@pytest.fixture(scope="module")
def frames():
    return preprocess_frames(moving_square_frames(8, 64, 128), image_size=112, teacher_image_size=56)


def test_smollm2_forward_and_backward(smollm2_videopanda, frames):
    model, processor = smollm2_videopanda
    assert model.language_model.config.tie_word_embeddings
    batch = VideoPandaCollator(processor.tokenizer.pad_token_id)([processor.encode(QA, frames)])
    model.train()
    out = model(**batch)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    for part in (model.stab.patch_embedding.weight, model.projector[0].weight, model.get_input_embeddings().weight):
        assert part.grad is not None and part.grad.abs().sum() > 0
    model.zero_grad()


def test_smollm2_greedy_generation_with_a_video(smollm2_videopanda, frames):
    model, processor = smollm2_videopanda
    model.eval()
    prompt = processor.build_prompt("What moves in this video?", frames)
    output = model.generate(**prompt, max_new_tokens=4, pad_token_id=processor.tokenizer.pad_token_id)  # (1, L+T_new)
    assert torch.equal(output[:, : prompt["input_ids"].shape[1]], prompt["input_ids"])  # the prompt comes first
    new = output[:, prompt["input_ids"].shape[1] :]  # (1, T_new)
    assert 1 <= new.shape[1] <= 4
    assert not bool((new == model.config.image_token_id).any())
    with torch.no_grad():
        logits = model(**prompt).logits  # (1, L, V): the same prompt through forward()
    assert int(new[0, 0]) == int(logits[0, -1].argmax())  # the reply continues the prompt greedily
    extended = torch.cat([prompt["input_ids"], new], 1)  # (1, L + T_new)
    assert isinstance(processor.tokenizer.decode(extended[0, -new.shape[1] :], skip_special_tokens=True), str)
