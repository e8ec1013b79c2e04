"""Processor (labels, placeholder expansion, max length, prompts) and collator."""

from __future__ import annotations

import pytest
import torch

from conftest import moving_square_frames, small_videopanda_config
from videopanda.data.collator import VideoPandaCollator
from videopanda.data.conversation import VICUNA_SYSTEM, ConversationError, Turn
from videopanda.data.processing_videopanda import SampleTooLongError, VideoPandaProcessor
from videopanda.data.transform import preprocess_frames
from videopanda.model.chunking import chunk_lengths

TWO_TURNS = [
    Turn("user", "What colour?"), Turn("assistant", "red"), Turn("user", "Shape?"), Turn("assistant", "square")
]
QA = [Turn("user", "<video>\nWhat colour?"), Turn("assistant", "red")]


def visuals(num_frames, height, width, seed=0):
    frames = moving_square_frames(num_frames, height, width, seed=seed)
    return preprocess_frames(frames, image_size=112, teacher_image_size=56, num_frames=None if num_frames == 1 else 8)


@pytest.fixture(scope="module")
def config(smollm2_tokenizer):
    return small_videopanda_config(smollm2_tokenizer)


def expected_ids_and_labels(tokenizer, pieces):
    """Hand-split text: (text, learned) pieces tokenised one by one (their boundaries never merge)."""
    ids = [tokenizer(text, add_special_tokens=False).input_ids for text, _ in pieces]
    labels = [piece if learned else [-100] * len(piece) for piece, (_, learned) in zip(ids, pieces, strict=True)]
    return torch.tensor(sum(ids, [])), torch.tensor(sum(labels, []))


@pytest.mark.parametrize("template, pieces", [
    ("vicuna_v1", [
        (f"{VICUNA_SYSTEM} USER: What colour? ASSISTANT:", False), (" red</s>", True),
        ("USER: Shape? ASSISTANT:", False), (" square</s>", True),
    ]),
    ("chat_template", [
        ("<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nWhat colour?<|im_end|>\n<|im_start|>assistant\n", False),
        ("red", True), ("<|im_end|>", True),
        ("\n<|im_start|>user\nShape?<|im_end|>\n<|im_start|>assistant\n", False),
        ("square", True), ("<|im_end|>", True), ("\n", False),
    ]),
])
def test_labels_exactly_on_replies_and_end_of_turn(smollm2_tokenizer, config, template, pieces):
    system = None if "vicuna" in template else "S"
    processor = VideoPandaProcessor.for_model(smollm2_tokenizer, config, template=template, system=system)
    sample = processor.encode_conversation(TWO_TURNS)
    input_ids, labels = expected_ids_and_labels(smollm2_tokenizer, pieces)
    assert sample.input_ids.tolist() == input_ids.tolist()
    assert sample.labels.tolist() == labels.tolist()
    assert sample.pixel_values_videos is None and sample.video_grid_thw is None


def test_video_placeholders_front_of_turn_and_never_learned(smollm2_tokenizer, config):
    processor = VideoPandaProcessor.for_model(smollm2_tokenizer, config)
    video = visuals(8, 64, 96)
    sample = processor.encode_conversation([Turn("user", "What colour? <video>"), Turn("assistant", "red")], video)
    placeholder = sample.input_ids == config.image_token_id
    first, last = placeholder.nonzero()[[0, -1], 0].tolist()
    assert placeholder[first : last + 1].all()  # one block
    assert smollm2_tokenizer.decode(sample.input_ids[:first]).endswith("USER: ")
    assert smollm2_tokenizer.decode(sample.input_ids[last + 1 :]) == "\nWhat colour? ASSISTANT: red</s>"
    assert (sample.labels[placeholder] == -100).all()
    assert smollm2_tokenizer.decode(sample.labels[sample.labels != -100]) == " red</s>"
    assert torch.equal(sample.pixel_values_videos, video.pixel_values) and sample.video_grid_thw.tolist() == [[8, 8, 8]]


# 112x112 student canvas: 8x8 patches, LSD grid up to 4x4; a frame is 1 + h*(w+1) tokens.
@pytest.mark.parametrize("height, width, grid", [(64, 128, (2, 4)), (128, 64, (4, 2)), (96, 96, (4, 4))])
def test_placeholder_expansion_per_aspect_ratio(smollm2_tokenizer, config, height, width, grid):
    processor = VideoPandaProcessor.for_model(smollm2_tokenizer, config)
    video = visuals(3, height, width)  # 3 real frames + 5 all-zero frames (top-left 8x8 patches: 4x4 LSD grid)
    sample = processor.encode_conversation(QA, video)
    h, w = grid
    counts = processor.video_processor.frame_token_counts(video.pixel_values)
    assert counts.tolist() == [1 + h * (w + 1)] * 3 + [1 + 4 * 5] * 5
    assert int((sample.input_ids == config.image_token_id).sum()) == int(counts.sum())


def test_image_is_one_placeholder_and_one_chunk(smollm2_tokenizer, config):
    processor = VideoPandaProcessor.for_model(smollm2_tokenizer, config)
    image = visuals(1, 64, 128)
    sample = processor.encode_conversation([Turn("user", "<image>\nWhat?"), Turn("assistant", "a")], image)
    assert sample.video_grid_thw.tolist() == [[1, 8, 8]] and sample.pixel_values_videos.shape == (1, 4, 112, 112)
    assert int((sample.input_ids == config.image_token_id).sum()) == 1 + 2 * 5  # 128x64 -> a 2x4 LSD grid


def test_marker_errors(smollm2_tokenizer, config):
    processor = VideoPandaProcessor.for_model(smollm2_tokenizer, config)
    with pytest.raises(ConversationError, match="no video or image"):
        processor.encode_conversation(QA)
    with pytest.raises(ConversationError, match="at most one visual marker"):
        processor.encode_conversation([Turn("user", "<video> and <video>"), Turn("assistant", "a")], visuals(8, 64, 64))
    with pytest.raises(ConversationError, match="at most one visual marker"):
        processor.encode_conversation([Turn("user", "Q"), Turn("assistant", "<image>")], visuals(1, 64, 64))


def test_max_length_rejects_visual_cut_and_truncates_text(smollm2_tokenizer, config):
    processor = VideoPandaProcessor.for_model(smollm2_tokenizer, config, max_length=100)
    with pytest.raises(SampleTooLongError, match="max_length=100"):
        processor.encode_conversation(QA, visuals(8, 64, 64))  # 8 frames of 21 tokens
    long_reply = [Turn("user", "Count."), Turn("assistant", " ".join(["one"] * 200))]
    sample = processor.encode_conversation(long_reply)
    assert len(sample.input_ids) == len(sample.labels) == 100 and (sample.labels[-10:] != -100).all()
    long_question = [Turn("user", " ".join(["why"] * 200)), Turn("assistant", "because")]
    with pytest.raises(SampleTooLongError, match="leaves no reply"):
        processor.encode_conversation(long_question)


def test_batch_prompts_are_left_padded_with_generation_prompt(smollm2_tokenizer, config):
    processor = VideoPandaProcessor.for_model(smollm2_tokenizer, config, template="vicuna_v1_eval")
    questions = ["<video>\nWhat happens in this long video clip?", "Hi"]
    batch = processor.batch_prompts(questions, [visuals(8, 64, 128), None])
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids.shape == mask.shape and ids.shape[0] == 2 and "labels" not in batch
    assert mask[:, -1].all() and not mask[1, 0]  # left padding: every prompt ends at the last column
    assert (ids[1][mask[1] == 0] == smollm2_tokenizer.pad_token_id).all()
    assert smollm2_tokenizer.decode(ids[1][mask[1] == 1]).endswith("human's questions. USER: Hi ASSISTANT:")
    assert batch["pixel_values_videos"].shape == (8, 4, 112, 112) and batch["video_grid_thw"].tolist() == [[8, 8, 8]]
    assert processor.decode(smollm2_tokenizer(" red square</s>USER: more").input_ids) == "red square"


def test_collator_mixed_batch(smollm2_tokenizer, config):
    processor = VideoPandaProcessor.for_model(smollm2_tokenizer, config)
    wide = processor.encode_conversation(QA, visuals(8, 64, 128))
    tall = processor.encode_conversation(QA, visuals(8, 128, 64, seed=1))
    image = processor.encode_conversation([Turn("user", "<image>\nWhat?"), Turn("assistant", "a")], visuals(1, 60, 60))
    text = processor.encode_conversation([Turn("user", "Hi"), Turn("assistant", "Hello")])
    samples = [wide, text, image, tall]
    batch = VideoPandaCollator(smollm2_tokenizer.pad_token_id, with_teacher=True)(samples)
    length = max(len(s.input_ids) for s in samples)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (4, length)
    assert batch["pixel_values_videos"].shape == (17, 4, 112, 112)
    assert batch["teacher_pixel_values_videos"].shape == (17, 4, 56, 56)
    assert batch["video_grid_thw"].tolist() == [[8, 8, 8], [1, 8, 8], [8, 8, 8]]  # wide, image, tall: in sample order
    assert chunk_lengths(batch["video_grid_thw"], config.chunk_length).tolist() == [4, 4, 1, 4, 4]
    assert torch.equal(batch["pixel_values_videos"][8:9], image.pixel_values_videos)
    for row, sample in enumerate(samples):  # right padding
        n = len(sample.input_ids)
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (length - n)
        assert torch.equal(batch["input_ids"][row, :n], sample.input_ids)
        assert (batch["labels"][row, n:] == -100).all()
    placeholders = int((batch["input_ids"] == config.image_token_id).sum())
    assert placeholders == int(processor.video_processor.frame_token_counts(batch["pixel_values_videos"]).sum())
    text_only = VideoPandaCollator(smollm2_tokenizer.pad_token_id)([text, text])
    assert set(text_only) == {"input_ids", "attention_mask", "labels"}


def test_markers_a_user_types_are_text_and_overlong_prompts_are_refused(smollm2_tokenizer, config):
    processor = VideoPandaProcessor.for_model(smollm2_tokenizer, config, template="vicuna_v1_eval")
    image_id = smollm2_tokenizer.convert_tokens_to_ids("<image>")
    video = visuals(8, 64, 64)
    plain = processor.batch_prompts(["What moves?"], [video])["input_ids"]
    for question in ("What does <image> show?", "<video> and <image>: what moves?", "<image><image>"):
        ids = processor.batch_prompts([question], [video])["input_ids"]  # before: a crash or a wrong placeholder
        assert (ids == image_id).sum() == (plain == image_id).sum()  # only the video's placeholders
        assert "< image>" in smollm2_tokenizer.decode(ids[0][ids[0] != image_id])  # the typed tag kept as text
    text_only = processor.batch_prompts(["Is <image> a tag?"], [None])["input_ids"]
    assert not (text_only == image_id).any()
    context = config.text_config.max_position_embeddings
    with pytest.raises(SampleTooLongError, match=f"context of {context} tokens"):
        processor.batch_prompts([" ".join(["why"] * context)], [video])
