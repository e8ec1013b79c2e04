"""Distillation in training: the loss falls with the live teacher and with the teacher cache,
and both sources give the same loss on the same batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from test_train_support import stage_overrides, write_tiny_llm, write_tiny_teacher, write_video_dataset
from videopanda.model.teacher import load_teacher
from videopanda.train.config import load_train_config
from videopanda.train.run import setup_stage
from videopanda.train.teacher_cache import FLIPPED_SUFFIX, build_teacher_cache, collect_media

STEPS = 12


@pytest.fixture(scope="module")
def world(tmp_path_factory, smollm2_tokenizer) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("distill_world")
    annotations = write_video_dataset(root / "data", num_videos=2)
    teacher = write_tiny_teacher(root / "teacher")
    cache = root / "cache"
    build_teacher_cache(load_teacher(teacher), collect_media([annotations], annotations.parent), cache,
                        num_frames=8, dtype=torch.float32)
    return {"llm": write_tiny_llm(root / "llm", smollm2_tokenizer), "annotations": annotations,
            "teacher": teacher, "cache": cache, "root": root}


def prealign_setup(world, source: str, output: Path, **extra):
    teacher = {"teacher.path": world["teacher"]} if source == "live" else {"teacher.cache": world["cache"]}
    overrides = stage_overrides(world["llm"], world["annotations"], output, "prealign", **teacher, **extra, **{
        "model.use_distillation": True, "optim.lr": 3e-3, "optim.group_lr.visual": 3e-3})
    return setup_stage(load_train_config(None, overrides))


@pytest.mark.parametrize("source", ["live", "cache"])
def test_distillation_loss_falls(world, source, tmp_path):
    setup = prealign_setup(world, source, tmp_path / "out", max_steps=STEPS)
    setup.trainer.train()
    losses = [log["distill_loss"] for log in setup.trainer.state.log_history if "distill_loss" in log]
    assert len(losses) == STEPS
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.5 * first, f"distillation loss went from {first:.3f} to {last:.3f}"
    assert tensorboard_scalars(tmp_path / "out")["train/distill_loss"] == pytest.approx(losses, rel=1e-3)


def tensorboard_scalars(output_dir: Path) -> dict[str, list[float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = {p.parent for p in output_dir.glob("runs/*/events.out.tfevents.*")}
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    scalars = {tag: [e.value for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}
    for tag in ("train/loss", "train/lm_loss", "train/distill_loss", "train/samples_per_second"):
        assert len(scalars.get(tag, [])) == STEPS, f"{tag} missing from the tensorboard logs: {sorted(scalars)}"
    return scalars


def test_live_teacher_and_cache_give_the_same_loss_on_the_same_batch(world, tmp_path):
    live = prealign_setup(world, "live", tmp_path / "live")
    cached = prealign_setup(world, "cache", tmp_path / "cache")
    model = live.model.eval()
    keys = []
    for epoch in range(3):  # several epochs: train-time flips differ, the cache holds both orientations
        targets, losses = {}, {}
        for name, setup in (("live", live), ("cache", cached)):
            setup.dataset.set_epoch(epoch)
            batch = setup.trainer.data_collator([setup.dataset[i] for i in range(len(setup.dataset))])
            keys += batch.get("sample_keys", [])
            targets[name] = setup.trainer.teacher_features(batch)
            with torch.no_grad():
                _, outputs = setup.trainer.compute_loss(model, batch, return_outputs=True)
            losses[name] = outputs.distill_loss
        torch.testing.assert_close(targets["cache"][1], targets["live"][1], rtol=0, atol=0)  # patches per frame
        torch.testing.assert_close(targets["cache"][0], targets["live"][0], rtol=1e-4, atol=1e-5)
        assert losses["live"] is not None and 0 < float(losses["live"]) < 2
        torch.testing.assert_close(losses["cache"], losses["live"], rtol=1e-5, atol=1e-6)
    assert any(k.endswith(FLIPPED_SUFFIX) for k in keys) and not all(k.endswith(FLIPPED_SUFFIX) for k in keys)
