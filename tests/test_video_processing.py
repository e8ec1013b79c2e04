"""VideoPandaVideoProcessor (one canvas rule for training and inference) and VideoPandaProcessor as a
transformers processor (``__call__``, ``apply_chat_template``, saved files, ``AutoProcessor``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import AutoProcessor

from conftest import moving_square_frames, small_videopanda_config
from videopanda.data.conversation import Turn
from videopanda.data.dataset import VideoLLaVADataset, load_annotations
from videopanda.data.decode import read_video_frames
from videopanda.data.processing_videopanda import VideoPandaProcessor, save_model_processor
from videopanda.data.transform import preprocess_frames
from videopanda.data.video_processing_videopanda import VideoPandaVideoProcessor
from videopanda.inference import GenerationConfig, VideoPandaPredictor
from videopanda.model.modeling_videopanda import VideoPandaForCausalLM
from videopanda.runtime import resolve_precision


@pytest.mark.parametrize("patch_size", [14, 7])
def test_training_and_inference_build_identical_inputs(tmp_path, make_video, smollm2_tokenizer, patch_size):
    """Whatever the student's patch size, the dataset (training), the predictor (ask/serve/lmms) and the
    processor's ``__call__`` put the same video on the same canvas, with the same tokens."""
    config = small_videopanda_config(smollm2_tokenizer, patch_size=patch_size)
    path = make_video("a.mp4", num_frames=8, height=30, width=96, fps=4)
    items = [{"id": "v", "video": "a.mp4", "conversations": [{"from": "human", "value": "<video>\nQ"},
                                                             {"from": "gpt", "value": "A"}]}]
    (tmp_path / "a.json").write_text(json.dumps(items))
    processor = VideoPandaProcessor.for_model(smollm2_tokenizer, config, template="vicuna_v1_eval")
    dataset = VideoLLaVADataset(load_annotations([tmp_path / "a.json"]), tmp_path, processor, train=False,
                                with_teacher=True)
    trained = dataset[0]
    predictor = VideoPandaPredictor.for_model(VideoPandaForCausalLM(config), smollm2_tokenizer, GenerationConfig(),
                                              resolve_precision("float32"))
    inferred = predictor.load_video(path)
    assert torch.equal(trained.pixel_values_videos, inferred.pixel_values)
    frames = read_video_frames(path, config.num_frames)
    called = processor(text=processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Q"}]}]), videos=[frames])
    assert torch.equal(called["pixel_values_videos"], trained.pixel_values_videos)
    assert called["input_ids"][0].tolist() == predictor.processor.build_prompt("Q", inferred)["input_ids"][0].tolist()
    assert called["video_grid_thw"].tolist() == [[8, 112 // patch_size, 112 // patch_size]]
    # the padding sits on whole teacher patches (14 px at 56) and whole student LSD windows
    mask, teacher_mask = trained.pixel_values_videos[0, 3], trained.teacher_pixel_values_videos[0, 3]
    lsd = patch_size * config.lsd_stride
    rows = mask.sum(1).nonzero().flatten()
    assert int(rows[0]) % lsd == 0 and (int(rows[-1]) + 1) % lsd == 0
    teacher_rows = teacher_mask.sum(1).nonzero().flatten()
    assert int(teacher_rows[0]) % 14 == 0 and (int(teacher_rows[-1]) + 1) % 14 == 0
    if patch_size == 7:  # the old inference rule (rounding to student patches) put the frame elsewhere
        old = preprocess_frames(frames, image_size=112, teacher_image_size=56, patch_size=7, with_teacher=False)
        assert not torch.equal(old.pixel_values, trained.pixel_values_videos)


def test_canvas_unit_keeps_teacher_patches_and_student_windows_whole():
    assert VideoPandaVideoProcessor().canvas_unit == 14  # the release
    assert VideoPandaVideoProcessor(patch_size=7).canvas_unit == 14  # 7-px students: the teacher's 14 rules
    assert VideoPandaVideoProcessor(patch_size=28, lsd_stride=2).canvas_unit == 28  # 56-px windows at 448 = 28 at 224
    with pytest.raises(ValueError, match="whole number"):
        VideoPandaVideoProcessor(teacher_image_size=224, patch_size=10)


def test_videos_and_images_in_one_call():
    processor = VideoPandaVideoProcessor(image_size=112, teacher_image_size=56, num_frames=8, chunk_length=4)
    video, image = moving_square_frames(5, 40, 60), moving_square_frames(1, 60, 40)
    out = processor([video, image], return_tensors="pt", return_teacher=True)
    assert out["video_grid_thw"].tolist() == [[8, 8, 8], [1, 8, 8]]  # 5 frames padded to 8 (two chunks of 4)
    assert out["pixel_values_videos"].shape == (9, 4, 112, 112)
    assert out["teacher_pixel_values_videos"].shape == (9, 4, 56, 56)
    assert out["pixel_values_videos"][5:8].abs().sum() == 0  # the padding frames are empty, mask 0
    alone = processor.preprocess_video(video)
    assert torch.equal(out["pixel_values_videos"][:8], alone.pixel_values)


def test_processor_files_load_with_auto_processor(tmp_path, smollm2_tokenizer):
    config = small_videopanda_config(smollm2_tokenizer, patch_size=7, num_frames=4)
    saved = save_model_processor(tmp_path, smollm2_tokenizer, config, "vicuna_v1_eval")
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded) is VideoPandaProcessor and loaded.template == "vicuna_v1_eval"
    assert loaded.video_processor.to_dict() == saved.video_processor.to_dict()
    assert loaded.video_processor.patch_size == 7 and loaded.num_frames == 4
    assert loaded.context_length == config.text_config.max_position_embeddings
    frames = moving_square_frames(4, 40, 60)
    visuals = saved.video_processor.preprocess_video(frames)
    assert torch.equal(loaded.build_prompt("Q?", visuals)["input_ids"], saved.build_prompt("Q?", visuals)["input_ids"])


def test_a_reloaded_chat_template_is_not_wrapped_again(tmp_path, smollm2_tokenizer):
    """The tokenizer and the processor share a directory's chat_template.jinja: reloading and saving again
    keeps one template that renders as the LLM's own."""
    config = small_videopanda_config(smollm2_tokenizer)
    first = save_model_processor(tmp_path / "a", smollm2_tokenizer, config, "chat_template")
    again = save_model_processor(tmp_path / "b", AutoProcessor.from_pretrained(tmp_path / "a").tokenizer, config,
                                 "chat_template")
    assert again.chat_template == first.chat_template
    chat = [{"role": "user", "content": "Hi"}]
    assert again.tokenizer.apply_chat_template(chat, tokenize=False) == smollm2_tokenizer.apply_chat_template(
        chat, tokenize=False)


@pytest.mark.parametrize("template", ["vicuna_v1", "vicuna_v1_eval", "chat_template"])
def test_chat_template_renders_the_prompt_builders_text(smollm2_tokenizer, template):
    """apply_chat_template (Jinja generated from conversation.py) == the prompt builder, history and video."""
    config = small_videopanda_config(smollm2_tokenizer)
    processor = VideoPandaProcessor.for_model(smollm2_tokenizer, config, template=template)
    frames = moving_square_frames(8, 40, 60)
    visuals = processor.video_processor.preprocess_video(frames)
    history = [Turn("user", "What colour?"), Turn("assistant", "red")]
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What colour?"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "red"}]},
                {"role": "user", "content": "Shape?"}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    built = processor.batch_prompts(["Shape?"], [visuals], [history], visual_turns=[0])
    called = processor(text=text, videos=[frames])
    assert called["input_ids"].tolist() == built["input_ids"].tolist()
    assert torch.equal(called["pixel_values_videos"], built["pixel_values_videos"])
    segments = processor.conversation_template.segments(
        [Turn("user", "<image>" * 8 + "\nWhat colour?"), Turn("assistant", "red"), Turn("user", "Shape?")],
        smollm2_tokenizer, add_generation_prompt=True)
    assert text.replace("<video>", "<image>" * 8) == "".join(s.text for s in segments)
    training = processor.apply_chat_template(messages[:2])
    assert training.replace("<video>", "<image>" * 8) == "".join(
        s.text for s in processor.conversation_template.segments(segments_turns(), smollm2_tokenizer))


def segments_turns() -> list[Turn]:
    return [Turn("user", "<image>" * 8 + "\nWhat colour?"), Turn("assistant", "red")]


def test_marker_count_must_match_the_videos(smollm2_tokenizer):
    processor = VideoPandaProcessor.for_model(smollm2_tokenizer, small_videopanda_config(smollm2_tokenizer))
    with pytest.raises(ValueError, match="1 <video>/<image> markers for 2 videos"):
        processor(text="<video>\nQ", videos=[np.zeros((8, 32, 32, 3), np.uint8)] * 2)
