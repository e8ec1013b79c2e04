"""vLLM's multimodal processing for Video-Panda: sampled frames -> model inputs and prompt placeholders.

The chat renderer puts one ``<image>`` token where a video goes (``VideoPandaForVLLM.get_placeholder_str``;
``"<image>\\n" + text`` as our processor writes a video's turn); this processor replaces it by as many
``<image>`` positions as the STAB gives the video's frames (``geometry.video_geometry``), the same
expansion ``VideoPandaProcessor`` makes. Shapes: F frames, C chunks, S frame side.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any

import numpy as np
import torch
from transformers import BatchFeature
from vllm.multimodal.inputs import MultiModalFieldConfig, MultiModalKwargsItems
from vllm.multimodal.parse import MultiModalDataItems
from vllm.multimodal.processing import (
    BaseDummyInputsBuilder,
    BaseMultiModalProcessor,
    BaseProcessingInfo,
    PromptReplacement,
    PromptUpdate,
)

from videopanda.data.processing_videopanda import VideoPandaProcessor
from videopanda.model.configuration_videopanda import IMAGE_TOKEN, VideoPandaConfig
from videopanda.vllm.geometry import largest_video, video_geometry


class VideoPandaProcessingInfo(BaseProcessingInfo):
    def get_hf_config(self) -> VideoPandaConfig:
        return self.ctx.get_hf_config(VideoPandaConfig)

    @cached_property
    def processor(self) -> VideoPandaProcessor:
        """Our processor around vLLM's tokenizer: its geometry, and the ``<image>`` id checked against the config."""
        return VideoPandaProcessor.for_model(self.get_tokenizer(), self.get_hf_config())

    def get_supported_mm_limits(self) -> Mapping[str, int | None]:
        return {"video": 1}  # as our processor: one visual input per prompt

    def get_supported_mm_processor_kwargs(self) -> dict[str, set[str]]:
        return {}  # the geometry is the model's own: nothing to set per request

    def get_mm_max_tokens_per_item(self, seq_len: int, mm_counts: Mapping[str, int]) -> Mapping[str, int]:
        return {"video": int(video_geometry(self.processor, largest_video(self.processor)).tokens_per_frame.sum())}


class VideoPandaDummyInputsBuilder(BaseDummyInputsBuilder[VideoPandaProcessingInfo]):
    def get_dummy_text(self, mm_counts: Mapping[str, int]) -> str:
        return IMAGE_TOKEN * mm_counts.get("video", 0)

    def get_dummy_mm_data(self, seq_len: int, mm_counts: Mapping[str, int], mm_options: Any = None) -> dict:
        return {"video": [largest_video(self.info.processor)] * mm_counts.get("video", 0)}


class VideoPandaMultiModalProcessor(BaseMultiModalProcessor[VideoPandaProcessingInfo]):
    def _call_hf_processor(self, hf_data: Mapping[str, object], hf_kwargs: Mapping[str, object]) -> BatchFeature:
        """``{"videos": [(T, H, W, 3) uint8]}`` -> pixel_values (F, 4, S, S), chunk_lengths (C,),
        tokens_per_frame (F,), and per video its frames and chunks."""
        videos = hf_data.get("videos") or []
        if not isinstance(videos, Sequence):
            raise TypeError(f"expected a list of videos, got {type(videos).__name__}")
        inputs = [video_geometry(self.info.processor, np.asarray(video, dtype=np.uint8)) for video in videos]
        return BatchFeature({
            "pixel_values": torch.cat([v.pixel_values for v in inputs]),
            "chunk_lengths": torch.cat([v.chunk_lengths for v in inputs]),
            "tokens_per_frame": torch.cat([v.tokens_per_frame for v in inputs]),
            "frames_per_video": torch.tensor([len(v.pixel_values) for v in inputs]),
            "chunks_per_video": torch.tensor([len(v.chunk_lengths) for v in inputs]),
        })

    def _get_mm_fields_config(
        self, hf_inputs: BatchFeature, hf_processor_mm_kwargs: Mapping[str, object]
    ) -> Mapping[str, MultiModalFieldConfig]:
        frames = hf_inputs.get("frames_per_video", torch.empty(0, dtype=torch.long))
        chunks = hf_inputs.get("chunks_per_video", torch.empty(0, dtype=torch.long))
        return {
            "pixel_values": MultiModalFieldConfig.flat_from_sizes("video", frames),
            "tokens_per_frame": MultiModalFieldConfig.flat_from_sizes("video", frames),
            "chunk_lengths": MultiModalFieldConfig.flat_from_sizes("video", chunks),
            "frames_per_video": MultiModalFieldConfig.batched("video"),
            "chunks_per_video": MultiModalFieldConfig.batched("video"),
        }

    def _get_prompt_updates(
        self, mm_items: MultiModalDataItems, hf_processor_mm_kwargs: Mapping[str, object],
        out_mm_kwargs: MultiModalKwargsItems,
    ) -> Sequence[PromptUpdate]:
        token_id = self.info.processor.image_token_id

        def replacement(item_idx: int) -> list[int]:
            counts = out_mm_kwargs["video"][item_idx]["tokens_per_frame"].data  # (F,)
            return [token_id] * int(counts.sum())

        return [PromptReplacement(modality="video", target=[token_id], replacement=replacement)]
