"""Video-LLaVA JSON datasets on real files (bad data skipped and reported) and the grouped sampler."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import small_videopanda_config
from videopanda.data.dataset import FLIPPED_SUFFIX, VideoLLaVADataset, load_annotations
from videopanda.data.processing_videopanda import VideoPandaProcessor
from videopanda.data.sampler import ModalityLengthGroupedSampler
from videopanda.train.teacher_cache import FLIPPED_SUFFIX as CACHE_FLIPPED_SUFFIX


def qa(question, answer="red"):
    return [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]


@pytest.fixture(scope="module")
def processor(smollm2_tokenizer):
    return VideoPandaProcessor.for_model(smollm2_tokenizer, small_videopanda_config(smollm2_tokenizer))


def write_json(path, items):
    path.write_text(json.dumps(items))
    return path


def test_corrupt_and_missing_videos_are_skipped_and_reported(tmp_path, make_video, processor, caplog):
    good = make_video("a.mp4", num_frames=8, height=64, width=96, fps=4)
    corrupt = make_video("b.avi", num_frames=8, height=64, width=96, fps=4)
    corrupt.write_bytes(corrupt.read_bytes()[:300] + b"\x00garbage" * 40)  # truncated + garbage
    make_video("d.mkv", num_frames=8, height=96, width=64, fps=4)
    Image.fromarray(np.full((40, 60, 3), 200, np.uint8)).save(tmp_path / "e.png")
    items = [
        {"id": "0", "video": good.name, "conversations": qa("<video>\nColour?")},
        {"id": "1", "video": "b.avi", "conversations": qa("<video>\nColour?")},
        {"id": "2", "video": "c.webm", "conversations": qa("<video>\nColour?")},  # missing
        {"id": "3", "video": "d.mkv", "start": 0.0, "end": 1.5, "conversations": qa("<video>\nColour?", "blue")},
        {"id": "4", "conversations": qa("Hi", "Hello")},
        {"id": "5", "image": "e.png", "conversations": qa("<image>\nWhat?", "grey")},
    ]
    items = load_annotations([write_json(tmp_path / "train.json", items)])
    dataset = VideoLLaVADataset(items, tmp_path, processor, train=False)
    with caplog.at_level(logging.WARNING, logger="videopanda.data.dataset"):
        samples = [dataset[i] for i in range(len(dataset))]
    records = dataset.skipped.records()
    assert [(r.index, r.media) for r in records] == [(1, "b.avi"), (2, "c.webm")]
    assert all(r.reason.startswith("VideoDecodeError") for r in records)
    assert "c.webm: file not found" in records[1].reason
    summary = dataset.skipped_summary()
    assert summary.startswith("2 samples skipped (2 VideoDecodeError)") and "train.json#1" in summary
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2 and "skipping sample 1" in warnings[0] and "b.avi" in warnings[0]
    # the bad ones are replaced by the next usable sample, deterministically
    assert torch.equal(samples[1].input_ids, samples[3].input_ids)
    assert torch.equal(samples[2].input_ids, samples[3].input_ids)
    assert samples[0].pixel_values_videos.shape == (8, 4, 112, 112)
    assert samples[0].video_grid_thw.tolist() == [[8, 8, 8]]
    assert samples[4].pixel_values_videos is None and samples[5].video_grid_thw.tolist() == [[1, 8, 8]]
    assert [m for m, _ in dataset.modality_lengths()] == ["video"] * 4 + ["text", "image"]


def test_malformed_items_are_skipped(tmp_path, make_video, processor):
    make_video("a.mp4", num_frames=4, fps=4)
    items = [
        {"id": "no conversations", "video": "a.mp4"},
        "not an object",
        {"id": "bad turns", "conversations": [{"from": "gpt", "value": "A"}]},
        {"id": "bad clip", "video": "a.mp4", "start": 3, "end": 1, "conversations": qa("<video>\nQ")},
        {"id": "two markers", "video": "a.mp4", "conversations": qa("<video> <video>")},
        {"id": "ok", "conversations": qa("Hi", "Hello")},
    ]
    dataset = VideoLLaVADataset(load_annotations([write_json(tmp_path / "a.json", items)]), tmp_path, processor)
    assert all(dataset[i].pixel_values_videos is None for i in range(len(dataset)))  # all replaced by the text sample
    kinds = [r.reason.split(":")[0] for r in dataset.skipped.records()]
    assert kinds == [
        "ConversationError", "AnnotationError", "ConversationError", "AnnotationError", "ConversationError"
    ]


def test_visual_cut_by_max_length_is_skipped_with_a_warning(tmp_path, make_video, smollm2_tokenizer, caplog):
    make_video("a.mp4", num_frames=8, fps=4)
    items = [{"id": "v", "video": "a.mp4", "conversations": qa("<video>\nQ")}, {"id": "t", "conversations": qa("Hi")}]
    config = small_videopanda_config(smollm2_tokenizer)
    processor = VideoPandaProcessor.for_model(smollm2_tokenizer, config, max_length=64)
    dataset = VideoLLaVADataset(load_annotations([write_json(tmp_path / "a.json", items)]), tmp_path, processor)
    with caplog.at_level(logging.WARNING, logger="videopanda.data.dataset"):
        sample = dataset[0]
    assert sample.pixel_values_videos is None and "SampleTooLongError" in caplog.text and "max_length=64" in caplog.text


def test_all_bad_is_a_clear_error_not_a_loop(tmp_path, processor):
    items = [{"id": str(i), "video": f"missing{i}.mp4", "conversations": qa("<video>\nQ")} for i in range(3)]
    dataset = VideoLLaVADataset(load_annotations([write_json(tmp_path / "a.json", items)]), tmp_path, processor)
    with pytest.raises(RuntimeError, match="consecutive unusable samples"):
        dataset[0]


def test_skip_log_file_collects_skips_across_dataset_copies(tmp_path, processor):
    annotations = [{"id": "x", "video": "gone.mp4", "conversations": qa("Q")}, {"id": "t", "conversations": qa("Hi")}]
    items = load_annotations([write_json(tmp_path / "a.json", annotations)])
    worker = VideoLLaVADataset(items, tmp_path, processor, skip_log=tmp_path / "skipped.jsonl")
    main = VideoLLaVADataset(items, tmp_path, processor, skip_log=tmp_path / "skipped.jsonl")
    worker[0]
    assert main.skipped_summary().startswith("1 samples skipped") and "gone.mp4" in main.skipped_summary()


def test_malformed_json_file_names_the_file(tmp_path):
    good = write_json(tmp_path / "good.json", [{"id": "t", "conversations": qa("Hi")}])
    (tmp_path / "broken.json").write_text("[{not json")
    with pytest.raises(ValueError, match="broken.json"):
        load_annotations([good, tmp_path / "broken.json"])
    with pytest.raises(ValueError, match="dict.json must hold a JSON list"):
        load_annotations([write_json(tmp_path / "dict.json", {"id": "t"})])


def test_fraction_of_shuffled_data_and_max_samples(tmp_path):
    files = [
        write_json(tmp_path / f"{n}.json", [{"id": f"{n}{i}", "conversations": qa("Q")} for i in range(10)])
        for n in "ab"
    ]
    half = load_annotations(files, fraction=0.5, seed=1)
    ids = [a.item["id"] for a in half]
    assert len(ids) == len(set(ids)) == 10 and ids == [a.item["id"] for a in load_annotations(files, 0.5, seed=1)]
    assert ids != [a.item["id"] for a in load_annotations(files)][:10]  # shuffled, not the first file
    assert [a.source for a in load_annotations(files, max_samples=3)] == [f"{tmp_path}/a.json#{i}" for i in range(3)]


def test_train_flip_is_seeded_and_named_in_the_sample_key(tmp_path, make_video, processor):
    make_video("a.mp4", num_frames=8, height=64, width=96, fps=4)
    item = {"id": "v", "video": "a.mp4", "start": 0, "end": 1.5, "conversations": qa("<video>\nQ")}
    items = load_annotations([write_json(tmp_path / "a.json", [item])])
    plain = VideoLLaVADataset(items, tmp_path, processor, train=False, with_teacher=True)[0]
    runs = []
    for _ in range(2):
        dataset = VideoLLaVADataset(items, tmp_path, processor, train=True, seed=5, with_teacher=True, with_keys=True)
        samples = []
        for epoch in range(8):
            dataset.set_epoch(epoch)
            samples.append(dataset[0])
        runs.append(samples)
    # the same (seed, epoch, index) gives the same sample
    assert all(torch.equal(a.pixel_values_videos, b.pixel_values_videos) for a, b in zip(*runs, strict=True))
    flipped = [s.sample_key == f"a.mp4@0-1.5{FLIPPED_SUFFIX}" for s in runs[0]]
    assert any(flipped) and not all(flipped)
    for sample, flip in zip(runs[0], flipped, strict=True):
        expected = plain.pixel_values_videos.flip(-1) if flip else plain.pixel_values_videos
        assert torch.equal(sample.pixel_values_videos, expected)
        teacher = plain.teacher_pixel_values_videos
        assert torch.equal(sample.teacher_pixel_values_videos, teacher.flip(-1) if flip else teacher)
        assert flip or sample.sample_key == "a.mp4@0-1.5"
    assert FLIPPED_SUFFIX == CACHE_FLIPPED_SUFFIX  # the teacher cache stores both orientations under these keys


def test_sampler_groups_by_modality_and_is_deterministic():
    rng = np.random.default_rng(0)
    modality_lengths = [(m, int(rng.integers(1, 100))) for m in ["video"] * 37 + ["text"] * 21 + ["image"] * 13]
    sampler = ModalityLengthGroupedSampler(modality_lengths, batch_size=2, world_size=2, seed=3, megabatch_factor=2)
    order = list(sampler)
    assert sorted(order) == list(range(len(modality_lengths))) and len(sampler) == len(order)
    assert order == list(ModalityLengthGroupedSampler(modality_lengths, 2, 2, seed=3, megabatch_factor=2))
    steps = [order[i : i + 4] for i in range(0, len(order), 4)]
    full_steps = 37 // 4 + 21 // 4 + 13 // 4  # each modality's partial last step comes at the end
    for step in steps[:full_steps]:
        assert len(step) == 4 and len({modality_lengths[i][0] for i in step}) == 1
    modalities = {modality_lengths[steps[k][0]][0] for k in range(full_steps)}
    assert modalities == {"video", "text", "image"}  # full steps of all modalities are shuffled together
    sampler.set_epoch(1)
    assert list(sampler) != order


def test_sampler_batches_similar_lengths():
    modality_lengths = [("video", n) for n in range(64)]
    order = list(ModalityLengthGroupedSampler(modality_lengths, batch_size=4, seed=0, megabatch_factor=16))
    batches = [sorted(order[i : i + 4]) for i in range(0, 64, 4)]
    assert all(b[-1] - b[0] == 3 for b in batches)  # one megabatch, sorted: consecutive lengths per batch
