"""One training stage end to end: validate, set up, train, clean up; and stage chaining.

``train_stage(config)`` builds the model (a previous stage's output, or a fresh
STAB + projector around an LLM), freezes it per the stage rule, builds the
dataset, the teacher feature source and the engine, resumes from the newest
complete checkpoint in ``output_dir`` if there is one, trains, and saves a
loadable model (``save_pretrained`` + tokenizer) to ``output_dir``: the next
stage's ``model.init``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import re
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase, TrainingArguments, set_seed

from videopanda.config import ConfigError, save_config, to_dict
from videopanda.data.collator import VideoPandaCollator
from videopanda.data.conversation import inference_template
from videopanda.data.dataset import VideoLLaVADataset, load_annotations
from videopanda.data.processing_videopanda import VideoPandaProcessor, save_model_processor
from videopanda.files import atomic_write_text
from videopanda.limits import LimitError, check_num_frames
from videopanda.model.directory import TRAIN_CONFIG_FILE, ModelDirKind, model_dir_kind
from videopanda.model.llm import load_llm, load_tokenizer
from videopanda.model.modeling_videopanda import VideoPandaForCausalLM
from videopanda.runtime import canonical_dtype_name, resolve_precision
from videopanda.train.config import ModelInit, TrainConfig, load_train_config
from videopanda.train.lora import (
    add_lora,
    load_lora_output,
    merge_lora_output,
    qlora_quantization_config,
    save_lora_output,
)
from videopanda.train.stages import LLM_PREFIX, StageRule, apply_stage, get_stage, group_learning_rates
from videopanda.train.teacher_source import build_teacher_source
from videopanda.train.trainer import VideoPandaTrainer
from videopanda.train.zero import PrecisionCheck, cast_for_engine, start_deepspeed_comm

logger = logging.getLogger(__name__)
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
SKIP_LOG_NAME = "skipped_samples.jsonl"
STAGE_RECORD_NAME = "stage.json"  # which stage and config the checkpoints in output_dir belong to
# Settings a resumed run may change without training something else.
RESUMABLE_CHANGES = ("resume", "logging_steps", "save_steps", "save_total_limit", "max_steps", "num_epochs")


@dataclass
class StageSetup:
    config: TrainConfig
    rule: StageRule
    model: VideoPandaForCausalLM
    tokenizer: PreTrainedTokenizerBase
    dataset: VideoLLaVADataset
    trainer: VideoPandaTrainer


def load_model(init: ModelInit) -> tuple[VideoPandaForCausalLM, PreTrainedTokenizerBase]:
    """A saved Video-Panda model (a LoRA output is rebuilt and merged), or a fresh STAB + projector around an LLM.

    ``init.num_frames`` replaces the model's frames per video; ``init.load_in_4bit`` loads a saved
    model's LLM in NF4 (QLoRA). The adapters themselves are added by the stage (``lora.add_lora``).
    """
    overrides = {}
    kind = model_dir_kind(init.init)
    if init.load_in_4bit:
        if kind is not ModelDirKind.VIDEOPANDA:
            raise ValueError(f"model.load_in_4bit (QLoRA) starts from a saved, merged Video-Panda model; {init.init} "
                             "is not one (run the stage before it, merged with --merge)")
        overrides["quantization_config"] = qlora_quantization_config()
        overrides["device_map"] = {"": torch.cuda.current_device()}  # the rank's GPU (set by TrainingArguments)
    if init.config and kind in (ModelDirKind.VIDEOPANDA, ModelDirKind.LORA_ADAPTER):
        raise ValueError(f"model.config overrides apply to a fresh model, but {init.init} is a saved Video-Panda model")
    if kind is ModelDirKind.VIDEOPANDA:
        model = VideoPandaForCausalLM.from_pretrained(init.init, use_distillation=init.use_distillation, **overrides)
        tokenizer = load_tokenizer(init.init)
    elif kind is ModelDirKind.LORA_ADAPTER:
        model, tokenizer = load_lora_output(init.init, merge=True)
    else:
        tokenizer = load_tokenizer(init.init)
        model = VideoPandaForCausalLM.from_llm(load_llm(init.init), tokenizer, use_distillation=init.use_distillation,
                                               **{**init.config, **overrides})
    model.config.num_frames = init.num_frames or model.config.num_frames  # frames only change the data pipeline
    cfg = model.config
    try:
        check_num_frames(cfg.num_frames, cfg.image_size, cfg.chunk_length, "model.num_frames")
    except LimitError as err:
        raise ConfigError(str(err)) from None
    return model, tokenizer


def resolve_training_precision(config: TrainConfig) -> TrainConfig:
    """``config`` with ``precision`` resolved for this machine (``auto`` -> bf16 or fp32), as it is saved."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return replace(config, precision=resolve_precision(config.precision, device).trainer_name)


def training_arguments(config: TrainConfig, rule: StageRule, rates: dict[str, float]) -> TrainingArguments:
    """The Trainer's arguments for this stage: everything the engine does itself."""
    if config.precision not in ("bf16", "fp16", "fp32"):
        raise ValueError(f"precision {config.precision!r} is unresolved: call resolve_training_precision first")
    warmup = rule.warmup_ratio if config.optim.warmup_ratio is None else config.optim.warmup_ratio
    return TrainingArguments(
        output_dir=config.output_dir,
        per_device_train_batch_size=config.per_device_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        num_train_epochs=config.num_epochs,
        max_steps=config.max_steps,
        learning_rate=rates["default"],
        weight_decay=0.0,
        adam_beta1=config.optim.betas[0],
        adam_beta2=config.optim.betas[1],
        adam_epsilon=config.optim.eps,
        max_grad_norm=config.optim.max_grad_norm,
        lr_scheduler_type=config.optim.lr_scheduler,
        warmup_steps=warmup,  # < 1: a ratio of the training steps
        bf16=config.precision == "bf16",
        fp16=config.precision == "fp16",
        activation_checkpointing=config.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if config.gradient_checkpointing else None,
        logging_steps=config.logging_steps,
        report_to=["tensorboard"],
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        seed=config.seed,
        data_seed=config.seed,
        dataloader_num_workers=config.data.num_workers,
        remove_unused_columns=False,
        # The STAB holds the release's never-called `lmhra2`, and text-only batches skip the STAB.
        ddp_find_unused_parameters=config.distributed == "ddp",
        fsdp=config.fsdp if config.distributed == "fsdp" else "",
        fsdp_config=fsdp_settings(config) if config.distributed == "fsdp" else None,
        deepspeed=config.deepspeed if config.distributed == "deepspeed" else None,
        use_cpu=not torch.cuda.is_available(),  # also makes torchrun on CPU a gloo DDP run
        log_level="info",
        log_level_replica="warning",
        disable_tqdm=False,
    )


def fsdp_settings(config: TrainConfig) -> dict:
    """The FSDP JSON of ``config.fsdp_config`` (or none). The wrap units default to the model's
    ``_no_split_modules``: the STAB and the LLM's decoder layer class."""
    if not config.fsdp_config:
        return {}
    try:
        return json.loads(Path(config.fsdp_config).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"fsdp_config: cannot read {config.fsdp_config}: {err}") from err


def build_dataset(
    config: TrainConfig, rule: StageRule, model: VideoPandaForCausalLM, tokenizer: PreTrainedTokenizerBase,
    with_teacher_frames: bool = False, with_keys: bool = False,
) -> VideoLLaVADataset:
    """The stage's share of the shuffled annotations; skipped samples collected in ``output_dir``."""
    data = config.data
    if not data.annotation_files:
        raise ValueError("data.annotation_files is empty: give one or more Video-LLaVA JSON files")
    fraction = rule.data_fraction if data.fraction is None else data.fraction
    items = load_annotations(data.annotation_files, fraction=fraction, seed=config.seed, max_samples=data.max_samples)
    processor = VideoPandaProcessor.for_model(tokenizer, model.config, template=data.template,
                                              max_length=data.max_length)
    Path(config.output_dir).mkdir(parents=True, exist_ok=True)
    logger.info("stage %s: %d samples (%.0f%% of %s)", rule.name, len(items), 100 * fraction, data.annotation_files)
    return VideoLLaVADataset(
        items, data.media_root, processor, image_root=data.image_root, train=True, seed=config.seed,
        with_teacher=with_teacher_frames, with_keys=with_keys, skip_log=Path(config.output_dir) / SKIP_LOG_NAME,
    )


def setup_stage(config: TrainConfig) -> StageSetup:
    """Everything a stage needs, ready for ``trainer.train()`` (``config.precision`` resolved)."""
    config = resolve_training_precision(config)
    rule = get_stage(config.stage)
    rates = group_learning_rates(rule, config.optim.lr, config.optim.group_lr)
    args = training_arguments(config, rule, rates)  # sets up the process group under torchrun
    if args.process_index != 0:
        logging.getLogger("videopanda").setLevel(logging.WARNING)
    if config.distributed == "deepspeed":
        start_deepspeed_comm(args.ddp_backend or ("nccl" if torch.cuda.is_available() else "gloo"))
    set_seed(config.seed)  # a fresh STAB is initialised identically on every rank and rerun
    model, tokenizer = load_model(config.model)
    return assemble_stage(config, rule, rates, args, model, tokenizer)


def assemble_stage(
    config: TrainConfig,
    rule: StageRule,
    rates: dict[str, float],
    args: TrainingArguments,
    model: VideoPandaForCausalLM,
    tokenizer: PreTrainedTokenizerBase,
) -> StageSetup:
    """Apply the stage rule to a loaded model and build its teacher, dataset, collator and Trainer."""
    distilling = rule.distills and config.teacher.enabled and model.distill_head is not None
    if config.teacher.enabled and not distilling:
        logger.info("stage %s does not distill: teacher settings ignored", rule.name)
    lora_settings = config.model.lora if uses_lora(config, rule) else None
    lora = lora_settings is not None
    if lora_settings is not None:
        precision = canonical_dtype_name(config.precision)
        if precision != "float32" and not config.model.load_in_4bit:
            model.language_model.to(getattr(torch, precision))  # the frozen base in 16 bits; peft keeps adapters fp32
        add_lora(model, lora_settings, quantized=config.model.load_in_4bit,
                 gradient_checkpointing=config.gradient_checkpointing)
    trainable = apply_stage(model, rule, distilling, lora=lora)
    model.config.prompt_template = inference_template(config.data.template)  # saved with the model
    modules = sorted({name.split(".")[0] for name in trainable})
    logger.info("stage %s trains %d of %d parameter tensors (%s)", rule.name, len(trainable),
                len(list(model.parameters())), ", ".join(modules))
    teacher = build_teacher_source(config.teacher, model.config, args.device) if distilling else None
    dataset = build_dataset(config, rule, model, tokenizer, with_teacher_frames=bool(teacher and teacher.needs_frames),
                            with_keys=bool(teacher and teacher.needs_keys))
    collator = VideoPandaCollator(tokenizer.pad_token_id, "right", with_teacher=bool(teacher and teacher.needs_frames))
    deepspeed = config.distributed == "deepspeed"
    if deepspeed:
        cast_for_engine(model, engine_dtype(config))
        model.stab_in_every_forward = True  # ZeRO-3 gathers the STAB on every rank or on none
    trainer = VideoPandaTrainer(
        model=model, args=args, train_dataset=dataset, data_collator=collator, processing_class=tokenizer,
        stage=rule, rates=rates, teacher_features=teacher,
    )
    if deepspeed:
        trainer.add_callback(PrecisionCheck(trainer, engine_dtype(config)))
    return StageSetup(config, rule, model, tokenizer, dataset, trainer)


def engine_dtype(config: TrainConfig) -> torch.dtype:
    """The dtype DeepSpeed holds the weights in: the training precision (its optimizer keeps float32 masters)."""
    return getattr(torch, canonical_dtype_name(config.precision))


def uses_lora(config: TrainConfig, rule: StageRule) -> bool:
    """LoRA applies to stages that train the LLM; prealign keeps it frozen, so it gets no adapter."""
    if config.model.lora is None:
        return False
    if LLM_PREFIX not in rule.trainable:
        logger.info("stage %s keeps the LLM frozen: model.lora ignored (no adapter)", rule.name)
        return False
    return True


def newest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest ``checkpoint-N`` whose save completed (its ``trainer_state.json``, written last, exists)."""
    directory = Path(output_dir)
    if not directory.is_dir():
        return None
    complete = [
        (int(m.group(1)), p) for p in directory.iterdir()
        if (m := CHECKPOINT_RE.match(p.name)) and (p / "trainer_state.json").is_file()
    ]
    return max(complete)[1] if complete else None


def check_stage_config(config: TrainConfig) -> TrainConfig:
    """What a stage needs that its config names, checked before any model is built or step is taken."""
    get_stage(config.stage)
    if config.distributed == "deepspeed":
        if importlib.util.find_spec("deepspeed") is None:
            raise ConfigError(f"stage {config.stage}: distributed: deepspeed needs the deepspeed package "
                              "(pip install deepspeed), or set distributed=ddp")
        if config.deepspeed is None:
            raise ConfigError(f"stage {config.stage}: distributed: deepspeed needs deepspeed: "
                              "<path to a DeepSpeed JSON>")
        if not Path(config.deepspeed).is_file():
            raise FileNotFoundError(f"stage {config.stage}: deepspeed config {config.deepspeed} not found")
    if not config.data.annotation_files:
        raise ConfigError(f"stage {config.stage}: data.annotation_files is empty")
    for key, path in [*(("data.annotation_files", p) for p in config.data.annotation_files),
                      ("data.media_root", config.data.media_root)]:
        if not Path(path).exists():
            raise FileNotFoundError(f"stage {config.stage}: {key} {path} not found")
    return config


def config_fingerprint(config: TrainConfig) -> str:
    """A hash of what a stage trains (its config without the settings a resume may change)."""
    values = {k: v for k, v in to_dict(config).items() if k not in RESUMABLE_CHANGES}
    values["data"] = {k: v for k, v in values["data"].items() if k != "num_workers"}
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]


def claim_output_dir(config: TrainConfig, checkpoint: Path | None) -> None:
    """Record the stage and config fingerprint in ``output_dir``; refuse to resume checkpoints of another."""
    record_path = Path(config.output_dir) / STAGE_RECORD_NAME
    record = {"stage": config.stage, "config_fingerprint": config_fingerprint(config)}
    if checkpoint is not None:
        before = json.loads(record_path.read_text()) if record_path.is_file() else None
        if before != record:
            what = "no record of its stage" if before is None else f"stage {before['stage']} (config " \
                f"{before['config_fingerprint']})"
            raise ConfigError(
                f"{checkpoint} belongs to {what}, not stage {config.stage} with this config "
                f"({record['config_fingerprint']}): give this stage its own output_dir, or resume=false to start over"
            )
    Path(config.output_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_text(record_path, json.dumps(record) + "\n")  # a crash mid-write must not orphan the checkpoints


class _NoHubAdvice(logging.Filter):
    """Drops the Trainer's closing "share your model on huggingface.co" line: nothing here goes to a hub."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "huggingface.co/models" not in record.getMessage()


_NO_HUB_ADVICE = _NoHubAdvice()


def train_stage(config: TrainConfig) -> Path:
    """Run one stage; returns its output directory (a loadable model + tokenizer)."""
    logging.getLogger("transformers.trainer").addFilter(_NO_HUB_ADVICE)
    setup = setup_stage(check_stage_config(config))
    checkpoint = newest_checkpoint(config.output_dir) if config.resume else None
    if setup.trainer.is_world_process_zero():
        claim_output_dir(setup.config, checkpoint)
    if checkpoint is not None:
        logger.info("resuming from %s", checkpoint)
    setup.trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    lora = uses_lora(config, setup.rule)
    if not lora:
        setup.trainer.save_model(config.output_dir)
    if setup.trainer.is_world_process_zero():
        if lora:
            save_lora_output(setup.model, setup.tokenizer, config.model, config.output_dir)
        else:
            save_model_processor(config.output_dir, setup.tokenizer, setup.model.config)
        save_config(setup.config, Path(config.output_dir) / TRAIN_CONFIG_FILE)  # precision as resolved
        if lora and config.merge_lora:
            merge_lora_output(config.output_dir)
        logger.info("stage %s done: %s saved to %s", config.stage,
                    "LoRA adapter" + (" and merged model" if config.merge_lora else "") if lora else "model",
                    config.output_dir)
    setup.trainer.accelerator.wait_for_everyone()
    return Path(config.output_dir)


def stage_chain(
    stages: list[str], config_dir: str | Path, overrides: list[str] | None = None, data_root: str | Path | None = None
) -> list[TrainConfig]:
    """The checked configs of ``stages``, each but the first starting from the previous one's ``output_dir``."""
    if not stages:
        raise ValueError("no stages given")
    configs: list[TrainConfig] = []
    for stage in stages:
        path = Path(config_dir) / f"{stage}.yaml"
        previous = [f"model.init={configs[-1].output_dir}"] if configs else []
        config = load_train_config(path, list(overrides or []) + previous, data_root)
        if config.stage != stage:
            raise ConfigError(f"{path} is a {config.stage} config, expected stage {stage}")
        shared = [c.stage for c in configs if Path(c.output_dir).resolve() == Path(config.output_dir).resolve()]
        if shared:
            raise ConfigError(f"stages {shared[0]} and {stage} share output_dir {config.output_dir}: each stage "
                              "needs its own (drop the output_dir override, or run the stages one by one)")
        configs.append(config)
    return [check_stage_config(config) for config in configs]
