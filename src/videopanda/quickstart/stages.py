"""Running one training stage on the quickstart's in-memory model with the project's training engine.

The model and SmolLM2 stay in memory across stages (no reload between them);
the stage rules, learning-rate groups, dataset, collator and Trainer are the
same as ``videopanda train`` uses (``train/run.py``).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from videopanda.model.modeling_videopanda import VideoPandaForCausalLM
from videopanda.quickstart.config import QuickstartConfig
from videopanda.runtime import Precision
from videopanda.train.config import DataConfig, ModelInit, OptimConfig, StageName, TeacherConfig, TrainConfig
from videopanda.train.run import assemble_stage, training_arguments, uses_lora
from videopanda.train.stages import get_stage, group_learning_rates

logger = logging.getLogger(__name__)

CAPTIONS = "train_json/valley_synth.json"
INSTRUCTIONS = "train_json/videochatgpt_synth.json"


def stage_config(
    config: QuickstartConfig, stage: StageName, train_root: Path, runs_dir: Path, precision: Precision
) -> TrainConfig:
    """The ``TrainConfig`` of one quickstart stage (captions for prealign/pretrain, QA for finetune)."""
    settings = config.stages[stage]
    annotations = INSTRUCTIONS if stage == "finetune" else CAPTIONS
    return TrainConfig(
        stage=stage,
        output_dir=str(runs_dir / stage),
        model=ModelInit(init=config.llm, config=dict(config.model), use_distillation=config.teacher is not None,
                        lora=config.lora),
        teacher=TeacherConfig(path=config.teacher),
        data=DataConfig(annotation_files=[str(train_root / annotations)], media_root=str(train_root),
                        template="chat_template", max_length=512, num_workers=config.num_workers),
        optim=OptimConfig(lr=settings.lr, group_lr={"visual": settings.visual_lr}, warmup_ratio=settings.warmup_ratio,
                          lr_scheduler=settings.lr_scheduler),
        per_device_batch_size=settings.batch_size,
        max_steps=settings.steps,
        precision=precision.trainer_name,
        gradient_checkpointing=False,
        logging_steps=max(1, min(5, settings.steps // 10)),
        save_steps=max(1, settings.steps),
        seed=config.seed,
    )


def train_in_memory(
    model: VideoPandaForCausalLM, tokenizer: PreTrainedTokenizerBase, config: TrainConfig
) -> list[dict[str, float]]:
    """Train ``model`` in place for one stage; returns the Trainer's log history (loss per logging step)."""
    rule = get_stage(config.stage)
    rates = group_learning_rates(rule, config.optim.lr, config.optim.group_lr)
    # No checkpoints: the quickstart saves only the final model.
    args = dataclasses.replace(training_arguments(config, rule, rates), save_strategy="no", report_to=[])
    trainer = assemble_stage(config, rule, rates, args, model, tokenizer).trainer
    trainer.train()
    if uses_lora(config, rule):  # fold the adapters in: the next stage and the evaluation see a plain model
        model.language_model = model.language_model.merge_and_unload().to(torch.float32)
    model.eval()
    return [entry for entry in trainer.state.log_history if "loss" in entry]
