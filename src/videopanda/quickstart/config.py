"""Settings of the quickstart: data size, model geometry, the three stages, evaluation.

The defaults are sized for the 10-minute budget on a 2-core CPU: SmolLM2-135M,
a 128-wide STAB on 56x56 frames (a 2x2 LSD grid: 7 tokens per frame, 56 per
video), one-word answers, 188 optimizer steps of 4 samples in all.
``scaled(f)`` multiplies every step count (and the data) for quicker or longer runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from videopanda.runtime import canonical_dtype_name
from videopanda.train.config import LoraSettings, StageName

STAGE_NAMES: tuple[StageName, ...] = ("prealign", "pretrain", "finetune")

# SmolLM2's ChatML without its default 16-token system line: the quickstart's prompts
# are the same in training and in `ask`/`chat`, because the template travels with the tokenizer.
CHATML_NO_SYSTEM = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass(frozen=True)
class StageSettings:
    """One stage's run: steps, batch and learning rates (``visual``: STAB + projector; ``lr``: the rest)."""

    steps: int
    batch_size: int
    lr: float
    visual_lr: float
    warmup_ratio: float = 0.05
    lr_scheduler: str = "cosine"  # train.config.LR_SCHEDULERS


@dataclass(frozen=True)
class QuickstartConfig:
    out: str = "quickstart"
    seed: int = 0
    num_train: int = 300  # videos per training set (captions, QA)
    num_test: int = 60  # held-out videos (two questions each, one for "order" scenes)
    llm: str = "smollm2"
    model: dict[str, Any] = field(default_factory=lambda: {
        "stab_hidden_size": 128, "stab_num_heads": 4, "stab_dropout": 0.0,
        "image_size": 56, "teacher_image_size": 28,
    })
    stages: dict[str, StageSettings] = field(default_factory=lambda: {
        # A fresh STAB needs a high rate to ground words in a few hundred CPU steps. Batches of 4: in this
        # budget the number of updates limits learning more than gradient noise does. Prealign's steps buy
        # no held-out accuracy, so it keeps a short warm-up. Prealign and pretrain hold their rate (a cosine
        # to zero mid-recipe, then a re-warm, wastes each stage's last steps). CHANGELOG.md has the measurements.
        "prealign": StageSettings(steps=12, batch_size=4, lr=4e-5, visual_lr=1e-3,  # SmolLM2 frozen (stage rule)
                                  lr_scheduler="constant_with_warmup"),
        # Captions name colour, shape, size and motion in ~8 tokens: the cheapest grounding signal per
        # step, so pretrain gets most of the steps; finetune teaches the one-word QA format on top.
        # ``lr`` is the LoRA adapters' rate (adapters want a higher one than full fine-tuning).
        "pretrain": StageSettings(steps=104, batch_size=4, lr=5e-4, visual_lr=1e-3,
                                  lr_scheduler="constant_with_warmup"),
        "finetune": StageSettings(steps=72, batch_size=4, lr=5e-4, visual_lr=1e-3),  # cosine: the recipe's anneal
    })
    # The stages that train SmolLM2 train low-rank adapters on its attention instead of its 135M weights:
    # a step costs about 0.6x (no weight gradients or optimizer state for the LLM), measured on 2 cores.
    lora: LoraSettings | None = field(default_factory=lambda: LoraSettings(
        r=16, alpha=32.0, dropout=0.0, target_modules=["q_proj", "v_proj"]))
    teacher: str | None = None  # a local LanguageBind directory: distillation in prealign and pretrain
    num_workers: int = 1  # a data-loading process decodes the next batch while the model trains on this one
    eval_batch_size: int = 16
    midrun_eval_questions: int | None = 40  # held-out questions scored before the last stage (None: all)
    max_new_tokens: int = 6  # answers are one word
    judge_items: int = 3  # held-out answers of the final model judged by the local LLM judge (0: none)
    dtype: str = "auto"  # runtime.resolve_precision: training autocast and evaluation weights
    threads: int | None = None  # torch CPU threads (None: torch's default)

    def __post_init__(self) -> None:
        missing = set(STAGE_NAMES) - set(self.stages)
        if missing:
            raise ValueError(f"quickstart stages lack settings for {sorted(missing)}")
        canonical_dtype_name(self.dtype)  # a ValueError naming the choices
        if self.num_test < 1 or self.num_train < 1:
            raise ValueError(f"need num_train >= 1 and num_test >= 1, got {self.num_train}, {self.num_test}")

    def scaled(self, factor: float) -> QuickstartConfig:
        """Every stage's steps and the training data times ``factor`` (at least one step / video)."""
        if factor <= 0:
            raise ValueError(f"steps scale must be positive, got {factor}")
        stages = {name: replace(s, steps=max(1, math.ceil(s.steps * factor))) for name, s in self.stages.items()}
        return replace(self, stages=stages, num_train=max(1, math.ceil(self.num_train * min(1.0, factor))))
