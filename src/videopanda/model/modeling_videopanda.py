"""Video-Panda: STAB + projector feeding any Hugging Face causal LM.

Shape legend
    B, L    batch size, sequence length (placeholders already expanded)
    F       frames in the batch;  V  videos (an image is a one-frame video);  C  chunks;  S  student frame size
    N       visual tokens of the batch (sum over frames of 1 + h*(w+1))
    D       LLM width;  Dt  teacher width

Each frame's ``<image>`` placeholder was expanded by the processor into
exactly as many ``image_token_id`` positions as the STAB gives that frame;
the projected features are written there with one ``masked_scatter``.

The model keeps transformers' contract for a causal LM: ``generate`` is GenerationMixin's own (prompt +
new tokens returned; the frames are read in the first step only), ``cache``/``past_key_values``,
``return_dict=False`` and the output flags are honoured.
"""

from __future__ import annotations

import functools
import operator
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from transformers import AutoModelForCausalLM, GenerationMixin, PreTrainedModel, PreTrainedTokenizerBase
from transformers import initialization as init
from transformers.utils import ModelOutput
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.generic import can_return_tuple

from videopanda.model.chunking import chunk_lengths
from videopanda.model.configuration_videopanda import VideoPandaConfig, image_token_id
from videopanda.model.distill import DistillationHead
from videopanda.model.llm import load_llm, load_tokenizer, resize_for_tokenizer
from videopanda.model.projector import build_projector
from videopanda.model.stab import STAB, LocalSpatioTemporalEncoder, LocalTemporalMHRA, tokens_per_frame
from videopanda.model.stab_attention import GlobalSpatioTemporalAttention, GSTRAMlp
from videopanda.model.weights import check_weight_files
from videopanda.runtime import cast_weights

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self needs Python 3.11


@dataclass
class VideoFeatures(ModelOutput):
    """The STAB and projector's output for a batch's frames, in transformers' ``get_video_features`` form.

    last_hidden_state (F, T, d): each frame's STAB tokens, zero-padded to the longest frame's T tokens;
    pooler_output (N, D): every frame's projected tokens in order, what the placeholder positions receive;
    hidden_states, attentions: on request, the STAB's per-block outputs and weights (``stab.STABOutput``);
    tokens_per_frame (F,) long; grid_hw (F, 2) long: each frame's LSD grid after cropping.
    """

    last_hidden_state: Tensor | None = None
    pooler_output: Tensor | None = None
    hidden_states: tuple[Tensor, ...] | None = None
    attentions: tuple[Tensor, ...] | None = None
    tokens_per_frame: Tensor | None = None
    grid_hw: Tensor | None = None


@dataclass
class VideoPandaOutput(ModelOutput):
    loss: Tensor | None = None
    lm_loss: Tensor | None = None
    distill_loss: Tensor | None = None
    logits: Tensor | None = None  # (B, L, V); with labels (B, K, V) at ``logit_positions`` only
    logit_positions: Tensor | None = None  # (K,) with labels: the positions whose next token carries a label
    cache: object | None = None  # the LLM's KV cache
    hidden_states: tuple[Tensor, ...] | None = None
    attentions: tuple[Tensor, ...] | None = None


def require_model_dir(directory: str | os.PathLike[str]) -> None:
    """A local model directory with its config.json (nothing is fetched from a model hub)."""
    if not Path(directory, "config.json").is_file():
        raise FileNotFoundError(
            f"model directory {directory} not found (or without config.json): give a "
            "directory written by training, `videopanda convert` or save_pretrained"
        )

# The STAB's parameters its constructors set to zero (the release's zero-initialised branches).
_ZERO_INIT: dict[type[nn.Module], tuple[str, ...]] = {
    LocalTemporalMHRA: ("pos_embed.3.weight", "pos_embed.3.bias"),
    LocalSpatioTemporalEncoder: ("dpe.bias",),
    GSTRAMlp: ("c_proj.weight", "c_proj.bias"),
    GlobalSpatioTemporalAttention: ("attn.out_proj.weight", "attn.out_proj.bias"),
    STAB: ("temporal_cls_token", "balance"),
}


class VideoPandaPreTrainedModel(PreTrainedModel):
    config_class = VideoPandaConfig
    config: VideoPandaConfig
    base_model_prefix = ""
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["STAB"]

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike[str] | None, *args: Any, **kwargs: Any
    ) -> Self:
        """A local model directory (nothing is fetched from a model hub), or ``None`` with ``config=``."""
        if pretrained_model_name_or_path is not None:
            require_model_dir(pretrained_model_name_or_path)
            check_weight_files(pretrained_model_name_or_path)
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    def _init_weights(self, module: nn.Module) -> None:
        """STAB, projector and distillation-head modules get their constructors' init.

        transformers calls this for weights a checkpoint lacks (e.g. a distillation head switched
        on over a stage output without one) and for every module of a model built on the meta
        device; inside ``from_pretrained`` the init functions skip tensors that were loaded.
        transformers skips modules without parameters of their own (the STAB's containers), so the
        zero-initialised branches are zeroed on their leaf layers, after the layers' defaults.
        The LLM inits itself.
        """
        parts = [getattr(self, name, None) for name in ("stab", "projector", "distill_head")]
        if not any(module is m for part in parts if isinstance(part, nn.Module) for m in part.modules()):
            return
        if any(module is m for m in self._held_modules()):  # never called: zeros, as its constructor leaves it
            for buffer in module.buffers(recurse=False):
                init.zeros_(buffer)
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):  # torch's reset writes the buffers unguarded
            init.ones_(module.weight)
            init.zeros_(module.bias)
            if module.running_mean is not None and module.running_var is not None:
                init.zeros_(module.running_mean)
                init.ones_(module.running_var)
            if module.num_batches_tracked is not None:
                init.zeros_(module.num_batches_tracked)
        elif isinstance(module, nn.MultiheadAttention):
            module._reset_parameters()
        elif callable(reset_parameters := getattr(module, "reset_parameters", None)):
            reset_parameters()
        zero = self._zero_initialised_parameters()
        for param in module.parameters(recurse=False):
            if id(param) in zero:
                init.zeros_(param)
        if isinstance(module, STAB):
            scale = module.balance.shape[0] ** -0.5
            init.normal_(module.class_embedding, std=scale)
            init.normal_(module.split_embedding, std=scale)

    def _held_modules(self) -> list[nn.Module]:
        """The STAB's never-called LMHRA (the release's ``lmhra2``) and its layers: buffers held for checkpoints."""
        stab = getattr(self, "stab", None)
        return list(stab.lste.unused_lmhra.modules()) if isinstance(stab, STAB) else []

    def _zero_initialised_parameters(self) -> set[int]:
        """The ids of the STAB's parameters its constructors set to zero (``_ZERO_INIT``)."""
        stab = getattr(self, "stab", None)
        owners = stab.modules() if isinstance(stab, nn.Module) else ()
        zero: set[int] = set()
        for owner in owners:
            params = dict(owner.named_parameters())  # the never-called LMHRA holds buffers: not among them
            zero.update(id(params[name]) for name in _ZERO_INIT.get(type(owner), ()) if name in params)
        return zero


class VideoPandaForCausalLM(VideoPandaPreTrainedModel, GenerationMixin):
    language_model: Any  # a transformers causal LM, or a PEFT model wrapping one (LoRA training)

    def __init__(self, config: VideoPandaConfig, language_model: PreTrainedModel | None = None) -> None:
        super().__init__(config)
        self.stab = STAB(config)
        if not self.stab.patch_embedding.weight.is_meta:  # its constructor initialised it: post_init keeps that draw
            for module in self.stab.modules():
                module._is_hf_initialized = True  # type: ignore[assignment]  # transformers reads it
        self.projector = build_projector(config.stab_hidden_size, config.llm_hidden_size)
        self.language_model = language_model or AutoModelForCausalLM.from_config(config.text_config)
        self.distill_head = DistillationHead(config) if config.use_distillation else None
        # Set by training under DeepSpeed: ZeRO-3 gathers the STAB's parameters when it runs, so every rank must
        # run it in every step, also on a batch without video (see ``_touch_visual_modules``).
        self.stab_in_every_forward = False
        self.post_init()

    @classmethod
    def from_llm(
        cls, language_model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, **config_kwargs: Any
    ) -> VideoPandaForCausalLM:
        """A fresh STAB + projector around an existing LLM, its weights kept.

        ``tokenizer`` must hold the ``<image>`` token (``llm.load_tokenizer`` adds it); the
        LLM's embeddings grow to the tokenizer's vocabulary with zero new rows.
        ``config_kwargs`` are ``VideoPandaConfig`` fields (STAB geometry, distillation).
        """
        token_id = image_token_id(tokenizer)
        resize_for_tokenizer(language_model, tokenizer)
        attention = language_model.config._attn_implementation
        config = VideoPandaConfig(text_config=language_model.config, image_token_id=token_id, **config_kwargs)
        config._attn_implementation = attention  # the composite config's init resets it on its sub-config
        return cls(config, language_model=language_model)

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def set_output_embeddings(self, new_embeddings: nn.Module) -> None:
        self.language_model.set_output_embeddings(new_embeddings)

    @can_return_tuple
    def get_video_features(
        self, pixel_values_videos: Tensor, video_grid_thw: Tensor, output_hidden_states: bool | None = None,
        output_attentions: bool | None = None, **kwargs: Any,
    ) -> VideoFeatures:
        """pixel_values_videos (F, 4, S, S), video_grid_thw (V, 3) -> ``VideoFeatures``: the projected tokens
        (N, D) as ``pooler_output``; with ``output_hidden_states`` / ``output_attentions`` (or the config's
        flags) the STAB's per-block outputs and weights (``STABOutput``: its three attention blocks are its layers).
        """
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        if output_attentions is None:
            output_attentions = self.config.output_attentions
        chunks = chunk_lengths(video_grid_thw, self.config.chunk_length)  # (C,)
        stab_out = self.stab(pixel_values_videos.to(self.stab.patch_embedding.weight.dtype), chunks,
                             output_hidden_states=output_hidden_states, output_attentions=output_attentions)
        per_frame = stab_out.tokens.split(stab_out.tokens_per_frame.tolist())
        return VideoFeatures(
            last_hidden_state=nn.utils.rnn.pad_sequence(list(per_frame), batch_first=True),  # (F, T, d)
            pooler_output=self.projector(stab_out.tokens),  # (N, D)
            hidden_states=stab_out.hidden_states,
            attentions=stab_out.attentions,
            tokens_per_frame=stab_out.tokens_per_frame,
            grid_hw=stab_out.grid_hw,
        )

    def placeholder_mask(self, input_ids: Tensor) -> Tensor:
        """(B, L) bool: the ``<image>`` positions (none while the model has no image token)."""
        if self.config.image_token_id is None:
            return torch.zeros_like(input_ids, dtype=torch.bool)
        return input_ids == self.config.image_token_id

    def embed_inputs(self, input_ids: Tensor, video: VideoFeatures | None) -> Tensor:
        """Token embeddings with each placeholder position replaced by its visual token: (B, L, D).

        Without frames (``video`` None) a placeholder is an ordinary token, as in transformers' LLaVA.
        """
        placeholder = self.placeholder_mask(input_ids)  # (B, L)
        # With frames the placeholder row is never read; without, a placeholder reads its own row.
        embeds = self.get_input_embeddings()(input_ids if video is None else input_ids.masked_fill(placeholder, 0))
        tokens = None if video is None else video.pooler_output  # (N, D)
        if tokens is None:
            return embeds
        num_positions = int(placeholder.sum())
        if num_positions != tokens.shape[0]:
            raise ValueError(
                f"the prompt holds {num_positions} image placeholder positions but the frames give {tokens.shape[0]} "
                "visual tokens: expand each frame's <image> with the processor"
            )
        mask = placeholder[..., None].expand_as(embeds)
        return embeds.masked_scatter(mask, tokens.to(embeds.dtype))

    @can_return_tuple
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        cache: Any | None = None,
        inputs_embeds: Tensor | None = None,
        labels: Tensor | None = None,
        pixel_values_videos: Tensor | None = None,
        video_grid_thw: Tensor | None = None,
        teacher_features: Tensor | None = None,
        teacher_patches_per_frame: Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | list[int] | None = None,
        logits_to_keep: int | Tensor = 0,
        **kwargs: Any,
    ) -> VideoPandaOutput:
        """input_ids/attention_mask/labels (B, L); pixel_values_videos (F, 4, S, S); video_grid_thw (V, 3).

        ``teacher_features (N_t, Dt)`` with ``teacher_patches_per_frame (F,)`` add the
        distillation loss (spec 4) when the model has a distillation head.
        ``cache`` is the LLM's KV cache (transformers 5 name of ``past_key_values``, also accepted).
        Frames whose placeholders are all in ``cache`` already are not run again.
        With ``labels``, logits are computed only at ``logit_positions`` (the loss is unchanged).
        ``return_dict=False`` gives the output's non-None fields as a tuple.
        """
        video = None
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("forward needs input_ids or inputs_embeds")
            video = self._video_features_or_none(input_ids, pixel_values_videos, video_grid_thw, cache)
            # Before the embeddings, where a batch with video runs the STAB: ZeRO-3 gathers in the same order.
            untouched = video is None and self.stab_in_every_forward and self.training
            zero = self._touch_visual_modules() if untouched else None
            inputs_embeds = self.embed_inputs(input_ids, video)
            if zero is not None:
                inputs_embeds = inputs_embeds + zero
        distill = self.distill_head is not None and teacher_features is not None and video is not None
        hidden_wanted = self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        logit_positions = None
        if labels is not None:
            if input_ids is not None:
                labels = labels.masked_fill(self.placeholder_mask(input_ids), -100)
            logit_positions, kwargs["shift_labels"] = positions_with_targets(labels)
            logits_to_keep = logit_positions
        out = self.language_model(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids, labels=labels,
            cache=cache, use_cache=use_cache, logits_to_keep=logits_to_keep,
            output_attentions=self.config.output_attentions if output_attentions is None else output_attentions,
            output_hidden_states=True if distill else hidden_wanted, return_dict=True, **kwargs,
        )
        lm_loss, distill_loss = out.loss, None
        if distill and input_ids is not None and video is not None and video.grid_hw is not None \
                and teacher_features is not None:  # all implied
            if teacher_patches_per_frame is None:
                raise ValueError("teacher_features need teacher_patches_per_frame (F,) to tell the frames apart")
            placeholder = self.placeholder_mask(input_ids)  # (B, L)
            distill_loss = self.distillation_loss(
                out.hidden_states, placeholder, video.grid_hw, teacher_features, teacher_patches_per_frame
            )
        losses = [x for x in (lm_loss, distill_loss) if x is not None]
        loss = functools.reduce(operator.add, losses) if losses else None
        return VideoPandaOutput(
            loss=loss, lm_loss=lm_loss, distill_loss=distill_loss, logits=out.logits,
            logit_positions=logit_positions, cache=out.cache,
            hidden_states=_selected_layers(out.hidden_states, hidden_wanted) if distill else out.hidden_states,
            attentions=out.attentions,
        )

    def _video_features_or_none(
        self, input_ids: Tensor, pixel_values_videos: Tensor | None, video_grid_thw: Tensor | None, cache: Any
    ) -> VideoFeatures | None:
        """The STAB's tokens for the frames, or None without frames or when they are in ``cache`` already
        (generation continued from a cache: ``input_ids`` holds none of their placeholders)."""
        if pixel_values_videos is None or pixel_values_videos.shape[0] == 0:
            return None
        cached = cache is not None and cache.get_seq_length() > 0
        if cached and not bool(self.placeholder_mask(input_ids).any()):
            return None
        if video_grid_thw is None:
            raise ValueError(f"pixel_values_videos {tuple(pixel_values_videos.shape)} need video_grid_thw (V, 3)")
        return self.get_video_features(pixel_values_videos, video_grid_thw)

    def _touch_visual_modules(self) -> Tensor:
        """A zero scalar that depends on every STAB and projector parameter: one blank video chunk through both
        (a video, not an image, so the modules run, and ZeRO-3 gathers, in the order of a batch with video).

        The STAB runs in the mode the other ranks run it in (its train and eval forwards touch parameters in
        different orders, which ZeRO-3's gathers must not see), with every BatchNorm's momentum at 0 so its
        running statistics stay as they were (they are inputs of the backward: they cannot be restored
        in place); its batch counters are put back. The gradients it adds are zeros.
        """
        frames, size = self.config.chunk_length, self.config.image_size
        blank = self.stab.patch_embedding.weight.new_zeros(frames, 4, size, size)
        blank[:, 3] = 1  # all of the canvas is valid
        norms = [m for m in self.stab.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        settings = [(m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone())
                    for m in norms]
        for norm in norms:
            norm.momentum = 0.0
        try:
            tokens = self.projector(self.stab(blank, torch.tensor([frames])).tokens)  # (N, D)
        finally:
            for norm, (momentum, count) in zip(norms, settings, strict=True):
                norm.momentum = momentum
                if count is not None and norm.num_batches_tracked is not None:
                    norm.num_batches_tracked.copy_(count)
        return tokens.sum() * 0

    def distillation_loss(
        self,
        hidden_states: tuple[Tensor, ...],
        placeholder: Tensor,
        grid_hw: Tensor,
        teacher_features: Tensor,
        teacher_patches_per_frame: Tensor,
    ) -> Tensor:
        """Spec 4: student hidden states at each real frame's patch positions vs teacher patches.

        hidden_states: L+1 entries of (B, L, D); placeholder (B, L) bool; grid_hw (F, 2);
        teacher_features (N_t, Dt), teacher_patches_per_frame (F,) (0 for frames without content).
        """
        if self.distill_head is None:
            raise ValueError("the model has no distillation head (config.use_distillation is False)")
        if teacher_patches_per_frame.shape != grid_hw.shape[:1]:
            raise ValueError(
                f"teacher_patches_per_frame {tuple(teacher_patches_per_frame.shape)} must give one count per frame "
                f"({grid_hw.shape[0]} frames)"
            )
        real = (teacher_patches_per_frame > 0).to(grid_hw.device)  # (F,) frames with content
        if not bool(real.any()):
            return hidden_states[-1].sum() * 0  # no real frame: zero loss, still part of the graph
        is_patch, frame_of_token = patch_token_mask(grid_hw)  # (N,), (N,)
        keep = is_patch & real[frame_of_token]
        layers = self.distill_head.layer_indices
        student = torch.stack([hidden_states[i][placeholder][keep] for i in layers], 1)  # (P, K, D)
        grid_hw = grid_hw[real]
        factor = self._student_to_teacher_factor()
        if factor > 1:
            student, grid_hw = pool_patch_grid(student, grid_hw, factor)
        counts = grid_hw[:, 0] * grid_hw[:, 1]  # (F_real,)
        expected = teacher_patches_per_frame.to(counts.device)[real]
        if not torch.equal(counts, expected) or teacher_features.shape[0] != int(counts.sum()):
            raise ValueError(
                f"student patch grids give {counts.tolist()} patches per real frame, the teacher "
                f"{expected.tolist()} with {teacher_features.shape[0]} feature rows"
            )
        return self.distill_head(student, teacher_features.to(student.dtype), counts).loss

    def _student_to_teacher_factor(self) -> int:
        cfg = self.config
        student_grid = cfg.image_size // (cfg.patch_size * cfg.lsd_stride)
        teacher_grid = cfg.teacher_image_size // cfg.teacher_patch_size
        return max(1, student_grid // teacher_grid)

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        """GenerationMixin's ``generate`` (prompt + new tokens returned, as transformers' decoder-only models);
        the ``<image>`` token is never generated.

        Batched prompts must be left-padded (the collator's ``padding_side="left"``). The frames
        (``pixel_values_videos``, ``video_grid_thw``) are read in the first step; continuing from a
        returned ``cache`` (``past_key_values``) needs the whole sequence so far, not the frames again.
        """
        attention_mask = kwargs.get("attention_mask")
        if attention_mask is not None and bool((attention_mask[:, -1] == 0).any()):
            raise ValueError("generate needs left-padded prompts: some rows end with padding")
        if self.config.image_token_id is not None and "generation_config" not in kwargs:
            kwargs.setdefault("suppress_tokens", [self.config.image_token_id])
        return super().generate(*args, **kwargs)


def build_videopanda(
    llm: str | Path | None = "smollm2", dtype: torch.dtype = torch.float32, **config_kwargs: Any
) -> tuple[VideoPandaForCausalLM, PreTrainedTokenizerBase]:
    """A fresh Video-Panda model and its tokenizer around a local LLM directory or the embedded SmolLM2.

    ``config_kwargs`` are ``VideoPandaConfig`` fields, e.g. ``stab_hidden_size=256, image_size=224``.
    """
    tokenizer = load_tokenizer(llm)
    model = VideoPandaForCausalLM.from_llm(load_llm(llm, dtype), tokenizer, **config_kwargs)
    return cast_weights(model, dtype), tokenizer


def _selected_layers(
    hidden_states: tuple[Tensor, ...] | None, wanted: bool | list[int] | None
) -> tuple[Tensor, ...] | None:
    """The hidden states a caller asked for, out of every layer's (computed for the distillation loss)."""
    if hidden_states is None or not wanted:
        return None
    return hidden_states if wanted is True else tuple(hidden_states[i] for i in wanted)


def positions_with_targets(labels: Tensor) -> tuple[Tensor, Tensor]:
    """The positions whose next token is a target in some row, and those targets: ``(K,)``, ``(B, K)``.

    A video prompt is mostly visual tokens and instructions without labels: computing the LLM head
    (vocabulary-wide) only where the loss reads it makes the quickstart's SmolLM2 training step 1.4x
    faster (benchmarks/lm_head_positions.py). Rows are aligned: the positions are the union over the batch.
    """
    shifted = nn.functional.pad(labels, (0, 1), value=-100)[:, 1:]  # (B, L): the token each position predicts
    positions = (shifted != -100).any(0).nonzero().flatten()  # (K,)
    return positions, shifted[:, positions]


def patch_token_mask(grid_hw: Tensor) -> tuple[Tensor, Tensor]:
    """For the N visual tokens of frames laid out ``[context, rows + split]``: which are patches.

    Returns ``is_patch (N,)`` bool and ``frame_of_token (N,)`` long.
    """
    counts = tokens_per_frame(grid_hw)
    frame_of_token = torch.repeat_interleave(torch.arange(len(counts), device=grid_hw.device), counts)
    starts = torch.cumsum(counts, 0) - counts
    local = torch.arange(int(counts.sum()), device=grid_hw.device) - starts[frame_of_token]
    width = grid_hw[frame_of_token, 1]
    is_patch = (local > 0) & ((local - 1) % (width + 1) < width)
    return is_patch, frame_of_token


def pool_patch_grid(tokens: Tensor, grid_hw: Tensor, factor: int) -> tuple[Tensor, Tensor]:
    """Average-pool each frame's row-major (h, w) patch grid by ``factor``: (P, ...) -> (P', ...)."""
    counts = grid_hw[:, 0] * grid_hw[:, 1]
    frame = torch.repeat_interleave(torch.arange(len(counts), device=tokens.device), counts)
    local = torch.arange(tokens.shape[0], device=tokens.device) - (torch.cumsum(counts, 0) - counts)[frame]
    width = grid_hw[frame, 1]
    pooled_hw = grid_hw // factor
    row, col = (local // width) // factor, (local % width) // factor
    inside = (row < pooled_hw[frame, 0]) & (col < pooled_hw[frame, 1])
    pooled_counts = pooled_hw[:, 0] * pooled_hw[:, 1]
    group = (torch.cumsum(pooled_counts, 0) - pooled_counts)[frame] + row * pooled_hw[frame, 1] + col
    total = int(pooled_counts.sum())
    summed = tokens.new_zeros(total, *tokens.shape[1:]).index_add(0, group[inside], tokens[inside])
    return summed / factor**2, pooled_hw


# ``registration`` imports this module when transformers' ``AutoModelForCausalLM`` is first imported.
AutoModelForCausalLM.register(VideoPandaConfig, VideoPandaForCausalLM, exist_ok=True)
