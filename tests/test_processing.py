"""Templates, label masking, placeholder expansion, datasets with bad samples, collation, sampling."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import moving_square_frames, small_videopanda_config
from videopanda.data.collator import VideoPandaCollator
from videopanda.data.conversation import VICUNA_SYSTEM, Turn, render
from videopanda.data.dataset import VideoLLaVADataset, load_annotations
from videopanda.data.processing_videopanda import VideoPandaProcessor, VisualTokensTruncated
from videopanda.data.sampler import ModalityLengthGroupedSampler
from videopanda.data.transform import preprocess_frames, preprocess_image
from videopanda.data.video_writer import write_video

TURNS = [Turn("user", "<video>\nWhat colour?"), Turn("assistant", "red"), Turn("user", "Shape?"), Turn("assistant", "square")]


def learned_text(tokenizer, sample) -> str:
    return tokenizer.decode(sample.labels[sample.labels != -100])


def test_vicuna_segments_by_hand(smollm2_tokenizer):
    segments = render("vicuna_v1", [Turn("user", "Q1"), Turn("assistant", "A1"), Turn("user", "Q2")],
                      smollm2_tokenizer, add_generation_prompt=True)
    text = "".join(s.text for s in segments)
    assert text == f"{VICUNA_SYSTEM} USER: Q1 ASSISTANT: A1</s>USER: Q2 ASSISTANT:"
    assert [s.text for s in segments if s.learned] == [" A1</s>"]


@pytest.mark.parametrize("template, expected", [
    ("vicuna_v1", " red</s> square</s>"),
    ("chat_template", "red<|im_end|>\nsquare<|im_end|>\n"),
])
def test_labels_only_on_assistant_replies(smollm2_tokenizer, template, expected):
    config = small_videopanda_config(smollm2_tokenizer)
    processor = VideoPandaProcessor(smollm2_tokenizer, config, template=template, system="S")
    frames = moving_square_frames(4, 64, 96)
    visual = preprocess_frames(frames, image_size=112, teacher_image_size=56)
    sample = processor.encode(TURNS, visual)
    assert learned_text(smollm2_tokenizer, sample) == expected
    placeholders = sample.input_ids == config.image_token_id
    assert int(placeholders.sum()) == int(processor.frame_token_counts(visual.pixel_values).sum())
    assert (sample.labels[placeholders] == -100).all()
    # the placeholders sit at the front of the first user turn
    first = int(placeholders.nonzero()[0])
    prompt_before = smollm2_tokenizer.decode(sample.input_ids[:first])
    assert prompt_before.endswith("USER: " if template == "vicuna_v1" else "user\n")


@pytest.mark.parametrize("height, width, grid", [(64, 128, (2, 4)), (128, 64, (4, 2)), (96, 96, (4, 4))])
def test_placeholder_count_per_aspect_ratio(smollm2_tokenizer, height, width, grid):
    config = small_videopanda_config(smollm2_tokenizer)
    processor = VideoPandaProcessor(smollm2_tokenizer, config)
    visual = preprocess_frames(moving_square_frames(3, height, width), image_size=112, teacher_image_size=56)
    sample = processor.encode(TURNS[:2], visual)
    h, w = grid
    expected = 3 * (1 + h * (w + 1)) + 5 * (1 + 4 * 5)  # 3 real frames + 5 padding frames (top-left 4x4)
    assert int((sample.input_ids == config.image_token_id).sum()) == expected
    assert sample.chunk_lengths.tolist() == [4, 4]


def test_visual_tokens_cut_by_max_length_is_rejected(smollm2_tokenizer):
    config = small_videopanda_config(smollm2_tokenizer)
    processor = VideoPandaProcessor(smollm2_tokenizer, config, max_length=100)
    visual = preprocess_frames(moving_square_frames(4, 64, 64), image_size=112, teacher_image_size=56)
    with pytest.raises(VisualTokensTruncated, match="max_length=100"):
        processor.encode(TURNS, visual)


def write_dataset(tmp_path, names):
    items = []
    for i, name in enumerate(names):
        write_video(tmp_path / name, moving_square_frames(8, 64, 96, seed=i), fps=4)
        items.append({"id": str(i), "video": name, "conversations": [
            {"from": "human", "value": "<video>\nColour?"}, {"from": "gpt", "value": "red"}]})
    items.append({"id": "text", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]})
    items.append({"id": "bad"})  # malformed: no conversations
    (tmp_path / "train.json").write_text(json.dumps(items))
    return tmp_path / "train.json"


def test_dataset_skips_and_reports_corrupt_missing_and_malformed(tmp_path, smollm2_tokenizer):
    annotation = write_dataset(tmp_path, ["a.mp4", "b.avi", "c.webm", "d.mkv"])
    (tmp_path / "b.avi").write_bytes(b"not a video" * 50)
    (tmp_path / "c.webm").unlink()
    config = small_videopanda_config(smollm2_tokenizer)
    dataset = VideoLLaVADataset(load_annotations([annotation]), tmp_path, VideoPandaProcessor(smollm2_tokenizer, config))
    samples = [dataset[i] for i in range(len(dataset))]
    assert sorted(dataset.skipped.items) == ["train.json#1", "train.json#2", "train.json#5"]
    assert "b.avi" in dataset.skipped.items["train.json#1"] and "c.webm" in dataset.skipped.items["train.json#2"]
    assert dataset.skipped.summary().startswith("3 samples skipped")
    # replacements are the next usable index, deterministically
    assert torch.equal(samples[1].input_ids, samples[3].input_ids) and samples[5].pixel_values is not None
    assert samples[4].pixel_values is None  # the text-only sample


def test_collator_mixed_batch_and_malformed_json(tmp_path, smollm2_tokenizer):
    config = small_videopanda_config(smollm2_tokenizer)
    processor = VideoPandaProcessor(smollm2_tokenizer, config)
    wide = processor.encode(TURNS[:2], preprocess_frames(moving_square_frames(8, 64, 128), image_size=112, teacher_image_size=56))
    tall = processor.encode(TURNS[:2], preprocess_frames(moving_square_frames(8, 128, 64), image_size=112, teacher_image_size=56))
    image = processor.encode([Turn("user", "<image>\nWhat?"), Turn("assistant", "a")],
                             preprocess_image(moving_square_frames(1, 60, 60)[0], image_size=112, teacher_image_size=56),
                             is_video=False)
    text = processor.encode([Turn("user", "Hi"), Turn("assistant", "Hello")], None)
    batch = VideoPandaCollator(smollm2_tokenizer.pad_token_id, with_teacher=True)([wide, image, text, tall])
    assert batch["pixel_values"].shape == (17, 4, 112, 112)
    assert batch["teacher_pixel_values"].shape == (17, 4, 56, 56)
    assert batch["chunk_lengths"].tolist() == [4, 4, 1, 4, 4]
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    assert int(batch["attention_mask"][2].sum()) == len(text.input_ids)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        load_annotations([bad])


def test_sampler_groups_modalities_and_is_deterministic():
    lengths = [5, -3, 7, -2, 9, 11, -4, 6, -8, 3, -2, -1]  # 6 visual, 6 text-only
    sampler = ModalityLengthGroupedSampler(lengths, batch_size=2, seed=3)
    order = list(sampler)
    assert sorted(order) == list(range(12)) and order == list(ModalityLengthGroupedSampler(lengths, 2, seed=3))
    for i in range(0, 12, 2):
        assert (lengths[order[i]] > 0) == (lengths[order[i + 1]] > 0)
    sampler.set_epoch(1)
    assert list(sampler) != order
