"""Per-request limits, stop sequences and streamed text inside one batched greedy ``generate`` call.

A batch of requests shares one ``model.generate``; ``RowMonitor`` is its
stopping criterion and tracks each row on its own: a row ends at the
end-of-sequence token, at one of its stop strings (the template's end of turn
plus the request's ``stop``), at its own ``max_new_tokens``, or as soon as its
``cancelled`` event is set (a client that went away). Rows that end
early are padded by ``generate`` while the others go on; their text is cut at
the recorded end. The new text of a row is handed to its ``on_text`` callback
as each token arrives (text that may still turn into a stop string is held back).

Shapes: ``B`` rows, ``L`` prompt tokens (left-padded), ``t`` tokens generated so far.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

import torch
from torch import Tensor
from transformers import StoppingCriteria

from videopanda.data.conversation import Turn
from videopanda.data.transform import VisualInputs

FINISH_STOP = "stop"
FINISH_LENGTH = "length"
FINISH_CANCELLED = "cancelled"  # its client left: the result reaches no one


@dataclass
class GenerationRequest:
    """One prompt of a batch: a question, its visuals and earlier turns, and its own limits."""

    question: str
    visuals: VisualInputs | None = None
    history: Sequence[Turn] = ()
    visual_turn: int | None = None  # the turn (of history + question) the visuals belong to; None: the first
    system: str | None = None  # plain chat LLMs only: a Video-Panda template has its own system line
    max_new_tokens: int | None = None  # None: the predictor's GenerationConfig.max_new_tokens
    stop: Sequence[str] = ()
    on_text: Callable[[str], None] | None = field(default=None, repr=False)  # new visible text, as generated
    cancelled: threading.Event = field(default_factory=threading.Event, repr=False)  # set: stop generating it


@dataclass(frozen=True)
class GenerationResult:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # FINISH_STOP, FINISH_LENGTH or FINISH_CANCELLED


def cut_at_stops(text: str, stops: Sequence[str]) -> str:
    """``text`` up to the earliest occurrence of any of ``stops``."""
    end = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=len(text))
    return text[:end]


def held_back(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters of ``text`` could still begin a stop string (or an unfinished character)."""
    longest = max((k for s in stops for k in range(1, len(s)) if text.endswith(s[:k])), default=0)
    return max(longest, len(text) - len(text.rstrip("\ufffd")))


class RowMonitor(StoppingCriteria):
    """Stopping criterion of one batched ``generate``: each row's end, finish reason and streamed text.

    ``decode(token_ids) -> str`` turns a row's new tokens into its visible reply (special
    tokens and the end-of-turn marker removed, stripped); ``raw_decode`` keeps everything,
    to find stop strings; ``eos_ids`` end a row as soon as they appear.
    """

    def __init__(
        self, requests: Sequence[GenerationRequest], limits: Sequence[int], prompt_length: int,
        decode: Callable[[Tensor], str], raw_decode: Callable[[Tensor], str], eos_ids: set[int],
        template_stop: str | None,
    ) -> None:
        self.requests = requests
        self.limits = limits
        self.prompt_length = prompt_length
        self.decode = decode
        self.raw_decode = raw_decode
        self.eos_ids = eos_ids
        self.stops = [[s for s in (template_stop, *r.stop) if s] for r in requests]
        self.ends: list[int | None] = [None] * len(requests)  # new tokens of a finished row
        self.reasons = [FINISH_LENGTH] * len(requests)
        self.emitted = [""] * len(requests)

    def __call__(self, input_ids: Tensor, scores: Tensor, **kwargs) -> torch.BoolTensor:
        new_tokens = input_ids[:, self.prompt_length :]  # (B, t)
        for row in range(len(self.requests)):
            if self.ends[row] is None:
                self._update(row, new_tokens[row])
        return cast(torch.BoolTensor, torch.tensor([end is not None for end in self.ends], device=input_ids.device))

    def _update(self, row: int, tokens: Tensor) -> None:
        count = tokens.shape[0]
        if self.requests[row].cancelled.is_set():
            self.ends[row], self.reasons[row] = count, FINISH_CANCELLED
        elif int(tokens[-1]) in self.eos_ids or any(s in self.raw_decode(tokens) for s in self.stops[row]):
            self.ends[row], self.reasons[row] = count, FINISH_STOP
        elif count >= self.limits[row]:
            self.ends[row] = count
        elif self.requests[row].on_text is not None:
            text = self.text(row, tokens)
            self._emit(row, text[: len(text) - held_back(text, self.stops[row])])

    def text(self, row: int, tokens: Tensor) -> str:
        """The visible reply of ``row`` from its new ``tokens``: decoded, cut at the request's stops."""
        return cut_at_stops(self.decode(tokens), self.requests[row].stop).strip()

    def _emit(self, row: int, visible: str) -> None:
        on_text = self.requests[row].on_text
        if on_text is not None and len(visible) > len(self.emitted[row]) and visible.startswith(self.emitted[row]):
            on_text(visible[len(self.emitted[row]) :])
            self.emitted[row] = visible

    def results(self, new_tokens: Tensor, attention_mask: Tensor) -> list[GenerationResult]:
        """new_tokens (B, t), attention_mask (B, L) -> one result per row; the rest of each text is streamed."""
        results = []
        for row in range(len(self.requests)):
            recorded = self.ends[row]
            end = recorded if recorded is not None else min(new_tokens.shape[1], self.limits[row])
            if recorded is None and end < self.limits[row]:  # generate ended the row itself (eos)
                self.reasons[row] = FINISH_STOP
            text = self.text(row, new_tokens[row, :end])
            if self.requests[row].on_text is not None:
                self._emit(row, text)
            results.append(GenerationResult(text, int(attention_mask[row].sum()), end, self.reasons[row]))
        return results
