"""transformers' ``ModelTesterMixin`` against a tiny VideoPanda, and a tiny LLaVA as the control.

Not a test module of this repository: ``test_transformers_model_tests.py`` copies it into the ``tests/``
folder of transformers' sdist (``transformers_sdist.py``) and runs it there with pytest, where its
relative imports find transformers' own test files.
"""

from __future__ import annotations

import unittest

import torch
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

from videopanda.model.configuration_videopanda import VideoPandaConfig
from videopanda.model.modeling_videopanda import VideoPandaForCausalLM

from .generation.test_utils import GenerationTesterMixin  # type: ignore[import-not-found]  # the stand-in
from .test_modeling_common import ModelTesterMixin, floats_tensor, ids_tensor  # type: ignore[import-not-found]

BATCH, TEXT, VOCAB, IMAGE_TOKEN = 2, 7, 99, 3


def tiny_text_config() -> LlamaConfig:
    return LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=37, max_position_embeddings=512, pad_token_id=1, bos_token_id=0, eos_token_id=2,
        tie_word_embeddings=False,
    )


def with_placeholders(visual_tokens: int) -> torch.Tensor:
    """(BATCH, visual_tokens + TEXT) random text ids after each row's run of placeholders."""
    input_ids = ids_tensor([BATCH, visual_tokens + TEXT], VOCAB - 1) + 1
    input_ids[input_ids == IMAGE_TOKEN] = 4
    input_ids[:, :visual_tokens] = IMAGE_TOKEN
    return input_ids


class _Tester:
    """What ``ModelTesterMixin`` reads from ``self.model_tester``."""

    batch_size = BATCH
    is_training = True
    vocab_size = VOCAB
    hidden_size = 32
    num_hidden_layers = 2
    num_attention_heads = 4
    visual_tokens = 0

    def __init__(self, parent: unittest.TestCase) -> None:
        self.parent = parent
        self.seq_length = self.visual_tokens + TEXT
        self.encoder_seq_length = self.seq_length


class VideoPandaTester(_Tester):
    frames, size = 4, 56  # one video of 4 frames per row: a 4x4 patch grid, a 2x2 LSD grid: 1 + 2*3 tokens a frame
    visual_tokens = 4 * 7
    # get_video_features' layers: the STAB's three attention blocks (GSTRA, LSD, FSRA).
    video_config = {"num_hidden_layers": 3}

    def get_config(self) -> VideoPandaConfig:
        return VideoPandaConfig(  # a STAB narrower than the LLM, so that a width mix-up shows
            text_config=tiny_text_config(), stab_hidden_size=16, stab_num_heads=4, stab_dropout=0.0, image_size=56,
            teacher_image_size=28, chunk_length=4, num_frames=4, image_token_id=IMAGE_TOKEN,
        )

    def prepare_config_and_inputs_for_common(self) -> tuple[VideoPandaConfig, dict[str, torch.Tensor]]:
        pixels = floats_tensor([BATCH * self.frames, 4, self.size, self.size])
        pixels[:, 3] = 1.0  # every pixel is real
        grid = torch.tensor([[self.frames, self.size // 14, self.size // 14]] * BATCH)
        input_ids = with_placeholders(self.visual_tokens)
        return self.get_config(), {
            "input_ids": input_ids, "attention_mask": torch.ones_like(input_ids),
            "pixel_values_videos": pixels, "video_grid_thw": grid,
        }


class LlavaTester(_Tester):
    size, patch = 8, 2
    visual_tokens = (8 // 2) ** 2

    def get_config(self) -> LlavaConfig:
        vision = CLIPVisionConfig(image_size=self.size, patch_size=self.patch, hidden_size=32, projection_dim=32,
                                  num_hidden_layers=2, num_attention_heads=4, intermediate_size=37)
        return LlavaConfig(text_config=tiny_text_config(), vision_config=vision, image_token_index=IMAGE_TOKEN,
                           image_seq_length=self.visual_tokens, vision_feature_layer=-1)

    def prepare_config_and_inputs_for_common(self) -> tuple[LlavaConfig, dict[str, torch.Tensor]]:
        input_ids = with_placeholders(self.visual_tokens)
        return self.get_config(), {
            "input_ids": input_ids, "attention_mask": torch.ones_like(input_ids),
            "pixel_values": floats_tensor([BATCH, 3, self.size, self.size]),
        }


# Both classes take the stand-in GenerationTesterMixin (an empty class): the sdist has no generation tests,
# and ``test_generation_tester_mixin_inheritance`` asks a generating model's tester to inherit it.
class VideoPandaModelTest(ModelTesterMixin, GenerationTesterMixin, unittest.TestCase):
    all_model_classes = (VideoPandaForCausalLM,)
    _is_composite = True

    def setUp(self) -> None:
        self.model_tester = VideoPandaTester(self)

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        """Labels where the mixin gives them to the models its own causal-LM mapping names (VideoPanda registers
        with ``AutoModelForCausalLM`` at run time, so it is not among those names)."""
        inputs_dict = super()._prepare_for_class(inputs_dict, model_class, return_labels)
        if return_labels:
            inputs_dict["labels"] = inputs_dict["input_ids"].clone()
        return inputs_dict


class LlavaModelTest(ModelTesterMixin, GenerationTesterMixin, unittest.TestCase):
    all_model_classes = (LlavaForConditionalGeneration,)
    _is_composite = True

    def setUp(self) -> None:
        self.model_tester = LlavaTester(self)
