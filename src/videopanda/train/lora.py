"""LoRA and QLoRA on the LLM of a Video-Panda model (peft), and a LoRA stage's output directory.

A LoRA stage trains low-rank adapters on the LLM's linear layers while the base LLM stays
frozen; the STAB, projector and distillation head train fully as the stage rule says. QLoRA
(``model.load_in_4bit``) holds the frozen base LLM in bitsandbytes NF4 (CUDA only).

A LoRA stage's output directory::

    adapter/                      the LLM's adapter, peft format (adapter_config.json + adapter_model.safetensors)
    non_llm_weights.safetensors   every STAB, projector and distillation-head weight
    lora_base.json                the model the stage started from (``ModelInit`` fields)
    tokenizer files, train_config.yaml

``load_lora_output`` rebuilds the model from it (the base, unquantized, + those weights + the
adapter, merged or not); with ``merge_lora`` (``videopanda train --merge``) the merged model is
also saved into the same directory (``config.json`` + ``model.safetensors``), which makes it a
model directory like any other stage output.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors.torch import save_file

from videopanda.data.processing_videopanda import save_model_processor
from videopanda.model.directory import LORA_ADAPTER_DIR, LORA_BASE_FILE
from videopanda.model.weights import load_weight_file
from videopanda.runtime import DeviceError
from videopanda.train.config import LoraSettings, ModelInit
from videopanda.train.stages import LLM_PREFIX

logger = logging.getLogger(__name__)
NON_LLM_WEIGHTS = "non_llm_weights.safetensors"
# Never quantized in QLoRA: the trained visual modules and the LLM head.
QLORA_SKIP_MODULES = ["stab", "projector", "distill_head", "lm_head"]


def qlora_quantization_config():
    """bitsandbytes NF4 (double quantization, bf16 compute) for the base LLM; a ``DeviceError`` without CUDA."""
    if not torch.cuda.is_available():
        raise DeviceError("model.load_in_4bit (QLoRA) needs a CUDA device for bitsandbytes NF4 and this machine has "
                          "none: drop model.load_in_4bit to train plain LoRA")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16, llm_int8_skip_modules=QLORA_SKIP_MODULES,
    )


def add_lora(model, settings: LoraSettings, quantized: bool = False, gradient_checkpointing: bool = False) -> None:
    """Wrap ``model.language_model`` in a peft adapter model (in place)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    llm = model.language_model
    if quantized:
        llm = prepare_model_for_kbit_training(llm, use_gradient_checkpointing=gradient_checkpointing,
                                              gradient_checkpointing_kwargs={"use_reentrant": False})
    # peft annotates lora_alpha as int but only ever divides it (scaling = alpha / r): a float alpha works
    peft_config = LoraConfig(r=settings.r, lora_alpha=settings.alpha,  # type: ignore[arg-type]
                             lora_dropout=settings.dropout, target_modules=list(settings.target_modules),
                             task_type="CAUSAL_LM")
    model.language_model = get_peft_model(llm, peft_config)
    logger.info("LoRA r=%d alpha=%g on %s of the LLM", settings.r, settings.alpha, ", ".join(settings.target_modules))


def save_lora_output(model, tokenizer, base: ModelInit, output_dir: str | Path) -> None:
    """Write the adapter, the non-LLM weights and the base reference (rank 0 only)."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.language_model.save_pretrained(output_dir / LORA_ADAPTER_DIR)
    non_llm = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
               if not k.startswith(LLM_PREFIX + ".")}
    save_file(non_llm, str(output_dir / NON_LLM_WEIGHTS))
    reference = {"init": base.init, "config": base.config, "use_distillation": base.use_distillation,
                 "num_frames": model.config.num_frames}
    (output_dir / LORA_BASE_FILE).write_text(json.dumps(reference, indent=1) + "\n")
    save_model_processor(output_dir, tokenizer, model.config)


def load_lora_output(path: str | Path, merge: bool = True):
    """The model a LoRA stage wrote to ``path``: its base + trained non-LLM weights + the LLM adapter.

    ``merge=True`` folds the adapter into the LLM's weights (a plain model again); ``merge=False``
    keeps the peft wrapper (the model as it trained). Returns ``(model, tokenizer)``.
    """
    from peft import PeftModel

    from videopanda.model.llm import load_tokenizer
    from videopanda.train.run import load_model

    path = Path(path)
    base = ModelInit(**json.loads((path / LORA_BASE_FILE).read_text()))
    model, _ = load_model(base)
    missing, unexpected = model.load_state_dict(load_weight_file(path / NON_LLM_WEIGHTS), strict=False)
    not_llm = [k for k in missing if not k.startswith(LLM_PREFIX + ".")]
    if not_llm or unexpected:
        raise ValueError(f"{path / NON_LLM_WEIGHTS} does not fit its base {base.init}: "
                         f"missing {not_llm[:5]}, unexpected {unexpected[:5]}")
    llm = PeftModel.from_pretrained(model.language_model, path / LORA_ADAPTER_DIR)
    model.language_model = llm.merge_and_unload() if merge else llm
    return model, load_tokenizer(path)


def merge_lora_output(path: str | Path) -> Path:
    """Save the merged model of a LoRA output into the same directory: a loadable model directory."""
    model, tokenizer = load_lora_output(path, merge=True)
    model.save_pretrained(path)
    save_model_processor(path, tokenizer, model.config)
    logger.info("merged LoRA model saved to %s", path)
    return Path(path)

