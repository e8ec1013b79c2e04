"""``videopanda serve`` settings: where it listens, who may call it, and the bounds of a request."""

from __future__ import annotations

from dataclasses import dataclass, field

from videopanda.serve.media import MediaPolicy


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"  # loopback unless told otherwise
    port: int = 8000
    api_key: str | None = None  # set: every /v1 call needs "Authorization: Bearer <key>"
    media: MediaPolicy = field(default_factory=MediaPolicy)
    default_max_tokens: int = 256  # a request without max_tokens (the release's judge script sends none)
    max_tokens_limit: int = 2048
    max_body_bytes: int = 64 * 1024 * 1024  # lmms-eval sends frames as base64 PNGs in the body
    max_image_parts: int = 512  # image_url parts sampled into one video (frames per video: ``limits``)
    max_batch_size: int = 8
    max_wait_ms: float = 10.0
