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
from pathlib import Path

import torch
from torch import Tensor
from transformers import AutoProcessor, AutoVideoProcessor, PreTrainedTokenizerBase
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import MultiModalData, ProcessorMixin, Unpack
from transformers.utils import is_torchvision_available
from transformers.video_utils import VideoInput

from videopanda.data.collator import IGNORE_INDEX, VideoPandaCollator
from videopanda.data.conversation import RELEASE_INFERENCE_TEMPLATE, ConversationError, Segment, Turn, get_template
from videopanda.data.transform import VisualInputs
from videopanda.data.video_processing_videopanda import VideoPandaProcessorKwargs, VideoPandaVideoProcessor
from videopanda.limits import check_text_chars, longest_token_chars, max_text_chars
from videopanda.model.configuration_videopanda import IMAGE_TOKEN, VideoPandaConfig, image_token_id

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


class VideoPandaProcessor(ProcessorMixin):
    """Turns conversations (training) and questions (inference) plus visuals into model inputs.

    A transformers processor: the LLM's tokenizer and ``VideoPandaVideoProcessor`` (every piece of frame
    geometry), saved to and loaded from a model directory (``save_pretrained``, ``AutoProcessor``).
    ``template``: a name from ``conversation.TEMPLATES`` (``vicuna_v1``, the release; ``vicuna_v1_eval``, its
    evaluation system line; ``chat_template``, the tokenizer's own); ``chat_template`` (Jinja) is generated
    from it unless given. ``sample_max_length`` (the training config's ``max_length``; transformers'
    ``max_length`` is a call's tokenizer kwarg): samples longer than this are cut at the end if only text is
    lost; a cut through visual tokens raises ``SampleTooLongError`` (None: no limit). ``context_length``: the
    LLM's context (prompts must fit it; None: unchecked).
    """

    valid_processor_kwargs = VideoPandaProcessorKwargs  # type: ignore[assignment]  # a ProcessingKwargs subclass

    def __init__(
        self,
        video_processor: VideoPandaVideoProcessor | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
        chat_template: str | None = None,
        template: str = "vicuna_v1",
        system: str | None = None,
        sample_max_length: int | None = None,
        context_length: int | None = None,
        **kwargs,
    ) -> None:
        if tokenizer is None or video_processor is None:
            raise ValueError("VideoPandaProcessor needs a tokenizer and a video processor")
        if not tokenizer.is_fast:
            raise ValueError(f"tokenizer {tokenizer.name_or_path!r} must be a fast tokenizer (offsets label the text)")
        self.template = template
        self.system = system
        self.sample_max_length = sample_max_length
        self.context_length = context_length
        self.conversation_template = get_template(template, system)
        self.video_token = VIDEO_MARKER  # an image is a one-frame video; <image> is the per-frame placeholder
        self.image_token_id = image_token_id(tokenizer)
        if chat_template is None:
            chat_template = self.conversation_template.jinja(tokenizer)
        super().__init__(video_processor, tokenizer, chat_template=chat_template, **kwargs)

    @classmethod
    def for_model(
        cls, tokenizer: PreTrainedTokenizerBase, config: VideoPandaConfig, template: str = "vicuna_v1",
        system: str | None = None, max_length: int | None = None,
    ) -> VideoPandaProcessor:
        """The processor of a model: its config's geometry and context, the tokenizer's ``<image>`` checked."""
        processor = cls(VideoPandaVideoProcessor.from_model_config(config), tokenizer, template=template,
                        system=system, sample_max_length=max_length,
                        context_length=getattr(config.text_config, "max_position_embeddings", None))
        if config.image_token_id is not None and config.image_token_id != processor.image_token_id:
            raise ValueError(
                f"tokenizer's {IMAGE_TOKEN} id {processor.image_token_id} differs from config.image_token_id "
                f"{config.image_token_id}"
            )
        return processor

    @classmethod
    def _get_arguments_from_pretrained(cls, pretrained_model_name_or_path, processor_dict=None, **kwargs):
        """The video processor by its own class (transformers' ``AutoVideoProcessor`` needs torchvision, which
        Video-Panda does not), the tokenizer by ``AutoTokenizer``."""
        subfolder = kwargs.pop("subfolder", "")
        video_processor = VideoPandaVideoProcessor.from_pretrained(
            pretrained_model_name_or_path, subfolder=subfolder, **kwargs
        )
        tokenizer = cls._load_tokenizer_from_pretrained("tokenizer", pretrained_model_name_or_path,
                                                        subfolder=subfolder, **kwargs)
        return [video_processor, tokenizer]

    def check_argument_for_proper_class(self, argument_name, argument):
        """transformers' class check, but the video processor by its own class (transformers looks the base
        class up among names it exports only with torchvision)."""
        if argument_name != "video_processor":
            return super().check_argument_for_proper_class(argument_name, argument)
        if not isinstance(argument, VideoPandaVideoProcessor):
            raise TypeError(f"video_processor must be a VideoPandaVideoProcessor, got {type(argument).__name__}")
        return VideoPandaVideoProcessor

    @property
    def template_name(self) -> str:
        return self.template

    @property
    def num_frames(self) -> int:
        """Frames per video (the video processor's)."""
        return self.video_processor.num_frames

    @cached_property
    def max_text_chars(self) -> int:
        """The most characters of user text a prompt may hold (``limits.max_text_chars`` of the LLM's context)."""
        return max_text_chars(self.context_length, longest_token_chars(self.tokenizer))

    @property
    def stop_string(self) -> str:
        """The end-of-turn text that ends a generated reply (``</s>``, ``<|im_end|>``)."""
        return self.conversation_template.end_of_turn(self.tokenizer)

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values_videos", "video_grid_thw"]

    def __call__(
        self, text: str | list[str] | None = None, videos: VideoInput | None = None,
        **kwargs: Unpack[VideoPandaProcessorKwargs],
    ) -> BatchFeature:
        """Rendered prompts (``apply_chat_template``) + their videos -> ``input_ids (B, L)``, ``attention_mask
        (B, L)`` (padded on the tokenizer's side), ``pixel_values_videos (F, 4, S, S)``, ``video_grid_thw (V, 3)``.

        Each ``<video>`` (or ``<image>``) marker takes the next video and becomes one ``<image>`` per frame,
        each expanded to its frame's token count; the marker's count must match the videos given.
        """
        if kwargs.get("images") is not None or kwargs.get("audio") is not None:
            raise ValueError("VideoPandaProcessor takes videos= (an image is a one-frame video), not images or audio")
        if text is None:
            raise ValueError("VideoPandaProcessor needs text (with one <video> marker per video)")
        texts = [text] if isinstance(text, str) else list(text)
        output_kwargs = self._merge_kwargs(tokenizer_init_kwargs=self.tokenizer.init_kwargs, **kwargs)
        return_tensors = output_kwargs["text_kwargs"].pop("return_tensors", None) or "pt"
        video_inputs: dict[str, Tensor] = {}
        if videos is not None:
            output_kwargs["videos_kwargs"].pop("return_tensors", None)
            video_inputs = dict(self.video_processor(videos, return_tensors="pt", **output_kwargs["videos_kwargs"]))
        frames = self._frames_per_video(video_inputs)
        markers = sum(len(_MARKER.findall(t)) for t in texts)
        if markers != len(frames):
            raise ValueError(f"the text holds {markers} <video>/<image> markers for {len(frames)} videos")
        rows, pixel_offset, video = [], 0, 0
        for sample in texts:
            count = len(_MARKER.findall(sample))
            used = frames[video : video + count]
            ids = self.tokenizer(_frames_for_markers(sample, used),
                                 add_special_tokens=self.conversation_template.add_special_tokens)["input_ids"]
            pixels = video_inputs["pixel_values_videos"][pixel_offset : pixel_offset + sum(used)] if used else None
            rows.append(self._expand(torch.tensor(ids, dtype=torch.long), pixels).tolist())
            pixel_offset, video = pixel_offset + sum(used), video + count
        text_kwargs = output_kwargs["text_kwargs"]
        type_ids = text_kwargs.pop("return_mm_token_type_ids", output_kwargs.get("return_mm_token_type_ids"))
        text_inputs = self._pad(rows, text_kwargs)
        if type_ids:
            text_inputs["mm_token_type_ids"] = self.create_mm_token_type_ids(text_inputs["input_ids"])
        return BatchFeature(data={**text_inputs, **video_inputs}, tensor_type=return_tensors)

    def _pad(self, rows: list[list[int]], text_kwargs: dict) -> dict:
        """Expanded rows -> ``input_ids``/``attention_mask``, truncated (text only) and padded as the tokenizer
        kwargs ask (``padding``, ``max_length``, ``truncation``, ``padding_side``; default: to the longest)."""
        max_length = text_kwargs.get("max_length")
        if text_kwargs.get("truncation") and max_length is not None:
            for row in rows:
                if self.image_token_id in row[max_length:]:
                    raise SampleTooLongError(f"truncating to max_length={max_length} would cut visual tokens")
            rows = [row[:max_length] for row in rows]
        padding = text_kwargs.get("padding")
        padded = self.tokenizer.pad(
            {"input_ids": rows}, padding=True if padding in (None, False) and len(rows) > 1 else (padding or False),
            max_length=max_length, padding_side=text_kwargs.get("padding_side"),
            return_attention_mask=text_kwargs.get("return_attention_mask", True),
        )
        return dict(padded)

    @property  # type: ignore[misc]  # read-only here: the placeholder is always a video token
    def image_token_ids(self) -> list[int | None]:
        return []  # an image is a one-frame video: every placeholder is a video token (mm_token_type_ids 2)

    @property  # type: ignore[misc]  # read-only here, as image_token_ids
    def video_token_ids(self) -> list[int | None]:
        return [self.image_token_id]

    def _get_num_multimodal_tokens(self, video_sizes=None, **kwargs) -> MultiModalData:
        """vLLM's count: the placeholder tokens ``__call__`` gives each video of ``(frames, height, width)``."""
        if video_sizes is None:
            return MultiModalData()
        return MultiModalData(num_video_tokens=[self.video_processor.num_tokens(*size) for size in video_sizes])

    @staticmethod
    def _frames_per_video(video_inputs: dict[str, Tensor]) -> list[int]:
        grid = video_inputs.get("video_grid_thw")
        return [] if grid is None else [int(t) for t in grid[:, 0]]

    def encode_conversation(self, conversation: Sequence[Turn], visuals: VisualInputs | None = None) -> EncodedSample:
        """A training sample; labels are learned only on assistant replies and their end-of-turn marker."""
        turns = self._place_placeholders(conversation, visuals)
        input_ids, labels = self._tokenize(self.conversation_template.segments(turns, self.tokenizer))
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
        segments = self.conversation_template.segments(turns, self.tokenizer, add_generation_prompt=True)
        input_ids, _ = self._tokenize(segments)
        sample = self._with_visuals(input_ids, None, visuals)
        if self.sample_max_length is not None and len(sample.input_ids) > self.sample_max_length:
            raise SampleTooLongError(
                f"prompt of {len(sample.input_ids)} tokens exceeds max_length={self.sample_max_length}"
            )
        context = self.context_length
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
            text, add_special_tokens=self.conversation_template.add_special_tokens, return_offsets_mapping=True
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
        repeats = self._repeats(input_ids, pixel_values)
        if labels is not None:
            labels = labels.masked_fill(input_ids == self.image_token_id, IGNORE_INDEX).repeat_interleave(repeats)
        return EncodedSample(
            input_ids=input_ids.repeat_interleave(repeats),
            labels=labels,
            pixel_values_videos=pixel_values,
            video_grid_thw=self.video_processor.grid_thw(pixel_values.shape[0])[None],  # (1, 3)
            teacher_pixel_values_videos=visuals.teacher_pixel_values,
        )

    def _expand(self, input_ids: Tensor, pixel_values: Tensor | None) -> Tensor:
        """input_ids (L,) with one placeholder per frame -> (L',) each placeholder repeated to its token count."""
        if pixel_values is None:
            if bool((input_ids == self.image_token_id).any()):
                raise ConversationError(f"the text holds {IMAGE_TOKEN} tokens but no video")
            return input_ids
        return input_ids.repeat_interleave(self._repeats(input_ids, pixel_values))

    def _repeats(self, input_ids: Tensor, pixel_values: Tensor) -> Tensor:
        """(L,) long: 1 per text token, the frame's token count per placeholder (frames in order)."""
        is_placeholder = input_ids == self.image_token_id  # (L,)
        if int(is_placeholder.sum()) != pixel_values.shape[0]:
            raise ConversationError(
                f"the text holds {int(is_placeholder.sum())} {IMAGE_TOKEN} tokens for {pixel_values.shape[0]} frames"
            )
        repeats = torch.ones_like(input_ids)
        repeats[is_placeholder] = self.video_processor.frame_token_counts(pixel_values)
        return repeats

    def _fit_length(self, input_ids: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Cut text-only overflow at the end; reject a cut through visual tokens or one leaving nothing to learn."""
        if self.sample_max_length is None or len(input_ids) <= self.sample_max_length:
            return input_ids, labels
        visual = (input_ids == self.image_token_id).nonzero()
        if len(visual) and int(visual.max()) >= self.sample_max_length:
            raise SampleTooLongError(
                f"{len(input_ids)} tokens with visual tokens up to position {int(visual.max())} "
                f"exceed max_length={self.sample_max_length}"
            )
        labels = labels[: self.sample_max_length]
        if bool((labels == IGNORE_INDEX).all()):
            raise SampleTooLongError(
                f"cutting {len(input_ids)} tokens to max_length={self.sample_max_length} leaves no reply"
            )
        return input_ids[: self.sample_max_length], labels


def _frames_for_markers(text: str, frames: list[int]) -> str:
    """Each ``<video>``/``<image>`` marker of ``text`` -> one ``<image>`` per frame of its video (in order)."""
    counts = iter(frames)
    return _MARKER.sub(lambda _: IMAGE_TOKEN * next(counts), text)


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


def save_model_processor(
    directory: str | Path, tokenizer: PreTrainedTokenizerBase, config: VideoPandaConfig, template: str | None = None
) -> VideoPandaProcessor:
    """Write a model directory's processor files (tokenizer files, ``processor_config.json`` with the video
    processor inside, ``chat_template.jinja``): ``AutoProcessor.from_pretrained(directory)`` loads them.

    ``template``: the template the model is prompted with (default: the config's ``prompt_template``, else the
    release's inference form).
    """
    template = template or getattr(config, "prompt_template", None) or RELEASE_INFERENCE_TEMPLATE
    processor = VideoPandaProcessor.for_model(tokenizer, config, template=template)
    processor.save_pretrained(str(directory))
    return processor


def register_processor() -> None:
    """Register the processor (and, where transformers has torchvision for it, the video processor) with
    transformers' ``AutoProcessor``/``AutoVideoProcessor``."""
    AutoProcessor.register(VideoPandaConfig, VideoPandaProcessor, exist_ok=True)
    if is_torchvision_available():  # transformers' AutoVideoProcessor is a stub without torchvision
        AutoVideoProcessor.register(VideoPandaConfig, VideoPandaVideoProcessor, exist_ok=True)


register_processor()
