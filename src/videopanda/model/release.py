"""Release checkpoint directories (``Video-Panda-7B/videopanda_fitu``) <-> ``VideoPandaForCausalLM``.

A release directory holds
    config.json        a LLaVA/EVE-style LLaMA config with extra ``mm_*`` keys
    weights            ``pytorch_model-0000X-of-0000N.bin`` + ``pytorch_model.bin.index.json``,
                       ``model-0000X-of-0000N.safetensors`` + ``model.safetensors.index.json``,
                       or a single ``model.safetensors`` / ``pytorch_model.bin``
    tokenizer files    the LLM's tokenizer (no ``<image>`` token: it is added on load)

Key names go through ``convert.py``. How the config is mapped (assumptions):
    * the LLM is a LLaMA (the release's Vicuna/LLaMA-2 layout): the LLaMA fields of
      config.json form ``text_config``; ``vocab_size`` follows the embedding's rows and
      ``tie_word_embeddings`` whether the checkpoint holds ``lm_head.weight``;
    * STAB width and patch size come from ``patch_embedding``'s shape, distillation
      (teacher width, layer rate) from the ``video_tower_compressor`` weights, when present;
    * everything else (frame sizes 448/224, LSD stride 2, chunks of 4, 8 frames,
      8 heads) is the release default of ``VideoPandaConfig``; pass overrides to change it.
Directories written by ``export_release_checkpoint`` also carry our full config under
the ``videopanda`` key (the release's code ignores unknown keys), so they load exactly.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import split_torch_state_dict_into_shards
from safetensors.torch import save_file
from torch import Tensor
from tqdm import tqdm
from transformers import AutoConfig, PreTrainedTokenizerBase

from videopanda.data.conversation import RELEASE_INFERENCE_TEMPLATE
from videopanda.model.configuration_videopanda import VideoPandaConfig, image_token_id
from videopanda.model.convert import check_keys, ours_to_release, release_to_ours
from videopanda.model.directory import ModelDirKind, model_dir_kind
from videopanda.model.distill import selected_layer_indices
from videopanda.model.llm import load_tokenizer, resize_for_tokenizer
from videopanda.model.modeling_videopanda import VideoPandaForCausalLM
from videopanda.model.weights import load_weight_file

logger = logging.getLogger(__name__)

INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
SINGLE_FILES = ("model.safetensors", "pytorch_model.bin")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")
OUR_CONFIG_KEY = "videopanda"  # our full config (minus the LLM's), written by the exporter
LLM_MODEL_TYPE = "llama"  # the release's LLM
LEGACY_TEXT_FIELDS = ("rope_theta", "rope_scaling")  # older config.json names the config class still accepts
EXPORT_SHARD_SIZE = "5GB"


def load_release_checkpoint(
    directory: str | Path,
    dtype: torch.dtype | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    **config_overrides: Any,
) -> tuple[VideoPandaForCausalLM, dict[str, Tensor] | None]:
    """A release directory -> (our model with the ``<image>`` row added, teacher weights or None).

    ``dtype`` None keeps the checkpoint's own (that of its token embeddings).
    ``tokenizer`` defaults to the directory's own (``llm.load_tokenizer``: adds ``<image>``).
    ``config_overrides`` are ``VideoPandaConfig`` fields that the release files do not fix.
    Raises ``CheckpointKeyError`` listing unknown, missing or unexpected keys.
    """
    directory = Path(directory)
    tokenizer = tokenizer or _directory_tokenizer(directory)
    converted = release_to_ours(read_release_weights(directory))
    config = release_config(_read_json(directory / "config.json"), converted.model, **config_overrides)
    with torch.device("meta"):  # names and shapes only: no memory, no initialisation
        check_keys(VideoPandaForCausalLM(config), converted.model, ignore_missing=_tied_keys(config))
    dtype = dtype or converted.model["language_model.model.embed_tokens.weight"].dtype
    model = VideoPandaForCausalLM.from_pretrained(None, config=config, state_dict=converted.model, dtype=dtype)
    resize_for_tokenizer(model.language_model, tokenizer)
    model.config.image_token_id = image_token_id(tokenizer)
    model.config.prompt_template = RELEASE_INFERENCE_TEMPLATE  # the release's eval scripts prompt in this form
    logger.info("loaded release checkpoint %s (%d LLM layers, STAB width %d, teacher %s)", directory,
                config.llm_config.num_hidden_layers, config.stab_hidden_size,
                "kept" if converted.teacher else "absent")
    return model, converted.teacher or None


def export_release_checkpoint(
    model: VideoPandaForCausalLM,
    directory: str | Path,
    teacher: dict[str, Tensor] | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    max_shard_size: str | int = EXPORT_SHARD_SIZE,
) -> Path:
    """Write ``model`` (and teacher weights, tokenizer) in the release layout: shards, index, config.json."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    release = ours_to_release(model.state_dict(), teacher=teacher)
    _write_safetensors_shards(release, directory, max_shard_size)
    (directory / "config.json").write_text(json.dumps(release_config_dict(model.config), indent=2, sort_keys=True))
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    logger.info("exported %d tensors in the release layout to %s", len(release), directory)
    return directory


def check_release_dir(directory: str | Path) -> Path:
    """``directory`` if it looks like a release checkpoint (config.json, weights, tokenizer files), else an
    error naming what is absent, before anything is loaded."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"release directory {directory} not found")
    what = "is not a release checkpoint directory"
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(f"{directory} {what}: it has no config.json")
    if model_dir_kind(directory) is ModelDirKind.VIDEOPANDA:
        raise ValueError(f"{directory} {what}: it is already a Video-Panda model directory (load it as it is, "
                         "or export it with --to-release --model)")
    if not any((directory / name).is_file() for name in TOKENIZER_FILES):
        raise FileNotFoundError(f"{directory} {what}: it has no tokenizer files ({', '.join(TOKENIZER_FILES)})")
    weight_files(directory)
    return directory


def read_release_weights(directory: Path) -> dict[str, Tensor]:
    """All tensors of a directory's weight files (sharded or single, .bin or .safetensors)."""
    files = weight_files(directory)
    state: dict[str, Tensor] = {}
    for file in tqdm(files, desc=f"reading {directory.name}", unit="shard", disable=len(files) < 2):
        state.update(load_weight_file(file))
    return state


def weight_files(directory: Path) -> list[Path]:
    """The weight files of ``directory``: those its index names, else the single file, else the shards."""
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint directory {directory} not found")
    for name in INDEX_FILES:
        if (directory / name).is_file():
            shards = sorted(set(_read_json(directory / name)["weight_map"].values()))
            missing = [s for s in shards if not (directory / s).is_file()]
            if missing:
                raise FileNotFoundError(f"{directory / name} names shards that are absent: {missing}")
            return [directory / s for s in shards]
    for name in SINGLE_FILES:
        if (directory / name).is_file():
            return [directory / name]
    shards = sorted(directory.glob("model-*-of-*.safetensors")) or sorted(directory.glob("pytorch_model-*-of-*.bin"))
    if not shards:
        raise FileNotFoundError(f"no weights in {directory}: expected {INDEX_FILES}, {SINGLE_FILES} or shards")
    return shards


def release_config(values: dict[str, Any], state_dict: dict[str, Tensor], **overrides: Any) -> VideoPandaConfig:
    """VideoPandaConfig from a release config.json and our-named weights (see the module docstring)."""
    ours = dict(values.get(OUR_CONFIG_KEY, {}))
    model_type = ours.pop("text_model_type", LLM_MODEL_TYPE)
    text = AutoConfig.for_model(model_type, **_text_fields(values, model_type))
    text.vocab_size = state_dict["language_model.model.embed_tokens.weight"].shape[0]
    text.tie_word_embeddings = "language_model.lm_head.weight" not in state_dict
    params = {**_geometry_from_weights(state_dict), **ours, **overrides}
    if "mm_hidden_size" in values and values["mm_hidden_size"] != params["stab_hidden_size"]:
        raise ValueError(
            f"config.json says mm_hidden_size={values['mm_hidden_size']} but the STAB weights are "
            f"{params['stab_hidden_size']} wide"
        )
    return VideoPandaConfig(text_config=text, **params)


def release_config_dict(config: VideoPandaConfig) -> dict[str, Any]:
    """config.json of an exported directory: the LLM's fields, the release's mm_* keys, and ours."""
    ours = {k: v for k, v in config.to_diff_dict().items() if k in _our_fields()}
    ours["text_model_type"] = config.llm_config.model_type
    return {
        **config.llm_config.to_dict(),
        "mm_hidden_size": config.stab_hidden_size,
        "mm_projector_type": "mlp2x_gelu",
        "mm_use_im_start_end": False,
        "mm_use_im_patch_token": False,
        OUR_CONFIG_KEY: ours,
    }


def _geometry_from_weights(state_dict: dict[str, Tensor]) -> dict[str, Any]:
    """STAB width/patch size and distillation settings read off the weight shapes."""
    patch = state_dict.get("stab.patch_embedding.weight")
    if patch is None:
        raise ValueError("the checkpoint has no model.video_tower.patch_embedding.weight: not a Video-Panda checkpoint")
    params: dict[str, Any] = {"stab_hidden_size": patch.shape[0], "patch_size": patch.shape[-1]}
    if "distill_head.input_layer.weight" in state_dict:
        num_layers = _count_indices(state_dict, r"language_model\.model\.layers\.(\d+)\.")
        num_selected = _count_indices(state_dict, r"distill_head\.norm_layer\.(\d+)\.")
        rate = num_layers // (num_selected - 1) if num_selected > 1 else num_layers + 1  # L, L-rate, ..., 0
        if len(selected_layer_indices(num_layers, rate)) != num_selected:
            raise ValueError(f"{num_selected} distillation layers fit no layer rate of a {num_layers}-layer LLM")
        params.update(
            use_distillation=True,
            teacher_hidden_size=state_dict["distill_head.input_layer.weight"].shape[0],
            distill_layer_rate=rate,
        )
    return params


def _count_indices(state_dict: dict[str, Tensor], pattern: str) -> int:
    """How many distinct numbers ``pattern``'s group matches in the keys (layers of a stack)."""
    return len({m.group(1) for k in state_dict if (m := re.match(pattern, k))})


def _text_fields(values: dict[str, Any], model_type: str) -> dict[str, Any]:
    """The fields of config.json that the LLM's config class knows (mm_* and training keys dropped)."""
    known = set(AutoConfig.for_model(model_type).to_dict()) - {"model_type", "transformers_version"}
    return {k: v for k, v in values.items() if k in known or (k in LEGACY_TEXT_FIELDS and v is not None)}


def _our_fields() -> set[str]:
    return set(VideoPandaConfig().to_dict()) - set(AutoConfig.for_model(LLM_MODEL_TYPE).to_dict()) - {"text_config"}


def _tied_keys(config: VideoPandaConfig) -> tuple[str, ...]:
    return ("language_model.lm_head.",) if config.llm_config.tie_word_embeddings else ()


def _directory_tokenizer(directory: Path) -> PreTrainedTokenizerBase:
    if not any((directory / name).is_file() for name in TOKENIZER_FILES):
        raise FileNotFoundError(f"no tokenizer files ({', '.join(TOKENIZER_FILES)}) in {directory}: pass tokenizer=")
    return load_tokenizer(directory)


def _write_safetensors_shards(state: dict[str, Tensor], directory: Path, max_shard_size: str | int) -> None:
    """``model-0000X-of-0000N.safetensors`` + ``model.safetensors.index.json``; shared tensors stored per name."""
    split = split_torch_state_dict_into_shards(state, max_shard_size=max_shard_size)
    for filename, names in tqdm(split.filename_to_tensors.items(), desc="writing shards", unit="shard",
                                disable=len(split.filename_to_tensors) < 2):
        save_file({n: state[n].detach().cpu().contiguous().clone() for n in names}, str(directory / filename),
                  metadata={"format": "pt"})
    index = {"metadata": {"total_size": split.metadata.get("total_size")}, "weight_map": split.tensor_to_filename}
    (directory / INDEX_FILES[0]).write_text(json.dumps(index, indent=2, sort_keys=True))


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    return json.loads(path.read_text())
