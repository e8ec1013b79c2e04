"""Train configs (typed, validated, shipped files load) and stage rules (freezing, lr groups) on a toy module."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import get_scheduler

from conftest import REPO_ROOT
from videopanda.config import ConfigError
from videopanda.train.config import TrainConfig, load_train_config, with_data_root
from videopanda.train.run import training_arguments
from videopanda.train.stages import STAGES, apply_stage, get_stage, group_learning_rates, param_groups

SHIPPED = sorted((REPO_ROOT / "configs").glob("*.yaml")) + sorted((REPO_ROOT / "configs" / "small").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_shipped_configs_load_and_name_their_stage_and_command(path: Path):
    config = load_train_config(path)
    assert path.stem.split("_")[0] == config.stage  # finetune_lora.yaml is a finetune config
    assert "videopanda train" in path.read_text().split("\nstage:")[0] or "scripts/" in path.read_text()
    if config.deepspeed:
        assert (REPO_ROOT / config.deepspeed).is_file()


def test_release_recipe_matches_the_spec_table():
    prealign, pretrain, finetune = (load_train_config(REPO_ROOT / "configs" / f"{s}.yaml") for s in STAGES)
    assert (prealign.optim.group_lr["visual"], prealign.data.fraction, prealign.per_device_batch_size) == (4e-4, 0.5, 8)
    assert (pretrain.optim.lr, pretrain.data.fraction, pretrain.optim.warmup_ratio) == (4e-5, 1.0, 0.01)
    assert (finetune.optim.lr, finetune.optim.group_lr["visual"], finetune.per_device_batch_size) == (2e-5, 2e-5, 4)
    assert all(c.distributed == "deepspeed" and c.precision == "bf16" for c in (prealign, pretrain, finetune))


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["optim.learning_rate=1e-4"], "optim.learning_rate"),
        (["bogus=1"], "bogus"),
        (["per_device_batch_size=eight"], "per_device_batch_size"),
        (["optim.lr=fast"], "optim.lr"),
        (["precision=fp8"], "precision"),
        (["stage=pretraining"], "stage"),
        (["optim.group_lr.visual=high"], "optim.group_lr.visual"),
        (["data.annotation_files=a.json"], "data.annotation_files"),
        (["optim.lr_scheduler=cosine_restarts"], "optim.lr_scheduler"),
    ],
)
def test_unknown_key_or_wrong_type_is_an_error_naming_it(overrides, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_train_config(None, overrides)


def test_overrides_are_typed():
    config = load_train_config(None, ["optim.lr=1e-4", "max_steps=3", "data.annotation_files=[a.json, b.json]"])
    assert isinstance(config, TrainConfig)
    assert config.optim.lr == 1e-4 and config.max_steps == 3 and config.data.annotation_files == ["a.json", "b.json"]


@pytest.mark.parametrize(("schedule", "last_share"), [("cosine", 0.0), ("constant_with_warmup", 1.0)])
def test_the_configured_schedule_is_the_one_the_trainer_steps(schedule, last_share, tmp_path):
    config = load_train_config(None, [f"optim.lr_scheduler={schedule}", "max_steps=20", "precision=fp32",
                                      f"output_dir={tmp_path}"])
    rule = get_stage(config.stage)
    args = training_arguments(config, rule, group_learning_rates(rule, 1e-3))
    optimizer = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=1e-3)
    scheduler = get_scheduler(args.lr_scheduler_type, optimizer, args.get_warmup_steps(20), 20)
    shares = []
    for _ in range(20):
        optimizer.step()
        scheduler.step()
        shares.append(scheduler.get_last_lr()[0] / 1e-3)
    assert shares[-1] == pytest.approx(last_share, abs=1e-6)
    assert max(shares) == pytest.approx(1.0)  # the warmup reaches the configured rate either way


class Toy(nn.Module):
    """The four top-level submodule names of VideoPandaForCausalLM, nothing else."""

    def __init__(self) -> None:
        super().__init__()
        self.stab = nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2))
        self.projector = nn.Linear(2, 3)
        self.language_model = nn.ModuleDict({"model": nn.Linear(3, 3), "lm_head": nn.Linear(3, 5)})
        self.distill_head = nn.Linear(3, 4)


def trainable(model: nn.Module) -> set[str]:
    return {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize(
    ("stage", "distilling", "expected"),
    [
        ("prealign", True, {"stab", "projector", "distill_head"}),
        ("prealign", False, {"stab", "projector"}),
        ("pretrain", True, {"stab", "projector", "language_model", "distill_head"}),
        ("finetune", True, {"stab", "projector", "language_model"}),  # finetune never distills
    ],
)
def test_stage_rules_freeze_by_prefix(stage, distilling, expected):
    model = Toy()
    rule = get_stage(stage)
    apply_stage(model, rule, distilling and rule.distills)
    assert trainable(model) == expected


def test_param_groups_carry_the_stage_and_override_rates():
    model = Toy()
    rule = get_stage("prealign")
    apply_stage(model, rule, distilling=True)
    groups = param_groups(model, rule, group_learning_rates(rule, lr=1e-5, group_lr={"visual": 3e-3}))
    by_name = {g["name"]: g for g in groups}
    assert {n: g["lr"] for n, g in by_name.items()} == {"visual": 3e-3, "default": 1e-5}
    ids = lambda params: {id(p) for p in params}  # noqa: E731
    assert ids(by_name["visual"]["params"]) == ids([*model.stab.parameters(), *model.projector.parameters()])
    assert ids(by_name["default"]["params"]) == ids(model.distill_head.parameters())
    assert all(g["weight_decay"] == 0.0 for g in groups)
    assert group_learning_rates(get_stage("finetune")) == {"default": 2e-5, "visual": 2e-5}


def test_rules_see_through_wrapper_names():
    wrapped = nn.Module()
    wrapped.module = Toy()  # how DDP names parameters
    apply_stage(wrapped, get_stage("prealign"), distilling=False)
    assert trainable(wrapped.module) == {"stab", "projector"}


def test_unknown_group_and_stage_are_refused():
    with pytest.raises(ValueError, match="visiual"):
        group_learning_rates(get_stage("pretrain"), group_lr={"visiual": 1e-4})
    with pytest.raises(ValueError, match="stage3"):
        get_stage("stage3")
    with pytest.raises(ValueError, match="trains"):
        apply_stage(nn.Linear(2, 2), get_stage("prealign"), distilling=True)


@pytest.mark.parametrize("stage", list(STAGES))
def test_launch_scripts_parse_and_name_their_config(stage):
    import subprocess

    script = REPO_ROOT / "scripts" / f"{stage}.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    assert f"configs/{stage}.yaml" in text and "scripts/launch.sh" in text and "#SBATCH --nodes=16" in text
    assert (REPO_ROOT / f"configs/{stage}.yaml").is_file()


@pytest.mark.parametrize("stage, annotations", [
    ("prealign", "valley_.json"), ("pretrain", "valley_.json"), ("finetune", "videochatgpt_tune_.json"),
])
def test_data_root_fills_each_release_config_with_its_own_files(stage, annotations, tmp_path):
    config = load_train_config(REPO_ROOT / f"configs/{stage}.yaml", data_root=tmp_path)
    assert config.data.annotation_files == [f"{tmp_path}/train/train_json/{annotations}"]
    assert config.data.media_root == f"{tmp_path}/train"
    assert "--data-root" in (REPO_ROOT / f"scripts/{stage}.sh").read_text()  # the launcher passes DATA_ROOT on


def test_data_root_leaves_paths_without_the_placeholder(tmp_path):
    mixed = ["data.annotation_files=[DATA_ROOT/a.json]", "data.media_root=DATA_ROOTS/x", "data.image_root=DATA_ROOT"]
    placed = with_data_root(load_train_config(overrides=mixed), tmp_path)
    assert (placed.data.media_root, placed.data.image_root) == ("DATA_ROOTS/x", "DATA_ROOT")
    assert placed.data.annotation_files == [f"{tmp_path}/a.json"]


def test_data_root_that_would_change_nothing_or_does_not_exist_is_refused(tmp_path):
    config = load_train_config(REPO_ROOT / "configs/small/prealign.yaml")  # no DATA_ROOT/ paths
    with pytest.raises(ConfigError, match="DATA_ROOT/.*change nothing"):
        with_data_root(config, tmp_path)
    with pytest.raises(FileNotFoundError, match="nope"):
        load_train_config(REPO_ROOT / "configs/prealign.yaml", data_root=tmp_path / "nope")


def _small_stage_configs(tmp_path: Path) -> Path:
    """configs/small/*.yaml with their data paths pointing at an (empty) annotation file that exists."""
    import yaml

    (tmp_path / "a.json").write_text("[]")
    config_dir = tmp_path / "configs"
    config_dir.mkdir()
    for stage in STAGES:
        values = yaml.safe_load((REPO_ROOT / f"configs/small/{stage}.yaml").read_text())
        values["data"].update(annotation_files=[str(tmp_path / "a.json")], media_root=str(tmp_path))
        values["output_dir"] = str(tmp_path / "runs" / stage)
        (config_dir / f"{stage}.yaml").write_text(yaml.safe_dump(values))
    return config_dir


def test_stage_chain_checks_every_stage_before_training_and_refuses_a_shared_output_dir(tmp_path):
    from videopanda.train.run import stage_chain

    config_dir = _small_stage_configs(tmp_path)
    chain = stage_chain(["prealign", "pretrain", "finetune"], config_dir)
    assert [c.model.init for c in chain[1:]] == [chain[0].output_dir, chain[1].output_dir]
    with pytest.raises(ConfigError, match="share output_dir"):
        stage_chain(["pretrain", "finetune"], config_dir, [f"output_dir={tmp_path / 'one'}"])
    # A later stage's bad config is found before the first stage trains.
    (config_dir / "finetune.yaml").write_text((config_dir / "finetune.yaml").read_text() + "optim: {lrr: 1}\n")
    with pytest.raises(ConfigError, match="optim.lrr"):
        stage_chain(["pretrain", "finetune"], config_dir)
    with pytest.raises(FileNotFoundError, match="data.annotation_files"):
        stage_chain(["pretrain"], config_dir, [f"data.annotation_files=[{tmp_path / 'absent.json'}]"])
    # deepspeed is a test dependency, so what is checked here is the config file the stage names.
    with pytest.raises(FileNotFoundError, match="deepspeed config"):
        stage_chain(["pretrain"], config_dir, ["distributed=deepspeed", f"deepspeed={tmp_path / 'absent.json'}"])


def test_resume_refuses_a_checkpoint_of_another_stage_or_config(tmp_path):
    from videopanda.train.run import STAGE_RECORD_NAME, claim_output_dir, stage_chain

    pretrain, finetune = stage_chain(["pretrain", "finetune"], _small_stage_configs(tmp_path))
    checkpoint = Path(pretrain.output_dir) / "checkpoint-2"
    checkpoint.mkdir(parents=True)
    claim_output_dir(pretrain, None)  # pretrain starts, then saves checkpoint-2
    claim_output_dir(pretrain, checkpoint)  # its own rerun resumes
    from dataclasses import replace

    claim_output_dir(replace(pretrain, max_steps=99, logging_steps=1), checkpoint)  # settings a resume may change
    with pytest.raises(ConfigError, match="stage pretrain"):
        claim_output_dir(replace(finetune, output_dir=pretrain.output_dir), checkpoint)
    with pytest.raises(ConfigError, match="own output_dir"):
        claim_output_dir(replace(pretrain, seed=7), checkpoint)
    (Path(pretrain.output_dir) / STAGE_RECORD_NAME).unlink()
    with pytest.raises(ConfigError, match="no record"):
        claim_output_dir(pretrain, checkpoint)
