"""Typed judge component: the item judged, the verdict, and the interfaces of judges and chat backends.

A ``Judge`` turns a ``JudgeRequest`` (one item + its prompt) into a
``Verdict``. LLM judges (``LLMJudge``) render the prompt, ask a
``ChatBackend`` (an OpenAI-compatible endpoint or a local model), parse the
reply strictly and retry malformed replies a bounded number of times; a reply
that never parses is a failed verdict, never a counted one.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from videopanda.eval.judge.scoring import MalformedReplyError, parse_reply

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class QAItem:
    """One prediction to judge (a line of ``merge.jsonl``: ``{id, question, answer, pred}``)."""

    id: str
    question: str
    answer: str
    pred: str
    question2: str | None = None  # consistency criterion: the paraphrased question
    pred2: str | None = None  # and the model's answer to it


@dataclass(frozen=True)
class JudgeRequest:
    item: QAItem
    prompt: Any  # prompts.PromptSpec (typed loosely to keep this module import-light)


@dataclass
class Verdict:
    """The judge's decision on one item; ``ok`` False means a recorded failure, excluded from counts."""

    id: str
    ok: bool
    pred: str | None = None  # 'yes' | 'no' (None for score-only prompts and failures)
    score: float | None = None  # 0..5
    raw: str | None = None  # the judge's last reply text
    error: str | None = None
    attempts: int = 0  # requests sent to the judge (the HTTP retries of a request that gave up included)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class JudgeInfo:
    """What produced a verdict: recorded in every results.json (scores depend on the judge)."""

    backend: str
    model: str
    prompt: str
    prompt_hash: str
    temperature: float = 0.0
    seed: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class JudgeCallError(RuntimeError):
    """A chat backend gave up on a request (retries exhausted, or a non-retryable error) after ``attempts`` tries."""

    def __init__(self, message: str, attempts: int = 1) -> None:
        super().__init__(message)
        self.attempts = attempts


class Judge(Protocol):
    @property
    def model(self) -> str: ...

    def info(self, prompt: Any) -> JudgeInfo: ...

    def judge(self, request: JudgeRequest) -> Verdict: ...


class ChatBackend(Protocol):
    """Something that answers one (system, user) exchange with text, deterministically (temperature 0)."""

    @property
    def name(self) -> str: ...  # backend kind: "openai" | "local"

    @property
    def model(self) -> str: ...

    @property
    def seed(self) -> int | None: ...

    def complete(self, system: str, user: str) -> str: ...


@dataclass
class LLMJudge:
    """A judge backed by a chat model; malformed replies are retried up to ``parse_attempts`` times in all."""

    backend: ChatBackend
    parse_attempts: int = 3

    @property
    def model(self) -> str:
        return self.backend.model

    def info(self, prompt: Any) -> JudgeInfo:
        return JudgeInfo(self.backend.name, self.backend.model, prompt.name, prompt.hash, seed=self.backend.seed)

    def judge(self, request: JudgeRequest) -> Verdict:
        system, user = request.prompt.render(request.item)
        reply, error = None, "no attempt"
        example = getattr(request.prompt, "example", None)
        for attempt in range(1, self.parse_attempts + 1):
            try:
                reply = self.backend.complete(system, user)
                pred, score = parse_reply(reply, request.prompt.reply, example)
                return Verdict(request.item.id, True, pred, score, reply, None, attempt)
            except MalformedReplyError as err:
                error = str(err)
                logger.debug("item %s: malformed judge reply (attempt %d): %s", request.item.id, attempt, err)
            except JudgeCallError as err:
                sent = attempt - 1 + err.attempts
                return Verdict(request.item.id, False, raw=reply, error=str(err), attempts=sent)
        return Verdict(request.item.id, False, raw=reply, error=error, attempts=self.parse_attempts)
