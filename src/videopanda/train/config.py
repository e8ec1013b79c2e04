"""Typed training configuration: one YAML file per stage plus ``key=value`` overrides.

``load_train_config("configs/small/prealign.yaml", ["optim.lr=1e-4"])`` gives a
validated :class:`TrainConfig`; an unknown key or a wrong type is a
:class:`~videopanda.config.ConfigError` naming it. What a stage trains and its
learning-rate groups are stage rules (``stages.py``); the config only picks
the stage and may override its learning rates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from videopanda.config import ConfigError, load_config

StageName = Literal["prealign", "pretrain", "finetune"]
# "auto": runtime.resolve_precision (bf16 on CUDA and AMX CPUs, fp32 elsewhere); the saved config records the choice.
Precision = Literal["auto", "bf16", "fp16", "fp32", "bfloat16", "float16", "float32"]
Distributed = Literal["ddp", "fsdp", "deepspeed"]


LLAMA_LINEAR_LAYERS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class LoraSettings:
    """Low-rank adapters on the LLM's linear layers (peft); the base LLM stays frozen.

    ``target_modules`` are module-name suffixes of the LLM (LLaMA-family names by default).
    """

    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: list(LLAMA_LINEAR_LAYERS))

    def __post_init__(self) -> None:
        if self.r < 1 or not self.target_modules:
            raise ValueError(f"model.lora needs r >= 1 and target_modules, got r={self.r}, {self.target_modules}")
        _check_number("model.lora.alpha", self.alpha, low=0.0, low_open=True)
        _check_number("model.lora.dropout", self.dropout, low=0.0, high=1.0)


@dataclass
class ModelInit:
    """Where the stage starts.

    ``init`` is a saved Video-Panda model (the previous stage's output, merged or a LoRA
    adapter output), or an LLM directory / ``"smollm2"`` around which a fresh STAB + projector
    is built with the ``config`` overrides of :class:`VideoPandaConfig` (e.g. ``image_size``).
    ``num_frames`` (a multiple of the chunk length) replaces the model's frames per video, for
    fresh and saved models alike. ``lora`` trains adapters on the LLM instead of the LLM itself;
    ``load_in_4bit`` (QLoRA, CUDA only) holds the frozen base LLM in bitsandbytes NF4.
    """

    init: str = "smollm2"
    config: dict[str, Any] = field(default_factory=dict)
    use_distillation: bool = True
    num_frames: int | None = None
    lora: LoraSettings | None = None
    load_in_4bit: bool = False

    def __post_init__(self) -> None:
        if self.load_in_4bit and self.lora is None:
            raise ValueError("model.load_in_4bit (QLoRA) trains adapters: also give model.lora")
        if self.num_frames is not None and self.num_frames < 1:
            raise ValueError(f"model.num_frames must be positive, got {self.num_frames}")


@dataclass
class TeacherConfig:
    """Distillation teacher: a live LanguageBind directory or a precomputed cache (not both)."""

    path: str | None = None  # local LanguageBind_Video_merge directory (live teacher)
    cache: str | None = None  # `videopanda teacher cache` output directory

    def __post_init__(self) -> None:
        if self.path and self.cache:
            raise ValueError("give teacher.path (live teacher) or teacher.cache, not both")

    @property
    def enabled(self) -> bool:
        return bool(self.path or self.cache)


@dataclass
class DataConfig:
    annotation_files: list[str] = field(default_factory=list)  # Video-LLaVA JSON files
    media_root: str = "."  # video paths in the annotations are relative to this
    image_root: str | None = None  # image paths likewise (None: media_root)
    fraction: float | None = None  # share of the shuffled data; None = the stage's rule (prealign 0.5)
    max_samples: int | None = None  # cap for smoke runs
    template: str = "vicuna_v1"  # a conversation template name (videopanda.data.conversation)
    max_length: int = 4096
    num_workers: int = 0

    def __post_init__(self) -> None:
        if self.fraction is not None and not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"data.fraction must be in (0, 1], got {self.fraction}")
        if self.max_samples is not None and self.max_samples < 1:
            raise ValueError(f"data.max_samples must be >= 1 (or null for all), got {self.max_samples}")
        if self.max_length < 1 or self.num_workers < 0:
            raise ValueError(f"data.max_length must be >= 1 and data.num_workers >= 0, got {self.max_length} and "
                             f"{self.num_workers}")


LR_SCHEDULERS = ("cosine", "linear", "constant_with_warmup")


@dataclass
class OptimConfig:
    """AdamW, weight decay 0, linear warmup then ``lr_scheduler`` (the release's cosine to zero).

    ``lr`` (None = the stage's default) is the learning rate of parameters in
    no named group; ``group_lr`` overrides the rate of a stage's named group
    (``{"visual": 4e-4}``). ``lr_scheduler`` is a Trainer schedule name:
    ``constant_with_warmup`` suits a stage that hands over to another (no decay to zero mid-recipe).
    """

    lr: float | None = None
    group_lr: dict[str, float] = field(default_factory=dict)
    warmup_ratio: float | None = None  # None = the stage's default
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    max_grad_norm: float = 1.0
    lr_scheduler: str = "cosine"

    def __post_init__(self) -> None:
        if self.lr_scheduler not in LR_SCHEDULERS:
            raise ValueError(f"optim.lr_scheduler must be one of {LR_SCHEDULERS}, got {self.lr_scheduler!r}")
        self.group_lr = {name: _as_float(value, f"optim.group_lr.{name}") for name, value in self.group_lr.items()}
        for name, rate in [("optim.lr", self.lr), *((f"optim.group_lr.{k}", v) for k, v in self.group_lr.items())]:
            _check_number(name, rate, low=0.0, low_open=True)
        _check_number("optim.warmup_ratio", self.warmup_ratio, low=0.0, high=1.0)
        for beta in self.betas:
            _check_number("optim.betas", beta, low=0.0, high=1.0)
        _check_number("optim.eps", self.eps, low=0.0, low_open=True)
        _check_number("optim.max_grad_norm", self.max_grad_norm, low=0.0)  # 0: no clipping


@dataclass
class TrainConfig:
    stage: StageName = "prealign"
    output_dir: str = "runs/prealign"
    model: ModelInit = field(default_factory=ModelInit)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    per_device_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    num_epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides num_epochs
    precision: Precision = "auto"
    gradient_checkpointing: bool = True
    distributed: Distributed = "ddp"
    deepspeed: str | None = None  # DeepSpeed JSON (distributed: deepspeed)
    fsdp: str = "full_shard auto_wrap"  # FSDP strategy (distributed: fsdp)
    fsdp_config: str | None = None  # FSDP JSON (configs/fsdp/); None: FSDP2, the STAB and each LLM layer a unit
    logging_steps: int = 10
    save_steps: int = 500
    save_total_limit: int | None = 2
    resume: bool = True  # continue from the newest complete checkpoint in output_dir
    merge_lora: bool = False  # with model.lora: also write the merged model to output_dir (`train --merge`)
    seed: int = 42

    def __post_init__(self) -> None:
        if self.distributed == "deepspeed" and not self.deepspeed:
            raise ValueError("distributed: deepspeed needs deepspeed: <path to a DeepSpeed JSON>")
        for name in ("per_device_batch_size", "gradient_accumulation_steps", "logging_steps", "save_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"max_steps={self.max_steps} trains nothing: give max_steps >= 1, or -1 to train "
                             "num_epochs")
        _check_number("num_epochs", self.num_epochs, low=0.0, low_open=True)
        if self.save_total_limit is not None and self.save_total_limit < 1:
            raise ValueError(f"save_total_limit must be >= 1 (or null to keep every checkpoint), got "
                             f"{self.save_total_limit}")
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"seed must be in [0, 2**32), got {self.seed}")
        if self.model.lora is not None and self.distributed == "fsdp":
            raise ValueError("model.lora trains with distributed: ddp or deepspeed (ZeRO-2), not fsdp")


def _check_number(key: str, value: float | None, low: float, high: float | None = None, low_open: bool = False) -> None:
    """``value`` (None: the default) is finite and in [low, high) (``low_open``: above ``low``), before any model
    loads: a bad rate found by the optimiser costs the model load and leaves files behind."""
    if value is None:
        return
    above = value > low if low_open else value >= low
    if not (math.isfinite(value) and above and (high is None or value < high)):
        bounds = f"{'(' if low_open else '['}{low:g}, {'inf)' if high is None else f'{high:g})'}"
        raise ValueError(f"{key} must be a number in {bounds}, got {value!r}")


def _as_float(value: Any, key: str) -> float:
    """A float from YAML, which reads ``4e-4`` (no dot) as a string."""
    if not isinstance(value, bool):
        try:
            return float(value)
        except (TypeError, ValueError):
            pass
    raise ValueError(f"{key}: expected a float, got {value!r}")


def load_train_config(
    path: str | Path | None = None, overrides: list[str] | None = None, data_root: str | Path | None = None
) -> TrainConfig:
    """A validated :class:`TrainConfig` from YAML + ``key=value`` overrides (``ConfigError`` names bad keys).

    ``data_root`` replaces the leading ``DATA_ROOT`` of the data paths (see :func:`with_data_root`).
    """
    config = load_config(TrainConfig, path, overrides)
    return config if data_root is None else with_data_root(config, data_root)


DATA_ROOT = "DATA_ROOT"  # the release configs' placeholder for the seed's data directory


def with_data_root(config: TrainConfig, data_root: str | Path) -> TrainConfig:
    """``config`` with the leading ``DATA_ROOT/`` of its data paths replaced by ``data_root``.

    The release configs name their data as ``DATA_ROOT/train/...``, each stage its own files,
    so one directory places every stage; paths without the placeholder are kept. A config with no
    such path, or a ``data_root`` that is no directory, is an error (the flag would do nothing).
    """
    def place(path: str) -> str:
        head, _, rest = path.partition("/")
        return str(Path(data_root) / rest) if head == DATA_ROOT and rest else path

    data = config.data
    paths = [*data.annotation_files, data.media_root, data.image_root]
    if not any(place(p) != p for p in paths if p):
        raise ConfigError(f"--data-root {data_root}: no data path of this config starts with {DATA_ROOT}/ "
                          f"({', '.join(p for p in paths if p)}), so it would change nothing; drop --data-root "
                          f"or use a config naming {DATA_ROOT}/... paths (configs/*.yaml)")
    if not Path(data_root).is_dir():
        raise FileNotFoundError(f"--data-root {data_root} is not a directory")
    placed = replace(data, annotation_files=[place(p) for p in data.annotation_files],
                     media_root=place(data.media_root),
                     image_root=None if data.image_root is None else place(data.image_root))
    return replace(config, data=placed)


__all__ = [
    "ConfigError", "DataConfig", "LoraSettings", "ModelInit", "OptimConfig", "TeacherConfig", "TrainConfig",
    "load_train_config", "with_data_root",
]
