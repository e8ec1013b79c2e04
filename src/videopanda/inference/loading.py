"""Every kind of model directory -> a Video-Panda model and its tokenizer, in one place.

``load_model_dir`` takes what ``model.directory.model_dir_kind`` calls videopanda (a training stage's
output, a merged LoRA output, the quickstart's model, ``videopanda convert --release``'s output),
lora_adapter (an unmerged LoRA output: its base + trained weights + the adapter, merged on load) and
release (the release's own layout, converted on load); anything else is a one-line ``ModelDirError``.
Weights end in the run's precision (``runtime.resolve_precision``) through ``cast_weights``, which
keeps the float32 buffers that are not weights (the LLM's RoPE ``inv_freq``) in float32, as
``from_pretrained(dtype=...)`` does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from videopanda.model.configuration_videopanda import VideoPandaConfig
from videopanda.model.directory import LORA_BASE_FILE, ModelDirKind, model_dir_kind, require_kind
from videopanda.model.modeling_videopanda import VideoPandaForCausalLM
from videopanda.runtime import Precision, cast_weights, resolve_device, resolve_precision

LOADABLE_KINDS = (ModelDirKind.VIDEOPANDA, ModelDirKind.LORA_ADAPTER, ModelDirKind.RELEASE)


@dataclass
class LoadedModel:
    model: VideoPandaForCausalLM  # in ``precision``, on the device asked for, in eval mode
    tokenizer: PreTrainedTokenizerBase
    precision: Precision
    kind: ModelDirKind


def is_loadable(path: str | Path) -> bool:
    """Whether ``load_model_dir`` takes ``path`` (a Video-Panda directory of any kind)."""
    return model_dir_kind(path) in LOADABLE_KINDS


def require_loadable(path: str | Path) -> ModelDirKind:
    """``path``'s kind if ``load_model_dir`` takes it, else a one-line ``ModelDirError`` saying what it is."""
    return require_kind(path, *LOADABLE_KINDS)


def load_model_dir(path: str | Path, dtype: str = "auto", device: str = "cpu") -> LoadedModel:
    """The model a directory of any loadable kind holds, with its tokenizer.

    ``dtype``: ``auto`` (``runtime.resolve_precision``), ``float32``, ``bfloat16`` or ``float16``;
    ``device``: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
    """
    from videopanda.model.llm import load_tokenizer

    kind = require_loadable(path)
    target = resolve_device(device)
    precision = resolve_precision(dtype, target)
    if kind is ModelDirKind.VIDEOPANDA:
        model = VideoPandaForCausalLM.from_pretrained(path, dtype=precision.torch_dtype)
        tokenizer = load_tokenizer(path)
    elif kind is ModelDirKind.LORA_ADAPTER:
        from videopanda.train.lora import load_lora_output

        model, tokenizer = load_lora_output(path, merge=True)
    else:
        from videopanda.model.release import check_release_dir, load_release_checkpoint

        tokenizer = load_tokenizer(check_release_dir(path))
        model, _ = load_release_checkpoint(path, dtype=precision.torch_dtype, tokenizer=tokenizer)
    cast_weights(model, precision.torch_dtype).to(target)  # type: ignore[arg-type]  # in place; @wraps(Module.to) hides self
    return LoadedModel(model.eval(), tokenizer, precision, kind)


def read_model_config(path: str | Path) -> VideoPandaConfig | None:
    """A model directory's ``VideoPandaConfig`` without its weights; None where only the weights tell it (a
    release checkpoint, a LoRA output on a fresh model), or for a directory ``load_model_dir`` refuses."""
    kind = model_dir_kind(path)
    if kind is ModelDirKind.VIDEOPANDA:
        return VideoPandaConfig.from_pretrained(path)
    if kind is ModelDirKind.LORA_ADAPTER:
        base = json.loads((Path(path) / LORA_BASE_FILE).read_text())
        config = read_model_config(base["init"])
        if config is not None and base.get("num_frames"):
            config.num_frames = base["num_frames"]
        return config
    return None
