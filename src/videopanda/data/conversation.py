"""Prompt templates as data: the release's Vicuna v1 and the LLM's own chat template.

A template renders a conversation into text segments, each flagged as learned
(an assistant reply and its end-of-turn marker) or not. The processor
tokenises the joined text once and labels a token learned when it overlaps a
learned segment, so labels are exact whatever the tokenizer merges.

Vicuna v1 text of the release (``sep=" "``, ``sep2="</s>"``)::

    {system} USER: {q1} ASSISTANT: {a1}</s>USER: {q2} ASSISTANT: {a2}</s>

with ``" {a}</s>"`` learned; a generation prompt ends with ``"ASSISTANT:"``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import Field, dataclass, replace
from typing import Any, ClassVar, Literal, Protocol

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
Role = Literal["user", "assistant"]
_ROLES: dict[str, Role] = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}


class ConversationError(ValueError):
    """A conversation that does not alternate user/assistant turns, or is otherwise malformed."""


@dataclass(frozen=True)
class Turn:
    role: Role
    text: str


@dataclass(frozen=True)
class Segment:
    text: str
    learned: bool


def turns_from_annotation(conversation: object) -> list[Turn]:
    """Video-LLaVA ``[{"from": "human"|"gpt", "value": str}]`` (or ``role``/``content``) -> messages."""
    if not isinstance(conversation, list) or not conversation:
        raise ConversationError(f"'conversations' must be a non-empty list, got {str(conversation)[:80]!r}")
    messages = []
    for i, turn in enumerate(conversation):
        if not isinstance(turn, dict):
            raise ConversationError(f"conversation turn {i} is not an object: {str(turn)[:80]!r}")
        speaker = turn.get("from", turn.get("role"))
        role = _ROLES.get(speaker) if isinstance(speaker, str) else None
        content = turn.get("value", turn.get("content"))
        if role is None or not isinstance(content, str):
            raise ConversationError(f"conversation turn {i} is malformed: {str(turn)[:80]!r}")
        messages.append(Turn(role, content))
    check_turns(messages, add_generation_prompt=False)
    return messages


def chat_role(name: str) -> Role:
    """A chat message's role as a turn's: "user" or "assistant" (anything else is a ConversationError)."""
    if name == "user":
        return "user"
    if name == "assistant":
        return "assistant"
    raise ConversationError(f"a turn's role must be user or assistant, got {name!r}")


def check_turns(messages: Sequence[Turn], add_generation_prompt: bool) -> None:
    """User and assistant alternate from a user turn; the last is the assistant's (a user's for a prompt)."""
    expected = ["user", "assistant"] * (len(messages) // 2 + 1)
    roles = [m.role for m in messages]
    last = "user" if add_generation_prompt else "assistant"
    if not roles or roles != expected[: len(roles)] or roles[-1] != last:
        raise ConversationError(f"turns must alternate user/assistant from a user turn and end with {last}: {roles}")


class Template(Protocol):
    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]  # templates are dataclasses: ``replace`` makes variants

    @property
    def system(self) -> str | None: ...

    @property
    def add_special_tokens(self) -> bool: ...  # let the tokenizer add its BOS etc. when tokenising the rendered text

    def segments(
        self, messages: Sequence[Turn], tokenizer: PreTrainedTokenizerBase, add_generation_prompt: bool = False
    ) -> list[Segment]: ...

    def end_of_turn(self, tokenizer: PreTrainedTokenizerBase) -> str: ...

    def jinja(self, tokenizer: PreTrainedTokenizerBase) -> str: ...  # the same text as a Jinja chat template


# Jinja shared by the generated chat templates: a message's content (a string, or a list of
# {"type": "video" | "image" | "text"} parts) as its text, each visual part as its marker in front of the
# (then trimmed) text, as the processor places visuals.
_JINJA_TEXT_OF = (
    "{%- macro text_of(message) -%}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- set ns = namespace(visual='', text='') -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'video' -%}{%- set ns.visual = ns.visual + '<video>\\n' -%}"
    "{%- elif part['type'] == 'image' -%}{%- set ns.visual = ns.visual + '<image>\\n' -%}"
    "{%- elif part['type'] == 'text' -%}{%- set ns.text = ns.text + part['text'] -%}{%- endif -%}"
    "{%- endfor -%}{{ ns.visual }}{{ (ns.text | trim) if ns.visual else ns.text }}"
    "{%- endif -%}{%- endmacro -%}"
)


_OWN_TEMPLATE_FOLLOWS = "{#- videopanda: the LLM's own chat template follows -#}"


def _literal(text: str) -> str:
    """A Python string as a Jinja string literal (JSON's escapes are Jinja's)."""
    return json.dumps(text)


@dataclass(frozen=True)
class SeparatorTemplate:
    """Role-prefixed turns joined by separators (LLaVA's ``SeparatorStyle.TWO``)."""

    system: str
    roles: tuple[str, str] = ("USER", "ASSISTANT")
    separator: str = " "  # after the system line and after each user turn
    eos: str = "</s>"  # after each assistant reply; learned with it
    add_special_tokens: bool = True

    def segments(
        self, messages: Sequence[Turn], tokenizer: PreTrainedTokenizerBase, add_generation_prompt: bool = False
    ) -> list[Segment]:
        check_turns(messages, add_generation_prompt)
        user, assistant = self.roles
        segments = []
        prompt = self.system + self.separator
        for message in messages:
            if message.role == "user":
                prompt += f"{user}: {message.text}{self.separator}{assistant}:"
            else:
                segments += [Segment(prompt, False), Segment(f" {message.text}{self.eos}", True)]
                prompt = ""
        return segments + ([Segment(prompt, False)] if prompt else [])

    def end_of_turn(self, tokenizer: PreTrainedTokenizerBase) -> str:
        return self.eos

    def jinja(self, tokenizer: PreTrainedTokenizerBase) -> str:
        """``segments``' text as a Jinja chat template (a leading system message replaces ``system``)."""
        user, assistant = _literal(self.roles[0] + ": "), _literal(self.roles[1] + ":")
        separator, eos = _literal(self.separator), _literal(self.eos)
        return (
            _JINJA_TEXT_OF
            + f"{{%- set system = {_literal(self.system)} -%}}"
            "{%- if messages and messages[0]['role'] == 'system' -%}{%- set system = text_of(messages[0]) -%}"
            "{%- endif -%}"
            f"{{{{ system }}}}{{{{ {separator} }}}}"
            "{%- for message in messages if message['role'] != 'system' -%}"
            f"{{%- if message['role'] == 'user' -%}}{{{{ {user} }}}}{{{{ text_of(message) }}}}"
            f"{{{{ {separator} }}}}{{{{ {assistant} }}}}"
            f"{{%- else -%}}{{{{ ' ' }}}}{{{{ text_of(message) }}}}{{{{ {eos} }}}}{{%- endif -%}}"
            "{%- endfor -%}"
        )


@dataclass(frozen=True)
class ChatTemplate:
    """The tokenizer's own ``chat_template`` (e.g. SmolLM2's ChatML).

    Each reply's learned text is what the template adds after the generation
    prompt, up to and including its end-of-turn marker (trailing whitespace
    such as ChatML's newline after ``<|im_end|>`` stays unlearned).
    """

    system: str | None = None  # None: the template's own default system line, if any
    add_special_tokens: bool = False  # chat templates write their own BOS

    def segments(
        self, messages: Sequence[Turn], tokenizer: PreTrainedTokenizerBase, add_generation_prompt: bool = False
    ) -> list[Segment]:
        check_turns(messages, add_generation_prompt)
        chat = [] if self.system is None else [{"role": "system", "content": self.system}]
        segments: list[Segment] = []
        done = ""
        for message in messages:
            if message.role == "assistant":
                prompt = self._render(tokenizer, chat, add_generation_prompt=True)
                full = self._render(tokenizer, [*chat, {"role": "assistant", "content": message.text}])
                learned = _after(full, prompt, tokenizer).rstrip()
                segments += [Segment(_after(prompt, done, tokenizer), False), Segment(learned, True)]
                done = prompt + learned
            chat.append({"role": message.role, "content": message.text})
        rest = _after(self._render(tokenizer, chat, add_generation_prompt), done, tokenizer)
        return segments + ([Segment(rest, False)] if rest else [])

    def end_of_turn(self, tokenizer: PreTrainedTokenizerBase) -> str:
        """The marker the template writes after a reply (``<|im_end|>`` for ChatML)."""
        reply = "x"
        chat = [{"role": "user", "content": "q"}]
        prompt = self._render(tokenizer, chat, add_generation_prompt=True)
        full = self._render(tokenizer, [*chat, {"role": "assistant", "content": reply}])
        marker = _after(full, prompt + reply, tokenizer).strip()
        return marker or str(tokenizer.eos_token)

    def jinja(self, tokenizer: PreTrainedTokenizerBase) -> str:
        """The tokenizer's chat template, after a prelude that flattens content parts to text (and adds
        ``system`` when set and the messages have none).

        A model directory holds one ``chat_template.jinja`` for its tokenizer and its processor, so a tokenizer
        loaded from one already has this template: its own is what follows the prelude (never wrapped twice).
        """
        if not tokenizer.chat_template:
            raise ValueError(f"tokenizer {tokenizer.name_or_path!r} has no chat_template: use template 'vicuna_v1'")
        own = str(tokenizer.chat_template).split(_OWN_TEMPLATE_FOLLOWS, 1)[-1]
        system = "" if self.system is None else (
            "{%- if not messages or messages[0]['role'] != 'system' -%}"
            f"{{%- set ns_flat.messages = [{{'role': 'system', 'content': {_literal(self.system)}}}] -%}}"
            "{%- endif -%}"
        )
        return (
            _JINJA_TEXT_OF + "{%- set ns_flat = namespace(messages=[]) -%}" + system
            + "{%- for message in messages -%}"
            "{%- set ns_flat.messages = ns_flat.messages + [{'role': message['role'], 'content': text_of(message)}] -%}"
            "{%- endfor -%}{%- set messages = ns_flat.messages -%}" + _OWN_TEMPLATE_FOLLOWS + own
        )

    @staticmethod
    def _render(tokenizer: PreTrainedTokenizerBase, chat: list[dict], add_generation_prompt: bool = False) -> str:
        if not tokenizer.chat_template:
            raise ValueError(f"tokenizer {tokenizer.name_or_path!r} has no chat_template: use template 'vicuna_v1'")
        text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=add_generation_prompt)
        if not isinstance(text, str):
            raise TypeError(f"apply_chat_template(tokenize=False) of {tokenizer.name_or_path!r} returned {type(text)}")
        return text


def _after(text: str, prefix: str, tokenizer: PreTrainedTokenizerBase) -> str:
    """``text`` without ``prefix``; a template that rewrites earlier turns cannot be segmented."""
    if not text.startswith(prefix):
        raise ValueError(
            f"the chat template of {tokenizer.name_or_path!r} does not render conversations incrementally "
            "(a prefix changed when a turn was added): use template 'vicuna_v1'"
        )
    return text[len(prefix) :]


TEMPLATES: dict[str, Template] = {
    "vicuna_v1": SeparatorTemplate(VICUNA_SYSTEM),
    "vicuna_v1_eval": SeparatorTemplate(VICUNA_EVAL_SYSTEM),
    "chat_template": ChatTemplate(),
}


def get_template(name: str, system: str | None = None) -> Template:
    """A registered template by name, optionally with another system line."""
    if name not in TEMPLATES:
        raise ValueError(f"unknown conversation template {name!r} (known: {', '.join(TEMPLATES)})")
    template = TEMPLATES[name]
    return template if system is None else replace(template, system=system)


# A model trained with the release's template is prompted with its evaluation form (the release's eval scripts).
_INFERENCE_FORM = {"vicuna_v1": "vicuna_v1_eval"}
RELEASE_INFERENCE_TEMPLATE = "vicuna_v1_eval"


def inference_template(training_template: str) -> str:
    """The template to prompt a model with, given the one it was trained with."""
    get_template(training_template)  # unknown names fail here, with the known ones listed
    return _INFERENCE_FORM.get(training_template, training_template)
