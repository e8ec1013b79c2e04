"""An OpenAI-compatible chat server (``/v1/chat/completions``, ``/v1/models``) for a local model.

Two kinds of model:
- a plain chat LLM (``ChatLLM``, SmolLM2 by default), e.g. to run the judge locally;
- a Video-Panda model directory: a request carries a video either as a message
  content part ``{"type": "video_url", "video_url": {"url": "file:///abs/path.mp4"}}``
  or as a top-level ``"video": "/abs/path.mp4"`` field; the video is a file on the
  server's disk. The system message is ignored (the model's template has its own).

Decoding is always greedy (temperature is accepted and ignored); ``max_tokens``
(or ``max_completion_tokens``) bounds the reply. One request generates at a time.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict

from videopanda.data.conversation import Turn
from videopanda.data.decode import VideoDecodeError
from videopanda.eval.predict import ChatLLM, GenerationConfig, VideoPandaPredictor

logger = logging.getLogger(__name__)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # seed, stream=False, ... are accepted
    model: str | None = None
    messages: list[ChatMessage]
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    video: str | None = None


class ChatModel(Protocol):
    model_id: str

    def reply(self, messages: list[dict[str, str]], video: Path | None, max_tokens: int) -> str: ...


class LLMChatModel:
    def __init__(self, llm: ChatLLM) -> None:
        self.llm = llm
        self.model_id = llm.model_id

    def reply(self, messages: list[dict[str, str]], video: Path | None, max_tokens: int) -> str:
        if video is not None:
            raise ValueError(f"model {self.model_id!r} is a plain LLM: it takes no video")
        return self.llm.reply(messages, max_tokens)


class VideoPandaChatModel:
    def __init__(self, predictor: VideoPandaPredictor, model_id: str) -> None:
        self.predictor = predictor
        self.model_id = model_id

    def reply(self, messages: list[dict[str, str]], video: Path | None, max_tokens: int) -> str:
        """The video (if any) goes with the first user turn; earlier turns are the history."""
        turns = [Turn(m["role"], m["content"]) for m in messages if m["role"] in ("user", "assistant")]
        if not turns or turns[-1].role != "user":
            raise ValueError("the last message must be the user's")
        visuals = None if video is None else self.predictor.load_video(video)
        return self.predictor.answer([visuals], [turns[-1].text], [turns[:-1]], max_new_tokens=max_tokens)[0]


def video_from_request(request: ChatRequest) -> Path | None:
    """The request's video file: a ``video_url`` content part or the top-level ``video`` field."""
    urls = [request.video] if request.video else []
    for message in request.messages:
        if isinstance(message.content, list):
            urls += [p["video_url"]["url"] for p in message.content if p.get("type") == "video_url"]
    if len(urls) > 1:
        raise ValueError(f"one video per request, got {len(urls)}")
    if not urls:
        return None
    parsed = urlparse(urls[0])
    if parsed.scheme not in ("", "file"):
        raise ValueError(f"video URL {urls[0]!r}: only local files (file:// or a path) are supported")
    return Path(unquote(parsed.path) if parsed.scheme == "file" else urls[0])


def message_text(message: ChatMessage) -> str:
    if isinstance(message.content, list):
        return "\n".join(p.get("text", "") for p in message.content if p.get("type") == "text")
    return message.content or ""


def create_app(chat_model: ChatModel, default_max_tokens: int = 512) -> FastAPI:
    """The FastAPI app serving ``chat_model``."""
    app = FastAPI(title="videopanda serve")
    lock = threading.Lock()

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": chat_model.model_id, "object": "model", "owned_by": "videopanda"}]}

    @app.post("/v1/chat/completions")
    def chat_completions(request: ChatRequest) -> dict[str, Any]:
        if request.model_extra and request.model_extra.get("stream"):
            raise HTTPException(400, "streaming is not supported")
        max_tokens = request.max_completion_tokens or request.max_tokens or default_max_tokens
        try:
            video = video_from_request(request)
            messages = [{"role": m.role, "content": message_text(m)} for m in request.messages]
            with lock:
                text = chat_model.reply(messages, video, max_tokens)
        except (ValueError, VideoDecodeError) as err:  # VideoDecodeError is a ValueError; named for the reader
            raise HTTPException(400, str(err)) from err
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": chat_model.model_id,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        }

    return app


def load_chat_model(
    source: str | None, device: str = "cpu", dtype: str = "auto", template: str | None = None,
    num_frames: int | None = None,
) -> ChatModel:
    """A Video-Panda model directory (its config.json has model_type 'videopanda') or a plain chat LLM.

    A Video-Panda model answers with the predictor of ``eval run`` and ``ask``: ``dtype`` is the
    precision policy's (``runtime``), ``template`` None the one the model directory records,
    ``num_frames`` None its config's frames per video.
    """
    if source is not None and (Path(source) / "config.json").is_file():
        if json.loads((Path(source) / "config.json").read_text()).get("model_type") == "videopanda":
            config = GenerationConfig(template=template, batch_size=1, num_frames=num_frames)
            predictor = VideoPandaPredictor.from_pretrained(source, config, device=device, dtype=dtype)
            return VideoPandaChatModel(predictor, Path(source).name)
    return LLMChatModel(ChatLLM.load(source))


def serve(chat_model: ChatModel, host: str = "127.0.0.1", port: int = 8000) -> None:
    import uvicorn

    logger.info("serving %s on http://%s:%d/v1", chat_model.model_id, host, port)
    uvicorn.run(create_app(chat_model), host=host, port=port, log_level="warning")
