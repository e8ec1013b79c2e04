"""Chat backend for any OpenAI-compatible ``/v1/chat/completions`` endpoint (``openai`` client).

Retries on rate limits (429), server errors (5xx), timeouts and dropped
connections, with capped exponential backoff; other client errors fail at
once; a 200 whose body is no chat completion is a malformed reply.
The client's own retries are off, so every attempt is counted here.
The API key is passed in: the CLI reads flags/environment, never this module.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import openai

from videopanda.eval.judge.base import JudgeCallError
from videopanda.eval.judge.scoring import MalformedReplyError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OpenAIJudgeConfig:
    model: str = "gpt-3.5-turbo"
    base_url: str | None = None  # None: the client's default (api.openai.com)
    api_key: str = "EMPTY"  # local servers accept any key
    timeout_s: float = 60.0
    max_attempts: int = 6  # per request, all HTTP attempts together
    backoff_s: float = 1.0  # first wait; doubles each retry
    max_backoff_s: float = 30.0
    max_tokens: int = 64  # the reply is a short dict
    seed: int | None = 0  # sent where the endpoint supports it

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")


# What a 200 response whose body is not a chat completion raises inside the client or on access.
_NOT_A_COMPLETION = (json.JSONDecodeError, openai.APIResponseValidationError, AttributeError, IndexError, TypeError)


def _retryable(err: Exception) -> bool:
    if isinstance(err, (openai.APITimeoutError, openai.APIConnectionError, openai.RateLimitError)):
        return True
    return isinstance(err, openai.APIStatusError) and err.status_code >= 500


class RequestRefusedError(JudgeCallError):
    """The endpoint refused the request itself (a 4xx other than 429): asking again would not help."""


def complete_with_retries(
    client: openai.OpenAI, request: dict[str, Any], *, max_attempts: int, backoff_s: float, max_backoff_s: float,
) -> str:
    """The reply text of one ``chat.completions.create(**request)``, retrying 429/5xx/timeouts/dropped
    connections with capped exponential backoff; raises ``JudgeCallError`` (``RequestRefusedError`` for a
    refusal) when it gives up, ``MalformedReplyError`` for a 200 that is no chat completion."""
    for attempt in range(1, max_attempts + 1):
        try:
            response = client.chat.completions.create(**request)
            return response.choices[0].message.content or ""
        except _NOT_A_COMPLETION as err:
            raise MalformedReplyError(f"response is not a chat completion: {type(err).__name__}: {err}") from err
        except openai.OpenAIError as err:
            where = f"{client.base_url} {request.get('model')}"
            if not _retryable(err):
                raise RequestRefusedError(f"{where}: {type(err).__name__}: {err}", attempts=attempt) from err
            if attempt == max_attempts:
                raise JudgeCallError(f"{where}: {type(err).__name__}: {err} ({attempt} attempts)",
                                     attempts=attempt) from err
            wait = min(backoff_s * 2 ** (attempt - 1), max_backoff_s)
            logger.warning("request failed (%s), retry %d in %.1fs", type(err).__name__, attempt, wait)
            time.sleep(wait)
    raise JudgeCallError("unreachable")  # the loop returns or raises


class OpenAIBackend:
    name = "openai"

    def __init__(self, config: OpenAIJudgeConfig) -> None:
        self.config = config
        self.model = config.model
        self.seed = config.seed
        self._client = openai.OpenAI(
            base_url=config.base_url, api_key=config.api_key, timeout=config.timeout_s, max_retries=0
        )

    def complete(self, system: str, user: str) -> str:
        """One chat completion at temperature 0; raises ``JudgeCallError`` when retries are exhausted."""
        cfg = self.config
        request = {
            "model": cfg.model, "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
            "temperature": 0.0, "max_tokens": cfg.max_tokens,
            "seed": openai.NOT_GIVEN if cfg.seed is None else cfg.seed,
        }
        return complete_with_retries(self._client, request, max_attempts=cfg.max_attempts, backoff_s=cfg.backoff_s,
                                     max_backoff_s=cfg.max_backoff_s)
