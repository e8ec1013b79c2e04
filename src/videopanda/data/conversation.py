"""Prompt templates as data: the release's Vicuna v1 and the LLM's own chat template.

A template renders a conversation into text segments, each flagged as learned
(an assistant reply and its end-of-turn marker) or not, so labels are exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from transformers import PreTrainedTokenizerBase

VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
# The release's evaluation prompt says "human" where training says "user".
VICUNA_EVAL_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
TemplateName = Literal["vicuna_v1", "chat_template"]
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


@dataclass(frozen=True)
class Segment:
    text: str
    learned: bool


@dataclass(frozen=True)
class Turn:
    role: Literal["user", "assistant"]
    text: str


def turns_from_annotation(conversation: list[dict]) -> list[Turn]:
    """Video-LLaVA ``[{"from": "human"|"gpt", "value": ...}]`` (or role/content) -> turns."""
    turns = []
    for i, message in enumerate(conversation):
        role = ROLES.get(message.get("from", message.get("role")))
        text = message.get("value", message.get("content"))
        if role not in ("user", "assistant") or not isinstance(text, str):
            raise ValueError(f"conversation message {i} is malformed: {message!r}")
        turns.append(Turn(role, text))
    if not turns or turns[0].role != "user":
        raise ValueError("a conversation must start with a user turn")
    return turns


def render(
    template: TemplateName,
    turns: list[Turn],
    tokenizer: PreTrainedTokenizerBase,
    system: str | None = None,
    add_generation_prompt: bool = False,
) -> list[Segment]:
    """Segments of the prompt; with ``add_generation_prompt`` it ends where the reply begins."""
    if template == "vicuna_v1":
        return _render_vicuna(turns, VICUNA_SYSTEM if system is None else system, add_generation_prompt)
    if template == "chat_template":
        return _render_chat_template(turns, tokenizer, system, add_generation_prompt)
    raise ValueError(f"unknown conversation template {template!r} (known: vicuna_v1, chat_template)")


def _render_vicuna(turns: list[Turn], system: str, add_generation_prompt: bool) -> list[Segment]:
    # LLaVA v1 separators: " " after a user message, "</s>" after an assistant reply.
    segments = [Segment(system + " ", False)]
    for turn in turns:
        if turn.role == "user":
            segments.append(Segment(f"USER: {turn.text} ASSISTANT:", False))
        else:
            segments.append(Segment(f" {turn.text}</s>", True))
    if not add_generation_prompt and turns[-1].role == "user":
        segments[-1] = Segment(segments[-1].text[: -len(" ASSISTANT:")], False)
    return segments


def _render_chat_template(
    turns: list[Turn], tokenizer: PreTrainedTokenizerBase, system: str | None, add_generation_prompt: bool
) -> list[Segment]:
    messages = [] if system is None else [{"role": "system", "content": system}]
    segments: list[Segment] = []
    rendered = ""
    for i, turn in enumerate(turns):
        messages.append({"role": turn.role, "content": turn.text})
        if turn.role == "assistant":
            # Everything up to the reply is prompt; the reply and its end-of-turn marker are learned.
            prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
            full = tokenizer.apply_chat_template(messages, tokenize=False)
            segments.append(Segment(prompt[len(rendered) :], False))
            segments.append(Segment(full[len(prompt) :], True))
            rendered = full
    final = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    if final[len(rendered) :]:
        segments.append(Segment(final[len(rendered) :], False))
    return segments
