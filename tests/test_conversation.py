"""Conversation templates: segments and learned flags written out by hand."""

from __future__ import annotations

import pytest

from videopanda.data.conversation import (
    VICUNA_EVAL_SYSTEM,
    VICUNA_SYSTEM,
    ConversationError,
    Segment,
    Turn,
    get_template,
    turns_from_annotation,
)

TWO_TURNS = [
    Turn("user", "What colour?"), Turn("assistant", "red"), Turn("user", "Shape?"), Turn("assistant", "square")
]


def test_vicuna_two_turns_by_hand(smollm2_tokenizer):
    segments = get_template("vicuna_v1").segments(TWO_TURNS, smollm2_tokenizer)
    assert segments == [
        Segment(f"{VICUNA_SYSTEM} USER: What colour? ASSISTANT:", False),
        Segment(" red</s>", True),
        Segment("USER: Shape? ASSISTANT:", False),
        Segment(" square</s>", True),
    ]
    assert VICUNA_SYSTEM == (
        "A chat between a curious user and an artificial intelligence assistant. "
        "The assistant gives helpful, detailed, and polite answers to the user's questions."
    )


def test_vicuna_eval_prompt_uses_human_and_ends_at_assistant(smollm2_tokenizer):
    template = get_template("vicuna_v1_eval")
    segments = template.segments([Turn("user", "Why?")], smollm2_tokenizer, add_generation_prompt=True)
    assert "".join(s.text for s in segments) == (
        "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
        "detailed, and polite answers to the human's questions. USER: Why? ASSISTANT:"
    )
    assert not any(s.learned for s in segments)
    assert template.system == VICUNA_EVAL_SYSTEM and template.end_of_turn(smollm2_tokenizer) == "</s>"


def test_system_line_is_a_field(smollm2_tokenizer):
    segments = get_template("vicuna_v1", system="Be brief.").segments(TWO_TURNS[:2], smollm2_tokenizer)
    assert segments[0].text == "Be brief. USER: What colour? ASSISTANT:"


def test_chat_template_two_turns_by_hand(smollm2_tokenizer):
    template = get_template("chat_template", system="S")
    segments = template.segments(TWO_TURNS, smollm2_tokenizer)
    assert segments == [
        Segment(
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nWhat colour?<|im_end|>\n<|im_start|>assistant\n", False
        ),
        Segment("red<|im_end|>", True),
        Segment("\n<|im_start|>user\nShape?<|im_end|>\n<|im_start|>assistant\n", False),
        Segment("square<|im_end|>", True),
        Segment("\n", False),
    ]
    assert template.end_of_turn(smollm2_tokenizer) == "<|im_end|>"


def test_chat_template_generation_prompt_keeps_default_system(smollm2_tokenizer):
    segments = get_template("chat_template").segments([Turn("user", "Hi")], smollm2_tokenizer, True)
    text = "".join(s.text for s in segments)
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert text.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


def test_annotation_roles_and_errors():
    turns = turns_from_annotation([{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}])
    assert turns == [Turn("user", "Q"), Turn("assistant", "A")]
    for bad in (
        [],
        [{"from": "gpt", "value": "A"}],  # starts with the assistant
        [{"from": "human", "value": "Q"}, {"from": "human", "value": "Q2"}, {"from": "gpt", "value": "A"}],
        [{"from": "human", "value": "Q"}],  # nothing to learn
        [{"from": "robot", "value": "Q"}, {"from": "gpt", "value": "A"}],
        [{"from": "human", "value": 3}, {"from": "gpt", "value": "A"}],
        "not a list",
    ):
        with pytest.raises(ConversationError):
            turns_from_annotation(bad)


def test_unknown_template_names_the_known_ones():
    with pytest.raises(ValueError, match="vicuna_v1, vicuna_v1_eval, chat_template"):
        get_template("llama_2")
