"""The OpenAI chat-completions wire format: the request's fields, response and chunk bodies, error objects.

Decoding is greedy, so sampling fields (``temperature``, ``top_p``, ``seed``, ...)
are accepted and change nothing. A field that would change the reply and that
this server cannot honour (``tools``, ``response_format`` other than text,
``logprobs``, ``n`` > 1, ...) is refused with a 400 naming it, as is any field
it does not know: never silently dropped.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict

from videopanda.inference import GenerationResult

# Fields that cannot change a greedy reply: accepted, unused.
IGNORED_FIELDS = frozenset({
    "temperature", "top_p", "top_k", "min_p", "seed", "presence_penalty", "frequency_penalty",
    "repetition_penalty", "user", "store", "metadata", "service_tier", "parallel_tool_calls",
})
MAX_STOP_SEQUENCES = 4  # as OpenAI


class APIError(Exception):
    """A request the server refuses: its status and an OpenAI error object that echoes no payload."""

    def __init__(
        self, status: int, message: str, param: str | None = None, code: str | None = None,
        type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.code, self.param)


def error_body(message: str, type: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class ChatCompletionRequest(BaseModel):
    """What ``/v1/chat/completions`` reads; messages are checked part by part in ``messages``."""

    model_config = ConfigDict(extra="allow")
    model: str | None = None
    messages: list[dict[str, Any]]
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    stop: str | list[str] | None = None
    n: int = 1
    num_frames: int | None = None
    media_io_kwargs: dict[str, Any] | None = None
    video: str | None = None  # videopanda's own: a video for the first user turn
    logprobs: bool | None = None
    response_format: dict[str, Any] | None = None
    modalities: list[str] | None = None

    def check_fields(self) -> None:
        """Refuse every field that would change the reply but cannot be honoured."""
        unknown = sorted(set(self.model_extra or {}) - IGNORED_FIELDS)
        if unknown:
            raise APIError(400, f"unsupported field {unknown[0]!r}: this server does not implement it", unknown[0])
        if self.n != 1:
            raise APIError(400, f"n={self.n} is not supported: decoding is greedy, so every choice would be the "
                                "same; send n=1", "n")
        if self.logprobs:
            raise APIError(400, "logprobs are not supported", "logprobs")
        if self.response_format is not None and self.response_format.get("type") != "text":
            raise APIError(400, "only response_format {'type': 'text'} is supported", "response_format")
        if self.modalities is not None and self.modalities != ["text"]:
            raise APIError(400, "only the 'text' output modality is supported", "modalities")

    def stop_sequences(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > MAX_STOP_SEQUENCES or any(not s for s in stops):
            raise APIError(400, f"stop: up to {MAX_STOP_SEQUENCES} non-empty strings", "stop")
        return stops

    def max_new_tokens(self, default: int, limit: int) -> int:
        value = self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens
        name = "max_completion_tokens" if self.max_completion_tokens is not None else "max_tokens"
        if value is None:
            return default
        if value < 1:
            raise APIError(400, f"{name} must be at least 1, got {value}", name)
        if value > limit:
            raise APIError(400, f"{name}={value} exceeds this server's limit of {limit}", name)
        return value

    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def usage(result: GenerationResult) -> dict[str, int]:
    return {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
            "total_tokens": result.prompt_tokens + result.completion_tokens}


def completion_body(id: str, model: str, result: GenerationResult) -> dict[str, Any]:
    return {
        "id": id, "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": result.text},
                     "logprobs": None, "finish_reason": result.finish_reason}],
        "usage": usage(result),
    }


def chunk_body(
    id: str, model: str, delta: dict[str, str], finish_reason: str | None = None,
) -> dict[str, Any]:
    return {
        "id": id, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }


def usage_chunk_body(id: str, model: str, result: GenerationResult) -> dict[str, Any]:
    """The last chunk of a stream with ``stream_options.include_usage``: no choices, the usage."""
    return {"id": id, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": [], "usage": usage(result)}
