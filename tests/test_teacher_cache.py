"""Teacher feature cache: equal to the live teacher on real videos, resumable, stale caches refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from test_teacher import random_teacher, write_languagebind_dir
from videopanda.cli import main
from videopanda.data.decode import read_image, read_video_frames
from videopanda.data.transform import preprocess_frames
from videopanda.model.configuration_videopanda import VideoPandaConfig
from videopanda.model.teacher import teacher_patch_features
from videopanda.train.teacher_cache import (
    FLIPPED_SUFFIX,
    CachedTeacher,
    TeacherCache,
    build_teacher_cache,
    collect_media,
    shard_name,
)


@pytest.fixture
def dataset(tmp_path, make_video):
    """Annotations over real files: two videos (wide, tall), a clip, an image, a missing video, a repeat."""
    make_video("wide.mp4", num_frames=24, height=48, width=96, fps=8)
    make_video("tall.avi", num_frames=12, height=90, width=40, fps=4, seed=1)
    Image.fromarray(np.full((30, 50, 3), 200, np.uint8)).save(tmp_path / "still.png")
    talk = [{"from": "human", "value": "What happens?"}, {"from": "gpt", "value": "A square moves."}]
    items = [
        {"id": "a", "video": "wide.mp4", "conversations": talk},
        {"id": "b", "video": "tall.avi", "conversations": talk},
        {"id": "c", "video": "wide.mp4", "start": 0.5, "end": 2.0, "conversations": talk},
        {"id": "d", "image": "still.png", "conversations": talk},
        {"id": "e", "video": "missing.mp4", "conversations": talk},
        {"id": "f", "video": "wide.mp4", "conversations": talk},  # same media as "a": cached once
        {"id": "g", "conversations": talk},  # text only
    ]
    annotations = tmp_path / "train.json"
    annotations.write_text(json.dumps(items))
    return annotations


def live_features(teacher, path, clip=None, flip=False):
    """What the live teacher gives a batch holding just this sample (chunks of 4 frames, as collated)."""
    size = teacher.config.image_size
    is_video = path.suffix != ".png"
    frames = read_video_frames(path, 8, clip) if is_video else read_image(path)
    pixels = preprocess_frames(frames, image_size=size, teacher_image_size=size, num_frames=8 if is_video else None,
                               train=False).teacher_pixel_values
    pixels = pixels.flip(-1) if flip else pixels
    return teacher_patch_features(teacher, pixels, torch.tensor([4, 4] if is_video else [1]))


def test_cli_cache_equals_live_teacher(tmp_path, dataset):
    teacher = random_teacher()
    (tmp_path / "teacher").mkdir()
    write_languagebind_dir(tmp_path / "teacher", teacher, "safetensors")
    out = tmp_path / "cache"
    argv = ["teacher", "cache", "--teacher", str(tmp_path / "teacher"), "--data", str(dataset),
            "--video-root", str(tmp_path), "--out", str(out), "--batch-size", "2", "--shard-size", "2",
            "--dtype", "float32"]
    assert main(argv) == 0
    cache = TeacherCache(out)
    assert len(cache.shards) == 3  # 5 distinct media, 2 per shard
    assert len(cache) == 8 and set(cache.failed) == {"missing.mp4"}  # 4 readable media, both orientations
    for key, path, clip in [("wide.mp4", "wide.mp4", None), ("tall.avi", "tall.avi", None),
                            ("wide.mp4@0.5-2", "wide.mp4", (0.5, 2.0)), ("still.png", "still.png", None)]:
        for flip in (False, True):
            features, patches = cache.get(key + (FLIPPED_SUFFIX if flip else ""))
            expected_features, expected_patches = live_features(teacher, tmp_path / path, clip, flip)
            assert torch.equal(patches, expected_patches)
            torch.testing.assert_close(features, expected_features, atol=1e-5, rtol=1e-5)
    assert cache.get("tall.avi")[1].tolist()[:1] == [8]  # 2 of 4 patch columns are padding
    with pytest.raises(KeyError, match="VideoDecodeError"):
        cache.get("missing.mp4")


def test_resume_keeps_finished_shards_and_refuses_another_teacher(tmp_path, dataset):
    teacher = random_teacher()
    items = collect_media([dataset], tmp_path)
    out = tmp_path / "cache"
    build_teacher_cache(teacher, items, out, shard_size=2, dtype=torch.float32)
    first = (out / shard_name(0)).stat().st_mtime_ns
    stored = TeacherCache(out).get("tall.avi")[0]
    (out / shard_name(1)).unlink()  # as if interrupted while writing shard 1
    build_teacher_cache(teacher, items, out, shard_size=2, dtype=torch.float32)
    assert (out / shard_name(0)).stat().st_mtime_ns == first
    torch.testing.assert_close(TeacherCache(out).get("tall.avi")[0], stored, atol=0, rtol=0)
    with pytest.raises(ValueError, match="fingerprint"):
        build_teacher_cache(random_teacher(seed=1), items, out, shard_size=2, dtype=torch.float32)


def test_cached_teacher_serves_batches_and_checks_the_model(tmp_path, dataset):
    teacher = random_teacher()
    out = tmp_path / "cache"
    build_teacher_cache(teacher, collect_media([dataset], tmp_path), out, flips=False)
    model_config = VideoPandaConfig(teacher_hidden_size=32, image_size=112, teacher_image_size=56)
    source = CachedTeacher(out, model_config)
    frames = torch.zeros(9, 4, 112, 112)
    features, patches = source({"sample_keys": ["still.png", "wide.mp4"], "pixel_values_videos": frames})
    cache = TeacherCache(out)
    assert patches.tolist() == cache.get("still.png")[1].tolist() + cache.get("wide.mp4")[1].tolist()
    assert features.shape == (int(patches.sum()), 32) and features.dtype == torch.float16
    with pytest.raises(ValueError, match="gives 9 frames for a batch of 8"):
        source({"sample_keys": ["still.png", "wide.mp4"], "pixel_values_videos": torch.zeros(8, 4, 112, 112)})
    with pytest.raises(KeyError, match="without --flips"):
        source({"sample_keys": ["wide.mp4" + FLIPPED_SUFFIX]})
    with pytest.raises(ValueError, match="teacher width 32 \\(model 1024\\)"):
        CachedTeacher(out, VideoPandaConfig(image_size=112, teacher_image_size=56))
