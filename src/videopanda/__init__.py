"""videopanda: encoder-free video-language models (Video-Panda, CVPR 2025).

Pipeline: ``data`` (decode, sample, transform, tokenize) -> ``model`` (STAB,
projector, any Hugging Face causal LM) -> ``train`` (three-stage recipe) ->
``eval`` (zero-shot video QA with an LLM judge), plus a thin ``cli``.

The Python API is importable from here (``from videopanda import VideoPandaPredictor``);
names load on first use, so ``import videopanda`` (and ``videopanda --help``) stays light.
``import videopanda`` registers the model with transformers' ``AutoConfig`` and ``AutoModelForCausalLM``
when transformers loads them (``model.registration``), so ``import videopanda`` itself stays torch-free.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from videopanda.model.registration import install as _install_auto_registration

__version__ = "0.1.0"

_EXPORTS = {
    "VideoPandaConfig": "videopanda.model.configuration_videopanda",
    "VideoPandaForCausalLM": "videopanda.model.modeling_videopanda",
    "VideoPandaProcessor": "videopanda.data.processing_videopanda",
    "VideoPandaPredictor": "videopanda.inference",
    "GenerationConfig": "videopanda.inference",
    "load_tokenizer": "videopanda.model.llm",
}
__all__ = ["__version__", *_EXPORTS]

_install_auto_registration()

if TYPE_CHECKING:  # the names for type checkers; ``as`` marks them re-exported
    from videopanda.data.processing_videopanda import VideoPandaProcessor as VideoPandaProcessor
    from videopanda.inference import GenerationConfig as GenerationConfig
    from videopanda.inference import VideoPandaPredictor as VideoPandaPredictor
    from videopanda.model.configuration_videopanda import VideoPandaConfig as VideoPandaConfig
    from videopanda.model.llm import load_tokenizer as load_tokenizer
    from videopanda.model.modeling_videopanda import VideoPandaForCausalLM as VideoPandaForCausalLM


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'videopanda' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
