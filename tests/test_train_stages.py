"""One optimizer step of each stage on a tiny model: exactly the stage's parameters change, at their group's lr."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from transformers import AutoProcessor

from test_train_support import stage_overrides, write_tiny_llm, write_tiny_teacher, write_video_dataset
from videopanda.model.modeling_videopanda import VideoPandaForCausalLM
from videopanda.train.config import load_train_config
from videopanda.train.run import setup_stage, train_stage

TRAINED = {
    "prealign": {"stab", "projector", "distill_head"},
    "pretrain": {"stab", "projector", "language_model", "distill_head"},
    "finetune": {"stab", "projector", "language_model"},  # no teacher in stage 3: the head stays as it is
}
RATES = {"optim.lr": 2e-3, "optim.group_lr.visual": 5e-3}


@dataclass
class World:
    llm: Path
    teacher: Path
    annotations: Path
    prealigned: Path  # a stage-1 output: the init of stages 2 and 3


@pytest.fixture(scope="module")
def world(tmp_path_factory, smollm2_tokenizer) -> World:
    root = tmp_path_factory.mktemp("train_world")
    llm = write_tiny_llm(root / "llm", smollm2_tokenizer)
    teacher = write_tiny_teacher(root / "teacher")
    annotations = write_video_dataset(root / "data", num_videos=4)
    overrides = stage_overrides(llm, annotations, root / "prealign", "prealign", **{
        "teacher.path": teacher, "model.use_distillation": True})
    prealigned = train_stage(load_train_config(None, overrides))
    return World(llm, teacher, annotations, prealigned)


def top_level(names) -> set[str]:
    return {name.split(".")[0] for name in names}


@pytest.mark.parametrize("stage", ["prealign", "pretrain", "finetune"])
def test_one_step_changes_exactly_the_stage_parameters(world, stage, tmp_path):
    init = world.llm if stage == "prealign" else world.prealigned
    overrides = stage_overrides(init, world.annotations, tmp_path / stage, stage, **RATES, **{
        "teacher.path": world.teacher, "model.use_distillation": True})
    setup = setup_stage(load_train_config(None, overrides))
    before = {name: p.detach().clone() for name, p in setup.model.named_parameters()}
    setup.trainer.train()

    params = dict(setup.model.named_parameters())
    trainable = {name for name, p in params.items() if p.requires_grad}
    changed = {name for name, p in params.items() if not torch.equal(p.detach(), before[name])}
    assert changed <= trainable, f"frozen parameters changed: {sorted(changed - trainable)[:5]}"
    assert top_level(trainable) == TRAINED[stage]
    assert top_level(changed) == TRAINED[stage]

    groups = {g["name"]: g for g in setup.trainer.optimizer.param_groups}
    assert {name: g["initial_lr"] for name, g in groups.items()} == {"visual": 5e-3, "default": 2e-3}
    visual = {id(p) for name, p in params.items() if p.requires_grad and name.split(".")[0] in ("stab", "projector")}
    assert {id(p) for p in groups["visual"]["params"]} == visual
    assert {id(p) for p in groups["default"]["params"]} == {id(params[n]) for n in trainable} - visual


def test_stage_output_is_a_loadable_model_and_the_next_init(world):
    model = VideoPandaForCausalLM.from_pretrained(world.prealigned)
    assert model.distill_head is not None and model.config.image_size == 56
    assert (world.prealigned / "tokenizer.json").is_file() and (world.prealigned / "train_config.yaml").is_file()
    processor = AutoProcessor.from_pretrained(world.prealigned)  # the stage output holds its processor
    assert processor.template == model.config.prompt_template and processor.video_processor.image_size == 56
    # Stage 1 left the LLM exactly as the tiny LLM directory holds it.
    from transformers import AutoModelForCausalLM

    llm = AutoModelForCausalLM.from_pretrained(world.llm)
    for name, tensor in llm.state_dict().items():
        torch.testing.assert_close(model.language_model.state_dict()[name], tensor, rtol=0, atol=0)


def test_cli_chains_the_three_stages(world, tmp_path):
    import yaml

    from videopanda.cli import main

    config_dir = tmp_path / "configs"
    config_dir.mkdir()
    for stage in TRAINED:
        init = world.llm if stage == "prealign" else world.prealigned  # replaced by the previous stage's output
        config: dict = {}
        for override in stage_overrides(init, world.annotations, tmp_path / stage, stage, **{
                "teacher.path": world.teacher, "model.use_distillation": True}):
            key, _, value = override.partition("=")
            *parents, leaf = key.split(".")
            node = config
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = yaml.safe_load(value)
        (config_dir / f"{stage}.yaml").write_text(yaml.safe_dump(config))

    assert main(["train", "--stages", "prealign,pretrain,finetune", "--config-dir", str(config_dir)]) == 0
    outputs = {stage: VideoPandaForCausalLM.from_pretrained(tmp_path / stage).state_dict() for stage in TRAINED}
    for stage, previous in (("pretrain", "prealign"), ("finetune", "pretrain")):
        saved = yaml.safe_load((tmp_path / stage / "train_config.yaml").read_text())
        assert saved["model"]["init"] == str(tmp_path / previous)
    head = [k for k in outputs["finetune"] if k.startswith("distill_head.")]
    assert head and all(torch.equal(outputs["finetune"][k], outputs["pretrain"][k]) for k in head)
    assert not torch.equal(outputs["finetune"]["projector.0.weight"], outputs["pretrain"]["projector.0.weight"])


def test_skipped_samples_are_summarised_at_the_end_of_each_epoch(world, tmp_path, caplog):
    import json
    import logging

    items = json.loads(world.annotations.read_text())
    broken = tmp_path / "with_missing.json"
    broken.write_text(json.dumps(items + [{**items[0], "video": "missing.mp4"}]))
    overrides = stage_overrides(world.llm, broken, tmp_path / "out", "prealign", max_steps=-1, num_epochs=1)
    overrides += [f"data.media_root={world.annotations.parent}"]
    setup = setup_stage(load_train_config(None, overrides))
    with caplog.at_level(logging.INFO, logger="videopanda.train.trainer"):
        setup.trainer.train()
    summaries = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch 1:")]
    assert len(summaries) == 1 and "1 samples skipped" in summaries[0] and "missing.mp4" in summaries[0]


def test_a_tied_head_is_not_a_missing_key_on_resume(smollm2_tokenizer):
    """Resuming a tied model loaded its checkpoint without the head's second name, and the Trainer warned."""
    from conftest import small_videopanda_config
    from videopanda.model.modeling_videopanda import VideoPandaForCausalLM
    from videopanda.train.trainer import tied_parameter_names, without_tied_keys

    config = small_videopanda_config(smollm2_tokenizer)
    config.text_config.tie_word_embeddings = True
    model = VideoPandaForCausalLM(config)
    model.tie_weights()
    assert tied_parameter_names(model) == {"language_model.lm_head.weight"}
    state = {k: v for k, v in model.state_dict().items() if k != "language_model.lm_head.weight"}
    result = model.load_state_dict(state, strict=False)
    assert result.missing_keys == ["language_model.lm_head.weight"]  # what the Trainer would warn about
    assert without_tied_keys(result, model).missing_keys == []
    untied = VideoPandaForCausalLM(small_videopanda_config(smollm2_tokenizer))
    assert tied_parameter_names(untied) == set()
