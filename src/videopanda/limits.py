"""Bounds on the work one input may ask for: one rule for ``ask``/``chat``, ``eval run``, training and ``serve``.

- **Frames per video**: a positive multiple of the model's chunk length (the STAB models
  time inside chunks of ``chunk_length`` frames: 4 in the release), and at most what
  ``FRAME_MEMORY_BUDGET_BYTES`` holds of preprocessed frames at the model's frame size
  (``max_frames``: 80 for the release's 448x448 frames). The frames of a video are
  decoded and preprocessed before the prompt's context is checked, so this bound, not
  the context, is what keeps ``--num-frames 100000`` from exhausting memory.
- **Text**: a user text (question, chat history, system message) longer than
  ``max_text_chars`` cannot fit the LLM's context whatever it says, since no token
  covers more characters than the tokenizer's longest; it is refused before it is
  tokenised (a 50 MB message is otherwise tokenised whole).
- **New tokens**: at least 1 and at most the LLM's context (``check_max_new_tokens``).
"""

from __future__ import annotations

from collections.abc import Iterable

FRAME_MEMORY_BUDGET_BYTES = 256 * 2**20  # the preprocessed frames of one video
FRAME_CHANNELS = 4  # RGB + validity mask, float32 (data.transform: (4, S, S) per frame)
FLOAT32_BYTES = 4
UNKNOWN_CONTEXT_TOKENS = 32_768  # an LLM whose config states no context: a generous bound, still a bound


class LimitError(ValueError):
    """An input over one of these bounds; the message names the setting, the bound and why."""


def frame_bytes(image_size: int) -> int:
    """Bytes of one preprocessed frame at the model's frame size: (4, S, S) float32."""
    return FRAME_CHANNELS * image_size * image_size * FLOAT32_BYTES


def max_frames(image_size: int, chunk_length: int) -> int:
    """The most frames per video: what the frame budget holds, in whole chunks (at least one chunk)."""
    fitting = FRAME_MEMORY_BUDGET_BYTES // frame_bytes(image_size)
    return max(chunk_length, fitting // chunk_length * chunk_length)


def check_num_frames(num_frames: object, image_size: int, chunk_length: int, name: str = "num_frames") -> int:
    """``num_frames`` if it is a valid frame count for a model of this geometry, else ``LimitError``."""
    most = max_frames(image_size, chunk_length)
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or not (
        chunk_length <= num_frames <= most and num_frames % chunk_length == 0
    ):
        raise LimitError(
            f"{name}={num_frames!r}: frames per video must be a multiple of the chunk length {chunk_length}, from "
            f"{chunk_length} to {most} ({most} frames of {image_size}x{image_size} fill the "
            f"{FRAME_MEMORY_BUDGET_BYTES // 2**20} MiB frame budget)")
    return num_frames


def longest_token_chars(tokenizer) -> int:
    """The most characters one token of ``tokenizer`` can stand for (its longest vocabulary entry, at least 1).

    Vocabulary entries spell a byte-level token one symbol per byte, so this bounds characters from above.
    """
    return max((len(token) for token in tokenizer.get_vocab()), default=1) or 1


def max_text_chars(context_tokens: int | None, longest_token: int) -> int:
    """The most characters of user text that could still fit a context of ``context_tokens`` tokens."""
    return (context_tokens or UNKNOWN_CONTEXT_TOKENS) * longest_token


def check_text_chars(texts: Iterable[str], limit: int) -> None:
    """``LimitError`` if the user texts of one prompt hold more than ``limit`` characters (checked untokenised)."""
    total = sum(len(text) for text in texts)
    if total > limit:
        raise LimitError(f"the text is {total} characters: more than the {limit} that could fit the model's "
                         "context; shorten the question or the chat history")


def check_max_new_tokens(value: int, context_tokens: int | None, name: str = "max_new_tokens") -> int:
    """``value`` if it is from 1 to the context's size, else ``LimitError``."""
    most = context_tokens or UNKNOWN_CONTEXT_TOKENS
    if not 1 <= value <= most:
        raise LimitError(f"{name}={value}: give from 1 to {most} (the model's context)")
    return value
