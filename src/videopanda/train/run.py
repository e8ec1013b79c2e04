"""One training stage end to end: validate, set up, train, clean up; and stage chaining.

``train_stage(config)`` builds the model (a previous stage's output, or a fresh
STAB + projector around an LLM), freezes it per the stage rule, builds the
dataset, the teacher feature source and the engine, resumes from the newest
complete checkpoint in ``output_dir`` if there is one, trains, and saves a
loadable model (``save_pretrained`` + tokenizer) to ``output_dir``: the next
stage's ``model.init``.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase, TrainingArguments, set_seed

from videopanda.config import ConfigError, save_config
from videopanda.data.collator import VideoPandaCollator
from videopanda.data.dataset import VideoLLaVADataset, load_annotations
from videopanda.data.processing_videopanda import VideoPandaProcessor
from videopanda.model.llm import load_llm, load_tokenizer
from videopanda.model.modeling_videopanda import VideoPandaForCausalLM
from videopanda.train.config import ModelInit, TrainConfig, load_train_config
from videopanda.train.lora import (
    add_lora, is_lora_output, load_lora_output, merge_lora_output, qlora_quantization_config, save_lora_output,
)
from videopanda.train.stages import LLM_PREFIX, StageRule, apply_stage, get_stage, group_learning_rates
from videopanda.train.teacher_source import build_teacher_source
from videopanda.train.trainer import VideoPandaTrainer

logger = logging.getLogger(__name__)
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
CONFIG_NAME = "train_config.yaml"
SKIP_LOG_NAME = "skipped_samples.jsonl"
HALF_PRECISIONS = {"bf16": torch.bfloat16, "fp16": torch.float16}  # TrainConfig.precision -> 16-bit weights


@dataclass
class StageSetup:
    config: TrainConfig
    rule: StageRule
    model: VideoPandaForCausalLM
    tokenizer: PreTrainedTokenizerBase
    dataset: VideoLLaVADataset
    trainer: VideoPandaTrainer


def is_videopanda_dir(path: str | Path) -> bool:
    config = Path(path) / "config.json"
    return config.is_file() and json.loads(config.read_text()).get("model_type") == "videopanda"


def load_model(init: ModelInit) -> tuple[VideoPandaForCausalLM, PreTrainedTokenizerBase]:
    """A saved Video-Panda model (a LoRA output is rebuilt and merged), or a fresh STAB + projector around an LLM.

    ``init.num_frames`` replaces the model's frames per video; ``init.load_in_4bit`` loads a saved
    model's LLM in NF4 (QLoRA). The adapters themselves are added by the stage (``lora.add_lora``).
    """
    overrides = {}
    if init.load_in_4bit:
        if not is_videopanda_dir(init.init):
            raise ValueError(f"model.load_in_4bit (QLoRA) starts from a saved, merged Video-Panda model; {init.init} "
                             "is not one (run the stage before it, merged with --merge)")
        overrides["quantization_config"] = qlora_quantization_config()
        overrides["device_map"] = {"": torch.cuda.current_device()}  # the rank's GPU (set by TrainingArguments)
    if is_videopanda_dir(init.init) or is_lora_output(init.init):
        if init.config:
            raise ValueError(f"model.config overrides apply to a fresh model, but {init.init} is a saved Video-Panda model")
    if is_videopanda_dir(init.init):
        model = VideoPandaForCausalLM.from_pretrained(init.init, use_distillation=init.use_distillation, **overrides)
        tokenizer = load_tokenizer(init.init)
    elif is_lora_output(init.init):
        model, tokenizer = load_lora_output(init.init, merge=True)
    else:
        tokenizer = load_tokenizer(init.init)
        model = VideoPandaForCausalLM.from_llm(load_llm(init.init), tokenizer, use_distillation=init.use_distillation,
                                               **{**init.config, **overrides})
    model.config.num_frames = init.num_frames or model.config.num_frames  # frames only change the data pipeline
    if model.config.num_frames % model.config.chunk_length:
        raise ConfigError(f"model.num_frames: {model.config.num_frames} frames do not split into chunks of "
                          f"{model.config.chunk_length}; use a multiple of {model.config.chunk_length} (16, 32, 64)")
    return model, tokenizer


def training_arguments(config: TrainConfig, rule: StageRule, rates: dict[str, float]) -> TrainingArguments:
    """The Trainer's arguments for this stage: everything the engine does itself."""
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
        lr_scheduler_type="cosine",
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
    processor = VideoPandaProcessor(tokenizer, model.config, template=data.template, max_length=data.max_length)
    Path(config.output_dir).mkdir(parents=True, exist_ok=True)
    logger.info("stage %s: %d samples (%.0f%% of %s)", rule.name, len(items), 100 * fraction, data.annotation_files)
    return VideoLLaVADataset(
        items, data.media_root, processor, image_root=data.image_root, train=True, seed=config.seed,
        with_teacher=with_teacher_frames, with_keys=with_keys, skip_log=Path(config.output_dir) / SKIP_LOG_NAME,
    )


def setup_stage(config: TrainConfig) -> StageSetup:
    """Everything a stage needs, ready for ``trainer.train()``."""
    rule = get_stage(config.stage)
    rates = group_learning_rates(rule, config.optim.lr, config.optim.group_lr)
    args = training_arguments(config, rule, rates)  # sets up the process group under torchrun
    if args.process_index != 0:
        logging.getLogger("videopanda").setLevel(logging.WARNING)
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
    lora = uses_lora(config, rule)
    if lora:
        frozen_dtype = HALF_PRECISIONS.get(config.precision)
        if frozen_dtype is not None and not config.model.load_in_4bit:
            model.language_model.to(frozen_dtype)  # the frozen base in 16 bits; peft keeps the adapters in fp32
        add_lora(model, config.model.lora, quantized=config.model.load_in_4bit,
                 gradient_checkpointing=config.gradient_checkpointing)
    trainable = apply_stage(model, rule, distilling, lora=lora)
    modules = sorted({name.split(".")[0] for name in trainable})
    logger.info("stage %s trains %d of %d parameter tensors (%s)", rule.name, len(trainable),
                len(list(model.parameters())), ", ".join(modules))
    teacher = build_teacher_source(config.teacher, model.config, args.device) if distilling else None
    dataset = build_dataset(config, rule, model, tokenizer, with_teacher_frames=bool(teacher and teacher.needs_frames),
                            with_keys=bool(teacher and teacher.needs_keys))
    collator = VideoPandaCollator(tokenizer.pad_token_id, "right", with_teacher=bool(teacher and teacher.needs_frames))
    trainer = VideoPandaTrainer(
        model=model, args=args, train_dataset=dataset, data_collator=collator, processing_class=tokenizer,
        stage=rule, rates=rates, teacher_features=teacher,
    )
    return StageSetup(config, rule, model, tokenizer, dataset, trainer)


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


def train_stage(config: TrainConfig) -> Path:
    """Run one stage; returns its output directory (a loadable model + tokenizer)."""
    setup = setup_stage(config)
    checkpoint = newest_checkpoint(config.output_dir) if config.resume else None
    if checkpoint is not None:
        logger.info("resuming from %s", checkpoint)
    setup.trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    lora = uses_lora(config, setup.rule)
    if not lora:
        setup.trainer.save_model(config.output_dir)
    if setup.trainer.is_world_process_zero():
        if lora:
            save_lora_output(setup.model, setup.tokenizer, config.model, config.output_dir)
        save_config(config, Path(config.output_dir) / CONFIG_NAME)
        if lora and config.merge_lora:
            merge_lora_output(config.output_dir)
        logger.info("stage %s done: %s saved to %s", config.stage,
                    "LoRA adapter" + (" and merged model" if config.merge_lora else "") if lora else "model",
                    config.output_dir)
    setup.trainer.accelerator.wait_for_everyone()
    return Path(config.output_dir)


def run_stages(
    stages: list[str], config_dir: str | Path, overrides: list[str] | None = None, data_root: str | Path | None = None
) -> Path:
    """Run ``stages`` in order from ``config_dir/<stage>.yaml``, each starting from the previous output."""
    output = None
    for stage in stages:
        path = Path(config_dir) / f"{stage}.yaml"
        stage_overrides = list(overrides or []) + ([f"model.init={output}"] if output is not None else [])
        config = load_train_config(path, stage_overrides, data_root)
        if config.stage != stage:
            raise ValueError(f"{path} is a {config.stage} config, expected stage {stage}")
        output = train_stage(config)
    if output is None:
        raise ValueError("no stages given")
    return output
