"""``VideoPandaForVLLM``: our STAB and projector in front of vLLM's own implementation of the text model.

Shape legend: F frames of the batch's videos, C chunks, S frame side, N visual tokens (sum of
``tokens_per_frame``), d STAB width, D LLM width, V vocabulary.

Weights load from any of our model directories (training output, ``convert --release``, the quickstart,
a merged LoRA): ``stab.*`` and ``projector.*`` as they are, ``language_model.*`` through vLLM's loader
of the text model (its class from ``text_config.model_type``); everything else is dropped (``hf_to_vllm_mapper``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
from vllm.config import VllmConfig
from vllm.model_executor.models.interfaces import MultiModalEmbeddings, SupportsMultiModal
from vllm.model_executor.models.utils import (
    AutoWeightsLoader,
    WeightsMapper,
    init_vllm_registered_model,
    maybe_prefix,
)
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.sequence import IntermediateTensors

from videopanda.model.configuration_videopanda import IMAGE_TOKEN, VideoPandaConfig
from videopanda.model.projector import build_projector
from videopanda.model.stab import STAB
from videopanda.vllm.processing import (
    VideoPandaDummyInputsBuilder,
    VideoPandaMultiModalProcessor,
    VideoPandaProcessingInfo,
)


@MULTIMODAL_REGISTRY.register_processor(
    VideoPandaMultiModalProcessor, info=VideoPandaProcessingInfo, dummy_inputs=VideoPandaDummyInputsBuilder
)
class VideoPandaForVLLM(nn.Module, SupportsMultiModal):
    # Only the model's own weights load: a directory's distillation head and a converted release's teacher
    # (teacher.safetensors beside the model, which vLLM reads as one more shard) are training-only.
    hf_to_vllm_mapper = WeightsMapper(orig_to_new_regex={re.compile(r"^(?!stab\.|projector\.|language_model\.)"): None})

    @classmethod
    def get_placeholder_str(cls, modality: str, i: int) -> str | None:
        if modality.startswith("video"):
            return IMAGE_TOKEN  # expanded to the video's visual tokens by the processor
        raise ValueError(f"Video-Panda on vLLM takes videos, not {modality}")

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__()
        config: VideoPandaConfig = vllm_config.model_config.hf_config
        if config.image_token_id is None:
            raise ValueError("the model directory's config has no image_token_id: it was never given a tokenizer")
        self.config = config
        with SupportsMultiModal._mark_tower_model(self, vllm_config, "video"):  # (typed through the interface)
            self.stab = STAB(config).eval()  # inference: BatchNorm statistics, no dropout
            self.projector = build_projector(config.stab_hidden_size, config.llm_hidden_size)
        with SupportsMultiModal._mark_language_model(self, vllm_config):
            self.language_model = init_vllm_registered_model(
                vllm_config=vllm_config, hf_config=config.llm_config, architectures=[causal_lm_class(config)],
                prefix=maybe_prefix(prefix, "language_model"),
            )
        self.make_empty_intermediate_tensors = self.language_model.make_empty_intermediate_tensors

    def train(self, mode: bool = True) -> VideoPandaForVLLM:
        """Always in eval mode: the STAB's BatchNorm and dropout must never switch to training behaviour."""
        return super().train(False)

    def embed_multimodal(self, **kwargs: Any) -> MultiModalEmbeddings:
        """The batch's videos -> one (N_v, D) tensor of projected STAB tokens per video, in order."""
        pixel_values = kwargs.get("pixel_values")
        if pixel_values is None:
            return []
        pixel_values = _cat(pixel_values)  # (F, 4, S, S)
        chunk_lengths = _cat(kwargs["chunk_lengths"]).long()  # (C,)
        frames_per_video = _cat(kwargs["frames_per_video"]).long().flatten()  # (videos,)
        stab = self.stab(pixel_values.to(self.stab.patch_embedding.weight.dtype), chunk_lengths)
        embeddings = self.projector(stab.tokens)  # (N, D)
        tokens_per_video = torch.stack(
            [counts.sum() for counts in stab.tokens_per_frame.split(frames_per_video.tolist())]
        )
        return list(embeddings.split(tokens_per_video.tolist()))

    def forward(
        self, input_ids: Tensor | None, positions: Tensor, intermediate_tensors: IntermediateTensors | None = None,
        inputs_embeds: Tensor | None = None, **kwargs: object,
    ) -> Tensor | IntermediateTensors:
        if intermediate_tensors is not None:
            inputs_embeds = None
        return self.language_model.model(input_ids, positions, intermediate_tensors, inputs_embeds=inputs_embeds)

    def compute_logits(self, hidden_states: Tensor) -> Tensor | None:
        """(tokens, D) -> (tokens, V); the ``<image>`` token is never generated (as our ``generate``)."""
        logits = self.language_model.compute_logits(hidden_states)
        if logits is not None:
            logits[..., self.config.image_token_id] = float("-inf")
        return logits

    def load_weights(self, weights: Iterable[tuple[str, Tensor]]) -> set[str]:
        return AutoWeightsLoader(self).load_weights(weights, mapper=self.hf_to_vllm_mapper)


def causal_lm_class(config: VideoPandaConfig) -> str:
    """The text model's class name, as ``VideoPandaForCausalLM`` builds it (``AutoModelForCausalLM`` of
    ``text_config``): a converted release's text_config still names the release's ``LlavaLlamaForCausalLM``."""
    model_type = config.llm_config.model_type
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ValueError(f"text_config's model_type {model_type!r} is no causal LM transformers knows")
    return MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[model_type]


def _cat(value: Any) -> Tensor:
    """A field as vLLM batches it (one tensor, or a list of per-video tensors) -> one tensor along dim 0."""
    if isinstance(value, Tensor):
        return value
    return torch.cat([v if v.ndim else v[None] for v in value])
