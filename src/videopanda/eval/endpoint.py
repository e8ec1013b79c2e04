"""Any OpenAI-compatible video model as an ``eval run`` predictor: one chat request per question.

The same ``run_shard`` (shards, resume, missing-video list, output files) drives
it; only how a video travels differs (``EndpointConfig.video_as``):

    video_url  a ``video_url`` content part holding the file inline (``data:video/<type>;base64,...``)
    file_url   a ``video_url`` part naming the file (``file:///abs/path``): the server reads it from its
               own disk (same machine or shared storage; vLLM needs ``--allowed-local-media-path``)
    frames     the release's sampled frames (``read_video_frames``), one ``image_url`` JPEG part each

Requests are concurrent (``workers``) and retried like the judge's
(``judge.openai_backend.complete_with_retries``); decoding is greedy
(temperature 0). A request the server refuses (a 4xx) lists the question as
unanswered with the server's reason, and it is asked again on the next run;
a server that stays unreachable stops the run (the answers so far are kept).
"""

from __future__ import annotations

import base64
import io
import logging
import mimetypes
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import openai
from PIL import Image

from videopanda.data.decode import probe_video, read_video_frames
from videopanda.eval.judge.base import JudgeCallError
from videopanda.eval.judge.openai_backend import RequestRefusedError, complete_with_retries
from videopanda.eval.run import Unanswered

logger = logging.getLogger(__name__)

VideoAs = Literal["video_url", "file_url", "frames"]
VIDEO_AS: tuple[str, ...] = ("video_url", "file_url", "frames")


@dataclass(frozen=True)
class EndpointConfig:
    base_url: str  # .../v1
    model: str  # the served model's id
    api_key: str = "EMPTY"  # local servers accept any key
    video_as: VideoAs = "video_url"
    num_frames: int = 8  # frames mode: the release's frame count
    max_new_tokens: int = 1024  # the release's limit, sent as max_tokens
    workers: int = 8  # concurrent requests
    timeout_s: float = 600.0  # per request: a long video on a busy server takes a while
    max_attempts: int = 6
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0

    def __post_init__(self) -> None:
        if self.video_as not in VIDEO_AS:
            raise ValueError(f"video_as must be one of {', '.join(VIDEO_AS)}, got {self.video_as!r}")
        if self.workers < 1 or self.max_attempts < 1:
            raise ValueError(f"workers and max_attempts must be at least 1, got {self.workers}, {self.max_attempts}")


class EndpointUnavailableError(ConnectionError):
    """The server stayed unreachable or failing through every retry: the run stops, its answers kept."""


class EndpointPredictor:
    """``run.Predictor`` over an OpenAI-compatible ``/v1/chat/completions`` server."""

    def __init__(self, config: EndpointConfig) -> None:
        self.config = config
        self._client = openai.OpenAI(base_url=config.base_url, api_key=config.api_key, timeout=config.timeout_s,
                                     max_retries=0)

    @property
    def batch_size(self) -> int:
        return self.config.workers  # one wave of concurrent requests per batch

    def settings(self) -> dict[str, Any]:
        """What the answers depend on (``run.record_run_settings``)."""
        keep = ("base_url", "model", "video_as", "max_new_tokens") + (("num_frames",) if self.config.video_as ==
                                                                       "frames" else ())
        return {k: v for k, v in asdict(self.config).items() if k in keep}

    def load_video(self, path: Path) -> list[dict[str, Any]]:
        """The request's visual content parts; ``VideoDecodeError`` for a file that is no readable video."""
        path = Path(path)
        if self.config.video_as == "frames":
            frames = read_video_frames(path, num_frames=self.config.num_frames)  # (T, H, W, 3) uint8
            return [{"type": "image_url", "image_url": {"url": _jpeg_data_url(frame)}} for frame in frames]
        probe_video(path)  # a missing or corrupt file is listed as missing, as in a local run
        if self.config.video_as == "file_url":
            url = path.resolve().as_uri()
        else:
            kind = mimetypes.guess_type(path.name)[0] or "video/mp4"
            url = f"data:{kind};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"
        return [{"type": "video_url", "video_url": {"url": url}}]

    def answer(self, visuals: Sequence[list[dict[str, Any]]], questions: Sequence[str]) -> list[str | Unanswered]:
        """One greedy reply per (visual parts, question), ``workers`` requests at a time."""
        with ThreadPoolExecutor(max_workers=self.config.workers) as pool:
            return list(pool.map(self._ask, visuals, questions))

    def _ask(self, parts: list[dict[str, Any]], question: str) -> str | Unanswered:
        cfg = self.config
        request = {"model": cfg.model, "temperature": 0.0, "max_tokens": cfg.max_new_tokens,
                   "messages": [{"role": "user", "content": [*parts, {"type": "text", "text": question}]}]}
        try:
            return complete_with_retries(self._client, request, max_attempts=cfg.max_attempts,
                                         backoff_s=cfg.backoff_s, max_backoff_s=cfg.max_backoff_s).strip()
        except RequestRefusedError as err:
            return Unanswered(f"endpoint refused the request: {err}")
        except JudgeCallError as err:
            raise EndpointUnavailableError(f"{err}; rerun to resume (answered questions are kept)") from err


def _jpeg_data_url(frame: Any) -> str:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=95)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
