"""What a model directory is, read off its files without loading anything: the one owner of that fact.

Kinds, in the order they are told apart:
    videopanda     config.json with ``model_type`` "videopanda": a training stage's output, a merged LoRA
                   output, the quickstart's model, ``videopanda convert --release``'s output
    lora_adapter   an unmerged LoRA stage output: ``lora_base.json`` + ``adapter/`` (peft), no model config
    release        the release's layout: a LLaVA-style config.json with ``mm_*`` keys (``model.release``)
    llm            any other config.json: a plain causal LM (a fresh model's LLM, a chat model)
    not_a_model    none of these (or no directory at all)
"""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import Any

import yaml

from videopanda.data.conversation import RELEASE_INFERENCE_TEMPLATE, inference_template

MODEL_TYPE = "videopanda"  # VideoPandaConfig.model_type, without importing the model
CONFIG_FILE = "config.json"
LORA_ADAPTER_DIR = "adapter"  # a LoRA stage output's peft adapter of the LLM
LORA_BASE_FILE = "lora_base.json"  # a LoRA stage output's reference to the model it started from
TRAIN_CONFIG_FILE = "train_config.yaml"  # the training config a stage output keeps beside its model
RELEASE_KEY_PREFIX = "mm_"  # the release's multimodal config.json keys (mm_hidden_size, mm_projector_type, ...)


class ModelDirKind(enum.Enum):
    VIDEOPANDA = "videopanda"
    LORA_ADAPTER = "lora_adapter"
    RELEASE = "release"
    LLM = "llm"
    NOT_A_MODEL = "not_a_model"


class ModelDirError(ValueError):
    """A path that is not the kind of model directory asked for; the message says what to do."""


def read_config_json(path: str | Path) -> dict | None:
    """``path``'s config.json as a dict, None without one; ``ModelDirError`` if it is not a JSON object."""
    file = Path(path) / CONFIG_FILE
    if not file.is_file():
        return None
    try:
        config = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelDirError(f"{file} is not valid JSON ({err}): restore it from the model's source") from None
    if not isinstance(config, dict):
        raise ModelDirError(f"{file} is not a JSON object: restore it from the model's source")
    return config


def model_dir_kind(path: str | Path) -> ModelDirKind:
    config = read_config_json(path) if Path(path).is_dir() else None
    if config is not None and config.get("model_type") == MODEL_TYPE:
        return ModelDirKind.VIDEOPANDA
    if (Path(path) / LORA_BASE_FILE).is_file() and (Path(path) / LORA_ADAPTER_DIR).is_dir():
        return ModelDirKind.LORA_ADAPTER
    if config is not None and any(key.startswith(RELEASE_KEY_PREFIX) for key in config):
        return ModelDirKind.RELEASE
    if config is not None:
        return ModelDirKind.LLM
    return ModelDirKind.NOT_A_MODEL


_WHAT_TO_DO = {
    ModelDirKind.LORA_ADAPTER: "an unmerged LoRA output: merge it (`videopanda train --merge`) or load it with "
                               "videopanda.inference.load_model_dir",
    ModelDirKind.RELEASE: "a release checkpoint: convert it first (`videopanda convert --release DIR --out OUT`)",
    ModelDirKind.LLM: "a plain language model: train a Video-Panda model around it (`videopanda train`)",
    ModelDirKind.NOT_A_MODEL: "no model directory (no config.json): give a directory written by training, "
                              "`videopanda convert` or save_pretrained",
}


def require_kind(path: str | Path, *kinds: ModelDirKind) -> ModelDirKind:
    """``path``'s kind if it is one of ``kinds``, else a one-line ``ModelDirError`` saying what it is instead."""
    if not Path(path).exists():
        raise ModelDirError(f"model directory {path} not found: give a directory written by training, "
                            "`videopanda convert` or save_pretrained")
    kind = model_dir_kind(path)
    if kind is ModelDirKind.VIDEOPANDA and kind not in kinds:
        raise ModelDirError(f"{path} is a Video-Panda model directory, where {' or '.join(k.value for k in kinds)} "
                            "is wanted")
    if kind not in kinds:
        raise ModelDirError(f"{path} is not a Video-Panda model directory: it is {_WHAT_TO_DO[kind]}")
    return kind


def require_videopanda_dir(path: str | Path) -> Path:
    """``path`` if it is a Video-Panda model directory (config.json of model_type "videopanda")."""
    require_kind(path, ModelDirKind.VIDEOPANDA)
    return Path(path)


def model_template(model_dir: str | Path, config: Any = None) -> str:
    """The template a model directory is prompted with: its config's ``prompt_template``, else the
    evaluation form of its ``train_config.yaml``'s ``data.template`` (older directories), else the release's."""
    recorded = (getattr(config, "prompt_template", None) if config is not None
                else (read_config_json(model_dir) or {}).get("prompt_template"))
    if recorded:
        return recorded
    path = Path(model_dir) / TRAIN_CONFIG_FILE
    if not path.is_file():
        return RELEASE_INFERENCE_TEMPLATE
    try:
        template = (yaml.safe_load(path.read_text()) or {}).get("data", {}).get("template")
    except (yaml.YAMLError, AttributeError) as err:
        raise ValueError(f"{path} is not a training config: {err}") from err
    return inference_template(template) if template else RELEASE_INFERENCE_TEMPLATE
