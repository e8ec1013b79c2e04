"""Batched greedy inference: Video-Panda answers about videos, and plain chat with a causal LM.

``VideoPandaPredictor`` is the one inference path of ``eval run``, ``serve``,
``ask``/``chat`` and the quickstart's evaluation: deterministic preprocessing
(no flip), left-padded batches, greedy decoding cut at the template's
end-of-turn marker, weights in the run's precision (``runtime.resolve_precision``:
the same model, input and precision give the same answer on every path), and
the prompt template the model directory records (``model_template``).
``ChatLLM`` runs a plain chat model (the local judge and the plain-LLM server).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase, StoppingCriteriaList

from videopanda import limits
from videopanda.data.conversation import Turn, chat_role
from videopanda.data.decode import read_video_frames
from videopanda.data.processing_videopanda import VideoPandaProcessor, decode_text
from videopanda.data.transform import VisualInputs
from videopanda.inference.generation import GenerationRequest, GenerationResult, RowMonitor
from videopanda.inference.loading import load_model_dir, read_model_config
from videopanda.model.directory import model_template
from videopanda.runtime import Precision, cast_weights, resolve_precision

if TYPE_CHECKING:
    from videopanda.model.modeling_videopanda import VideoPandaForCausalLM

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationConfig:
    max_new_tokens: int = 1024  # the release's limit
    template: str | None = None  # None: the one the model records (``model_template``)
    batch_size: int = 4
    num_frames: int | None = None  # frames per video (``limits.check_num_frames``); None: the model's


class VideoPandaPredictor:
    """(video file, question) pairs -> answers; ``load_video`` raises ``VideoDecodeError`` for a bad file.

    ``precision`` is recorded for the outputs; the model's weights are already in its dtype.
    """

    def __init__(
        self, model: PreTrainedModel, processor: VideoPandaProcessor, config: GenerationConfig,
        precision: Precision | None = None,
    ) -> None:
        self.model = model.eval()
        self.processor = processor
        self.config = config
        self.precision = precision or resolve_precision(str(model.dtype).removeprefix("torch."), model.device)
        self.num_frames = model.config.num_frames if config.num_frames is None else config.num_frames
        _check_generation_config(config, model.config)

    @classmethod
    def from_pretrained(
        cls, model_dir: str | Path, config: GenerationConfig = GenerationConfig(),
        device: str = "cpu", dtype: str = "auto",
    ) -> VideoPandaPredictor:
        """A model directory of any kind ``inference.loading.load_model_dir`` takes (trained, LoRA adapter or
        merged, release, converted, quickstart).

        ``dtype``: ``auto`` (``runtime.resolve_precision``), ``float32``, ``bfloat16`` or ``float16``.
        """
        recorded = read_model_config(model_dir)  # checked before any weight loads, where the files tell it
        if recorded is not None:
            _check_generation_config(config, recorded)
        loaded = load_model_dir(model_dir, dtype=dtype, device=device)
        template = config.template or model_template(model_dir, loaded.model.config)
        processor = VideoPandaProcessor.for_model(loaded.tokenizer, loaded.model.config, template=template)
        return cls(loaded.model, processor, config, loaded.precision)

    @classmethod
    def for_model(
        cls, model: VideoPandaForCausalLM, tokenizer: PreTrainedTokenizerBase, config: GenerationConfig,
        precision: Precision,
    ) -> VideoPandaPredictor:
        """A predictor around an in-memory model (the quickstart's), answering as ``from_pretrained`` of its
        saved directory would: a copy in ``precision`` when the model's weights are in another dtype."""
        if model.dtype != precision.torch_dtype:
            model = cast_weights(copy.deepcopy(model), precision.torch_dtype)
        template = config.template or model_template("", model.config)
        return cls(model, VideoPandaProcessor.for_model(tokenizer, model.config, template=template), config, precision)

    @property
    def template(self) -> str:
        return self.processor.template_name

    @property
    def batch_size(self) -> int:
        return self.config.batch_size

    def check_num_frames(self, num_frames: int) -> int:
        """``num_frames`` if this model can take that many frames per video (``limits.check_num_frames``)."""
        return limits.check_num_frames(num_frames, self.model.config.image_size, self.model.config.chunk_length)

    def load_video(self, path: str | Path, num_frames: int | None = None) -> VisualInputs:
        """The release's sampled frames, preprocessed at student scale without augmentation.

        ``num_frames``: how many frames to sample (default: the predictor's, ``GenerationConfig.num_frames``
        or the model's).
        """
        wanted = self.num_frames if num_frames is None else self.check_num_frames(num_frames)
        frames = read_video_frames(path, num_frames=wanted)  # (T, H, W, 3)
        return self.preprocess_video(frames, wanted)

    def preprocess_video(self, frames: np.ndarray, num_frames: int | None = None) -> VisualInputs:
        """Sampled frames (T, H, W, 3) uint8 -> a video input, padded to ``num_frames`` frames (default: the
        predictor's)."""
        wanted = self.num_frames if num_frames is None else self.check_num_frames(num_frames)
        return self.processor.video_processor.preprocess_video(frames, wanted)

    def preprocess_image(self, image: np.ndarray) -> VisualInputs:
        """One image (1, H, W, 3) or (H, W, 3) uint8 -> a one-frame input."""
        return self.processor.video_processor.preprocess_image(image)

    def answer(
        self, visuals: Sequence[VisualInputs | None], questions: Sequence[str],
        histories: Sequence[Sequence[Turn]] | None = None, max_new_tokens: int | None = None,
    ) -> list[str]:
        """One greedy answer per (visuals, question[, earlier turns]), generated as one left-padded batch."""
        histories = histories or [()] * len(questions)
        requests = [GenerationRequest(q, v, h, max_new_tokens=max_new_tokens)
                    for v, q, h in zip(visuals, questions, histories, strict=True)]
        return [result.text for result in self.generate(requests)]

    def _model_inputs(
        self, questions: Sequence[str], visuals: Sequence[VisualInputs | None],
        histories: Sequence[Sequence[Turn]] | None = None, visual_turns: Sequence[int | None] | None = None,
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Left-padded prompts on the model's device and dtype, and their attention mask (B, L) on the CPU."""
        batch = self.processor.batch_prompts(questions, visuals, histories, visual_turns)
        device = self.model.device
        inputs = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask", "video_grid_thw")}
        if "pixel_values_videos" in batch:
            inputs["pixel_values_videos"] = batch["pixel_values_videos"].to(device, self.model.dtype)
        return inputs, batch["attention_mask"]

    @torch.no_grad()
    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Requests with their own limits, stops and streaming callbacks, as one left-padded batch."""
        inputs, attention_mask = self._model_inputs(
            [r.question for r in requests], [r.visuals for r in requests], [r.history for r in requests],
            [r.visual_turn for r in requests])
        tokenizer = self.processor.tokenizer
        token_limits = [r.max_new_tokens or self.config.max_new_tokens for r in requests]
        prompt_length = inputs["input_ids"].shape[1]
        monitor = RowMonitor(
            requests, token_limits, prompt_length, self.processor.decode,
            lambda ids: decode_text(tokenizer, ids, skip_special_tokens=False), _eos_ids(self.model),
            self.processor.stop_string,
        )
        output = self.model.generate(
            **inputs, max_new_tokens=max(token_limits), do_sample=False, pad_token_id=tokenizer.pad_token_id,
            stopping_criteria=StoppingCriteriaList([monitor]),
        )  # (B, L + T_new)
        return monitor.results(output[:, prompt_length:], attention_mask)

    @torch.no_grad()
    def greedy_scores(self, visuals: VisualInputs | None, question: str, max_new_tokens: int | None = None):
        """One prompt's greedy tokens and the logits of every step (``generate``'s output dict, its
        ``sequences`` cut to the new tokens (1, T_new)): the reference that batched answers are checked
        against (near-ties of the logits)."""
        inputs, _ = self._model_inputs([question], [visuals])
        tokenizer = self.processor.tokenizer
        out = self.model.generate(
            **inputs, max_new_tokens=max_new_tokens or self.config.max_new_tokens, do_sample=False,
            pad_token_id=tokenizer.pad_token_id, stop_strings=[self.processor.stop_string], tokenizer=tokenizer,
            output_scores=True, return_dict_in_generate=True,
        )
        out.sequences = out.sequences[:, inputs["input_ids"].shape[1] :]
        return out

    def ask(self, video: str | Path | None, question: str, history: Sequence[Turn] = ()) -> str:
        """One question about one video file (or none), after an optional chat history."""
        visuals = None if video is None else self.load_video(video)
        return self.answer([visuals], [question], [history])[0]


class ChatLLM:
    """A plain chat model: messages -> greedy reply through the tokenizer's chat template."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, model_id: str) -> None:
        if not tokenizer.chat_template:
            raise ValueError(f"tokenizer of {model_id!r} has no chat_template")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.context_tokens: int | None = getattr(model.config, "max_position_embeddings", None)
        self.max_text_chars = limits.max_text_chars(self.context_tokens, limits.longest_token_chars(tokenizer))

    @classmethod
    def load(cls, source: str | Path | None = None) -> ChatLLM:
        """A local model directory, or the embedded SmolLM2 (None / 'smollm2')."""
        from videopanda.model.llm import load_llm, load_tokenizer

        model_id = "smollm2" if source is None or str(source) == "smollm2" else Path(source).name
        return cls(load_llm(source), load_tokenizer(source), model_id)

    def reply(self, messages: Sequence[dict[str, str]], max_new_tokens: int = 256) -> str:
        """``[{"role", "content"}, ...]`` -> the assistant's greedy reply."""
        *history, last = messages
        system = "\n".join(m["content"] for m in history if m["role"] == "system") or None
        turns = [Turn(chat_role(m["role"]), m["content"]) for m in history if m["role"] != "system"]
        request = GenerationRequest(last["content"], history=turns, system=system, max_new_tokens=max_new_tokens)
        return self.generate([request])[0].text

    def prompt(self, request: GenerationRequest) -> str:
        """``request`` in the chat template; ``ValueError`` for a visual input or a text too long to fit."""
        if request.visuals is not None:
            raise ValueError(f"model {self.model_id!r} is a plain LLM: it takes no video or image")
        messages = _chat_messages(request)
        limits.check_text_chars((m["content"] for m in messages), self.max_text_chars)
        return str(self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))

    def check(self, request: GenerationRequest) -> None:
        """What ``generate`` would refuse in ``request``, refused now (``ValueError``)."""
        self._check_fits(len(self.tokenizer(self.prompt(request), add_special_tokens=False)["input_ids"]))

    def _check_fits(self, prompt_tokens: int) -> None:
        if self.context_tokens is not None and prompt_tokens >= self.context_tokens:
            raise ValueError(f"a prompt of {prompt_tokens} tokens does not fit {self.model_id}'s context of "
                             f"{self.context_tokens} tokens: shorten the messages")

    @torch.no_grad()
    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Text-only requests through the tokenizer's chat template, as one left-padded batch."""
        prompts = [self.prompt(r) for r in requests]
        encoded = self.tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left",
                                 add_special_tokens=False)
        self._check_fits(int(encoded["attention_mask"].sum(1).max()))
        input_ids = encoded["input_ids"].to(self.model.device)  # (B, L)
        token_limits = [r.max_new_tokens or 256 for r in requests]
        tokenizer = self.tokenizer
        monitor = RowMonitor(
            requests, token_limits, input_ids.shape[1], lambda ids: decode_text(tokenizer, ids, True).strip(),
            lambda ids: decode_text(tokenizer, ids, False), _eos_ids(self.model), None,
        )
        output = self.model.generate(
            input_ids, attention_mask=encoded["attention_mask"].to(self.model.device), max_new_tokens=max(token_limits),
            do_sample=False, pad_token_id=self.tokenizer.pad_token_id,
            stopping_criteria=StoppingCriteriaList([monitor]),
        )  # (B, L + T_new)
        return monitor.results(output[:, input_ids.shape[1] :], encoded["attention_mask"])


def _check_generation_config(config: GenerationConfig, model_config: PretrainedConfig) -> None:
    """``config``'s frames per video and new tokens against the model's geometry and context (``limits``)."""
    if config.num_frames is not None:
        limits.check_num_frames(config.num_frames, model_config.image_size, model_config.chunk_length)
    context = getattr(model_config.text_config, "max_position_embeddings", None)
    limits.check_max_new_tokens(config.max_new_tokens, context)


def _chat_messages(request: GenerationRequest) -> list[dict[str, str]]:
    system = [{"role": "system", "content": request.system}] if request.system else []
    turns = [{"role": t.role, "content": t.text} for t in request.history]
    return [*system, *turns, {"role": "user", "content": request.question}]


def _eos_ids(model: PreTrainedModel) -> set[int]:
    """The token ids that end a reply: those ``generate`` stops at (a Video-Panda model's are its LLM's)."""
    config = getattr(getattr(model, "language_model", model), "generation_config", None)
    eos = getattr(config, "eos_token_id", None)
    if eos is None:
        eos = getattr(getattr(model.config, "text_config", model.config), "eos_token_id", None)
    return set() if eos is None else {eos} if isinstance(eos, int) else set(eos)
