"""VideoPandaProcessor: conversation text + preprocessed frames -> model inputs.

A visual marker (``<video>`` or ``<image>``) in a user turn becomes one
``<image>`` placeholder per frame, moved to the front of that turn
(``"<image>"*8 + "\\n" + text`` for a video, ``"<image>\\n" + text`` for an
image; a marker-less sample with visuals gets them in its first user turn).
The text is tokenised once; then each placeholder token is repeated to its
frame's exact token count ``1 + h*(w+1)`` (the STAB's own crop rule via
``frame_grid_hw``), so lengths are known before truncation and batching.

Shapes: ``L`` tokens, ``F`` frames (8 per video, 1 per image), ``C`` chunks.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from videopanda.data.collator import IGNORE_INDEX, VideoPandaCollator
from videopanda.data.conversation import ConversationError, Segment, Turn, get_template
from videopanda.data.transform import VisualInputs
from videopanda.limits import check_text_chars, longest_token_chars, max_text_chars
from videopanda.model.chunking import chunk_lengths, video_grid_row
from videopanda.model.configuration_videopanda import IMAGE_TOKEN, VideoPandaConfig, image_token_id
from videopanda.model.stab import frame_grid_hw, tokens_per_frame

VIDEO_MARKER = "<video>"
_MARKER = re.compile(f"{re.escape(VIDEO_MARKER)}|{re.escape(IMAGE_TOKEN)}")


class SampleTooLongError(ValueError):
    """A sample whose visual tokens would be cut by ``max_length`` (skipped, never truncated)."""


def as_plain_text(text: str) -> str:
    """User-typed ``<video>``/``<image>`` as text ("< image>"): only the processor places placeholders."""
    return _MARKER.sub(lambda marker: "< " + marker.group(0)[1:], text)


@dataclass
class EncodedSample:
    """One sample's model inputs, before batching (``VideoPandaCollator``)."""

    input_ids: Tensor  # (L,) long, placeholders expanded
    labels: Tensor | None  # (L,) long, -100 off the learned text; None for generation prompts
    pixel_values_videos: Tensor | None = None  # (F, 4, S, S); None for text-only
    video_grid_thw: Tensor | None = None  # (1, 3) long: (F, S // patch_size, S // patch_size)
    teacher_pixel_values_videos: Tensor | None = None  # (F, 4, St, St)
    sample_key: str | None = None  # the media (and clip) this sample shows: the teacher cache's key


def decode_text(tokenizer: PreTrainedTokenizerBase, token_ids: Tensor | list[int], skip_special_tokens: bool) -> str:
    """One sequence of token ids -> its text (``tokenizer.decode`` of a batch would give a list)."""
    text = tokenizer.decode(token_ids, skip_special_tokens=skip_special_tokens)
    if not isinstance(text, str):
        raise ValueError("decode takes one sequence of token ids, not a batch")
    return text


class VideoPandaProcessor:
    """Turns conversations (training) and questions (inference) plus visuals into model inputs.

    ``template``: a name from ``conversation.TEMPLATES`` (``vicuna_v1``, the
    release; ``vicuna_v1_eval``, its evaluation system line; ``chat_template``,
    the tokenizer's own). ``max_length``: samples longer than this are cut at
    the end if only text is lost; a cut through visual tokens raises
    ``SampleTooLongError`` (None: no limit).
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        config: VideoPandaConfig,
        template: str = "vicuna_v1",
        system: str | None = None,
        max_length: int | None = None,
    ) -> None:
        if not tokenizer.is_fast:
            raise ValueError(f"tokenizer {tokenizer.name_or_path!r} must be a fast tokenizer (offsets label the text)")
        self.tokenizer = tokenizer
        self.config = config
        self.template = get_template(template, system)
        self.template_name = template
        self.max_length = max_length
        self.image_token_id = image_token_id(tokenizer)
        if config.image_token_id is not None and config.image_token_id != self.image_token_id:
            raise ValueError(
                f"tokenizer's {IMAGE_TOKEN} id {self.image_token_id} differs from config.image_token_id "
                f"{config.image_token_id}"
            )

    @cached_property
    def max_text_chars(self) -> int:
        """The most characters of user text a prompt may hold (``limits.max_text_chars`` of the LLM's context)."""
        context = getattr(self.config.text_config, "max_position_embeddings", None)
        return max_text_chars(context, longest_token_chars(self.tokenizer))

    @property
    def stop_string(self) -> str:
        """The end-of-turn text that ends a generated reply (``</s>``, ``<|im_end|>``)."""
        return self.template.end_of_turn(self.tokenizer)

    def encode_conversation(self, conversation: Sequence[Turn], visuals: VisualInputs | None = None) -> EncodedSample:
        """A training sample; labels are learned only on assistant replies and their end-of-turn marker."""
        turns = self._place_placeholders(conversation, visuals)
        input_ids, labels = self._tokenize(self.template.segments(turns, self.tokenizer))
        sample = self._with_visuals(input_ids, labels, visuals)
        if sample.labels is None:  # _with_visuals keeps the labels it is given
            raise RuntimeError("encoding a conversation lost its labels")
        sample.input_ids, sample.labels = self._fit_length(sample.input_ids, sample.labels)
        return sample

    encode = encode_conversation  # the short name used across the code base

    def encode_prompt(self, turns: Sequence[Turn], visuals: VisualInputs | None = None) -> EncodedSample:
        """A generation prompt (never truncated; ``labels`` None) ending where the assistant's reply begins.

        ``turns`` ends with the user's question; earlier turns are the chat history. A text too long to
        fit the context is refused before it is tokenised (``limits.check_text_chars``).
        """
        check_text_chars((turn.text for turn in turns), self.max_text_chars)
        turns = self._place_placeholders(turns, visuals)
        segments = self.template.segments(turns, self.tokenizer, add_generation_prompt=True)
        input_ids, _ = self._tokenize(segments)
        sample = self._with_visuals(input_ids, None, visuals)
        if self.max_length is not None and len(sample.input_ids) > self.max_length:
            raise SampleTooLongError(f"prompt of {len(sample.input_ids)} tokens exceeds max_length={self.max_length}")
        context = getattr(self.config.text_config, "max_position_embeddings", None)
        if context is not None and len(sample.input_ids) >= context:
            raise SampleTooLongError(f"prompt of {len(sample.input_ids)} tokens (video included) does not fit the "
                                     f"LLM's context of {context} tokens: shorten the question or the chat history")
        return sample

    def build_prompt(
        self, question: str, visuals: VisualInputs | None = None, history: Sequence[Turn] = ()
    ) -> dict[str, Tensor]:
        """A batch of one prompt for ``model.generate``: ``input_ids (1, L)``, ``attention_mask``, frames."""
        return self.batch_prompts([question], [visuals], [history])

    def batch_prompts(
        self,
        questions: Sequence[str],
        visuals: Sequence[VisualInputs | None],
        histories: Sequence[Sequence[Turn]] | None = None,
        visual_turns: Sequence[int | None] | None = None,
    ) -> dict[str, Tensor]:
        """Prompts LEFT-padded for batched generation: ``input_ids (B, L)``, ``attention_mask (B, L)``,
        and ``pixel_values_videos (F, 4, S, S)``, ``video_grid_thw (V, 3)`` when any prompt has visuals.

        Questions and earlier user turns are a user's text: a ``<video>``/``<image>`` typed there is text
        (``as_plain_text``). Each prompt's visuals go to the front of its turn ``visual_turns[i]`` (an index
        into history + question; None: the first user turn).
        """
        if len(questions) != len(visuals):
            raise ValueError(f"{len(questions)} questions but {len(visuals)} visuals")
        histories = histories or [()] * len(questions)
        visual_turns = visual_turns or [None] * len(questions)
        samples = [
            self.encode_prompt(_with_marker(_user_text([*h, Turn("user", q)]), turn), v)
            for q, v, h, turn in zip(questions, visuals, histories, visual_turns, strict=True)
        ]
        batch = VideoPandaCollator(self.tokenizer.pad_token_id, padding_side="left")(samples)
        return {key: value for key, value in batch.items() if isinstance(value, Tensor)}  # prompts carry no keys

    def decode(self, token_ids: Tensor | list[int]) -> str:
        """Generated ids -> the reply text, cut at the end-of-turn marker."""
        text = decode_text(self.tokenizer, token_ids, skip_special_tokens=False)
        text = text.split(self.stop_string)[0]
        for special in self.tokenizer.all_special_tokens:
            text = text.replace(special, "")
        return text.strip()

    def frame_token_counts(self, pixel_values: Tensor) -> Tensor:
        """pixel_values (F, 4, S, S) -> (F,) visual tokens per frame, by the STAB's own crop rule."""
        patch_mask = F.avg_pool2d(pixel_values[:, 3:4].float(), self.config.patch_size)[:, 0]  # (F, Hp, Wp)
        return tokens_per_frame(frame_grid_hw(patch_mask, self.config.lsd_stride, self.config.max_crop_patches))

    def video_grid_thw(self, pixel_values_videos: Tensor) -> Tensor:
        """One video's frames (F, 4, S, S) -> its row (1, 3) of ``video_grid_thw``; frames that do not split
        into the model's chunks are a ValueError."""
        grid = video_grid_row(pixel_values_videos.shape[0], pixel_values_videos.shape[-1], self.config.patch_size)
        chunk_lengths(grid, self.config.chunk_length)  # the model's chunking rule refuses the frame count now
        return grid

    def _place_placeholders(self, turns: Sequence[Turn], visuals: VisualInputs | None) -> list[Turn]:
        """Replace the visual marker by one placeholder per frame at the front of its (user) turn."""
        counts = [len(_MARKER.findall(t.text)) for t in turns]
        if sum(counts) > 1 or any(c and t.role != "user" for c, t in zip(counts, turns, strict=True)):
            raise ConversationError(f"expected at most one visual marker, in a user turn; got {counts} per turn")
        if visuals is None:
            if sum(counts):
                raise ConversationError("the conversation has a visual marker but the sample has no video or image")
            return list(turns)
        if not turns:
            raise ConversationError("empty conversation")
        position = counts.index(1) if sum(counts) else 0  # no marker: the first (user) turn
        text = IMAGE_TOKEN * visuals.pixel_values.shape[0] + "\n" + _MARKER.sub("", turns[position].text).strip()
        return [*turns[:position], replace(turns[position], text=text), *turns[position + 1 :]]

    def _tokenize(self, segments: list[Segment]) -> tuple[Tensor, Tensor]:
        """Tokenise the joined text once; a token is learned when it overlaps a learned segment.

        Returns ``input_ids (L,)`` and ``labels (L,)`` (-100 off the learned text).
        """
        text = "".join(s.text for s in segments)
        encoded = self.tokenizer(
            text, add_special_tokens=self.template.add_special_tokens, return_offsets_mapping=True
        )
        input_ids = torch.tensor(encoded["input_ids"], dtype=torch.long)  # (L,)
        offsets = torch.tensor(encoded["offset_mapping"], dtype=torch.long).view(-1, 2)  # (L, 2) char spans
        char_learned = torch.tensor([s.learned for s in segments], dtype=torch.long).repeat_interleave(
            torch.tensor([len(s.text) for s in segments], dtype=torch.long)
        )  # (chars,) 1 on learned text
        learned_before = torch.cat([torch.zeros(1, dtype=torch.long), char_learned.cumsum(0)])  # (chars+1,)
        learned = learned_before[offsets[:, 1]] > learned_before[offsets[:, 0]]  # (L,) any learned char inside
        return input_ids, torch.where(learned, input_ids, IGNORE_INDEX)

    def _with_visuals(self, input_ids: Tensor, labels: Tensor | None, visuals: VisualInputs | None) -> EncodedSample:
        """Expand each placeholder to its frame's token count (labels there -100)."""
        if visuals is None:
            return EncodedSample(input_ids, labels)
        pixel_values = visuals.pixel_values  # (F, 4, S, S)
        is_placeholder = input_ids == self.image_token_id  # (L,)
        if int(is_placeholder.sum()) != pixel_values.shape[0]:
            raise ConversationError(
                f"the text holds {int(is_placeholder.sum())} {IMAGE_TOKEN} tokens for {pixel_values.shape[0]} frames"
            )
        repeats = torch.ones_like(input_ids)
        repeats[is_placeholder] = self.frame_token_counts(pixel_values)
        if labels is not None:
            labels = labels.masked_fill(is_placeholder, IGNORE_INDEX).repeat_interleave(repeats)
        return EncodedSample(
            input_ids=input_ids.repeat_interleave(repeats),
            labels=labels,
            pixel_values_videos=pixel_values,
            video_grid_thw=self.video_grid_thw(pixel_values),
            teacher_pixel_values_videos=visuals.teacher_pixel_values,
        )

    def _fit_length(self, input_ids: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Cut text-only overflow at the end; reject a cut through visual tokens or one leaving nothing to learn."""
        if self.max_length is None or len(input_ids) <= self.max_length:
            return input_ids, labels
        visual = (input_ids == self.image_token_id).nonzero()
        if len(visual) and int(visual.max()) >= self.max_length:
            raise SampleTooLongError(
                f"{len(input_ids)} tokens with visual tokens up to position {int(visual.max())} "
                f"exceed max_length={self.max_length}"
            )
        labels = labels[: self.max_length]
        if bool((labels == IGNORE_INDEX).all()):
            raise SampleTooLongError(f"cutting {len(input_ids)} tokens to max_length={self.max_length} leaves no reply")
        return input_ids[: self.max_length], labels


def _user_text(turns: Sequence[Turn]) -> list[Turn]:
    return [replace(t, text=as_plain_text(t.text)) if t.role == "user" else t for t in turns]


def _with_marker(turns: list[Turn], visual_turn: int | None) -> list[Turn]:
    """The visual marker in front of turn ``visual_turn`` (after the user's own text was made plain)."""
    if visual_turn is None:
        return turns
    if not 0 <= visual_turn < len(turns) or turns[visual_turn].role != "user":
        raise ConversationError(f"visual turn {visual_turn} is not a user turn of the {len(turns)} turns")
    held = turns[visual_turn]
    return [*turns[:visual_turn], replace(held, text=f"{VIDEO_MARKER}\n{held.text}"), *turns[visual_turn + 1 :]]
