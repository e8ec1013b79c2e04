"""The three training stages of the release (spec section 5) as data.

A stage names the module prefixes it trains (everything else is frozen), its
learning-rate groups, its default rates and warmup, and the share of the
shuffled data it uses. The functions below map a model's
``named_parameters`` onto those rules; they work on any ``nn.Module`` whose
top-level submodules are named ``stab``, ``projector``, ``language_model`` and
``distill_head``. The teacher is never a submodule, so it is never trained.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

# Wrapper segments that DDP / FSDP / activation checkpointing insert into parameter names.
_WRAPPER_SEGMENTS = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")
DISTILL_PREFIX = "distill_head"
LLM_PREFIX = "language_model"
LORA_SEGMENT = ".lora_"  # peft's adapter parameters: ...q_proj.lora_A.default.weight


@dataclass(frozen=True)
class LRGroup:
    name: str
    prefixes: tuple[str, ...]
    lr: float


@dataclass(frozen=True)
class StageRule:
    name: str
    trainable: tuple[str, ...]  # module prefixes whose parameters train
    lr: float  # rate of trainable parameters in no named group
    groups: tuple[LRGroup, ...] = ()
    warmup_ratio: float = 0.03
    data_fraction: float = 1.0
    distills: bool = True  # the stage uses the teacher when one is configured


VISUAL = ("stab", "projector")
EVERYTHING = ("stab", "projector", "language_model", DISTILL_PREFIX)

STAGES: dict[str, StageRule] = {
    "prealign": StageRule(
        "prealign", trainable=(*VISUAL, DISTILL_PREFIX), lr=4e-5, groups=(LRGroup("visual", VISUAL, 4e-4),),
        warmup_ratio=0.03, data_fraction=0.5,
    ),
    "pretrain": StageRule(
        "pretrain", trainable=EVERYTHING, lr=4e-5, groups=(LRGroup("visual", VISUAL, 4e-5),), warmup_ratio=0.01,
    ),
    "finetune": StageRule(
        "finetune", trainable=EVERYTHING, lr=2e-5, groups=(LRGroup("visual", VISUAL, 2e-5),), warmup_ratio=0.01,
        distills=False,
    ),
}


def get_stage(name: str) -> StageRule:
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}: one of {sorted(STAGES)}")
    return STAGES[name]


def canonical_name(name: str) -> str:
    """A parameter name with distributed/compile wrapper segments removed."""
    for segment in _WRAPPER_SEGMENTS:
        name = name.replace(segment, "")
    return name.removeprefix("module.")


def _matches(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def is_trainable(name: str, rule: StageRule, distilling: bool, lora: bool = False) -> bool:
    """Whether parameter ``name`` trains in ``rule``; the distillation head only trains while distilling.

    With ``lora``, a stage that trains the LLM trains only its adapters (the base LLM stays frozen).
    """
    name = canonical_name(name)
    if _matches(name, (DISTILL_PREFIX,)) and not distilling:
        return False
    if lora and _matches(name, (LLM_PREFIX,)) and LORA_SEGMENT not in name:
        return False
    return _matches(name, rule.trainable)


def apply_stage(model: nn.Module, rule: StageRule, distilling: bool, lora: bool = False) -> list[str]:
    """Set ``requires_grad`` per the stage; returns the names of the trainable parameters."""
    trainable = []
    for name, param in model.named_parameters():
        param.requires_grad_(is_trainable(name, rule, distilling, lora))
        if param.requires_grad:
            trainable.append(name)
    if not trainable:
        raise ValueError(f"stage {rule.name} trains {rule.trainable} but the model has none of those parameters")
    return trainable


def group_learning_rates(
    rule: StageRule, lr: float | None = None, group_lr: dict[str, float] | None = None
) -> dict[str, float]:
    """Rate per group name (``"default"`` for the rest): the stage's, then config overrides."""
    group_lr = dict(group_lr or {})
    unknown = sorted(set(group_lr) - {g.name for g in rule.groups})
    if unknown:
        groups = [g.name for g in rule.groups]
        raise ValueError(f"optim.group_lr names {unknown}, stage {rule.name} has groups {groups}")
    rates = {"default": rule.lr if lr is None else lr}
    rates.update({g.name: group_lr.get(g.name, g.lr) for g in rule.groups})
    return rates


def param_groups(
    model: nn.Module, rule: StageRule, rates: dict[str, float]
) -> list[dict]:
    """AdamW parameter groups (weight decay 0) of the trainable parameters, one per named group + default.

    Each group dict carries ``name``, ``lr``, ``weight_decay`` and ``params``; empty groups are left out.
    """
    members: dict[str, list[nn.Parameter]] = {g.name: [] for g in rule.groups}
    members["default"] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        name = canonical_name(name)
        group = next((g.name for g in rule.groups if _matches(name, g.prefixes)), "default")
        members[group].append(param)
    return [
        {"name": group, "lr": rates[group], "weight_decay": 0.0, "params": params}
        for group, params in members.items()
        if params
    ]
