"""The FastAPI app: ``/v1/chat/completions`` (plain or streamed), ``/v1/models``, OpenAI error objects.

A request is checked (fields, messages, media, bounds) and its media decoded
in a worker thread of the request; only then does it join the dynamic
batcher, so every bad input is a 4xx before any reply, even a streamed one.
A streamed reply is server-sent events in the OpenAI chunk format: a role
chunk, the text as it is generated, a chunk with the finish reason, a usage
chunk when ``stream_options.include_usage`` is set, then ``[DONE]``.
A client that leaves (a dropped stream, a closed connection) cancels its
generation, which then ends within a token (``batching``).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from videopanda.inference import GenerationRequest, GenerationResult
from videopanda.serve.batching import BatchJob, DynamicBatcher, RequestCancelled
from videopanda.serve.config import ServeConfig
from videopanda.serve.limits import BodySizeLimit
from videopanda.serve.messages import parse_chat
from videopanda.serve.models import ServedModel
from videopanda.serve.protocol import (
    APIError,
    ChatCompletionRequest,
    chunk_body,
    completion_body,
    completion_id,
    error_body,
    usage_chunk_body,
)

logger = logging.getLogger(__name__)
BATCH_SIZE_HEADER = "x-videopanda-batch-size"  # how many requests shared this reply's batch
DISCONNECT_POLL_S = 0.1  # how often a waiting (not streamed) request checks that its client is still there


def create_app(model: ServedModel, config: ServeConfig | None = None) -> FastAPI:
    """The app serving ``model`` with ``config``'s bounds (default ``ServeConfig()``); its batcher is
    ``app.state.batcher``."""
    config = config or ServeConfig()
    batcher = DynamicBatcher(model.generate, config.max_batch_size, config.max_wait_ms / 1000)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        batcher.close()

    app = FastAPI(title="videopanda serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.batcher = batcher
    app.add_middleware(BodySizeLimit, max_bytes=config.max_body_bytes)
    _install_error_handlers(app)
    authorized = Depends(_bearer_check(config.api_key))

    @app.get("/v1/models", dependencies=[authorized])
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [_model_card(model.model_id)]}

    @app.get("/v1/models/{model_id}", dependencies=[authorized])
    def model_card(model_id: str) -> dict[str, Any]:
        _check_model(model_id, model.model_id)
        return _model_card(model.model_id)

    @app.post("/v1/chat/completions", dependencies=[authorized])
    async def chat_completions(body: ChatCompletionRequest, client: Request) -> Any:
        if body.model is not None:
            _check_model(body.model, model.model_id)
        body.check_fields()
        chat = parse_chat(body, config.max_image_parts)
        max_new_tokens = body.max_new_tokens(config.default_max_tokens, config.max_tokens_limit)
        request = await run_in_threadpool(model.prepare, chat, config.media, max_new_tokens, body.stop_sequences())
        if body.stream:
            return _stream(batcher, request, model.model_id, body.include_usage())
        job = batcher.submit(request)
        result = await _result_while_connected(job, client)
        return JSONResponse(completion_body(completion_id(), model.model_id, result),
                            headers={BATCH_SIZE_HEADER: str(job.batch_size)})

    return app


def _stream(
    batcher: DynamicBatcher, request: GenerationRequest, model_id: str, include_usage: bool
) -> StreamingResponse:
    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue[str | None] = asyncio.Queue()

    def on_text(text: str) -> None:
        loop.call_soon_threadsafe(pieces.put_nowait, text)

    request.on_text = on_text
    job = batcher.submit(request)
    job.future.add_done_callback(lambda _: loop.call_soon_threadsafe(pieces.put_nowait, None))
    id = completion_id()

    async def events() -> AsyncIterator[str]:
        yield _sse(chunk_body(id, model_id, {"role": "assistant", "content": ""}))
        while (text := await pieces.get()) is not None:
            yield _sse(chunk_body(id, model_id, {"content": text}))
        try:
            result = await _result(job)
        except APIError as err:  # after the first chunk: the SDK raises on an error event
            yield _sse(err.body())
        else:
            yield _sse(chunk_body(id, model_id, {}, result.finish_reason))
            if include_usage:
                yield _sse(usage_chunk_body(id, model_id, result))
        yield "data: [DONE]\n\n"

    return _CancellingStream(events(), request.cancelled, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", BATCH_SIZE_HEADER: "streamed"})


class _CancellingStream(StreamingResponse):
    """A streamed reply that cancels its generation when it ends for any reason: a client that disconnects
    ends it at once (Starlette stops the stream), and the generation then stops within a token."""

    def __init__(self, content: AsyncIterator[str], cancel: threading.Event, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.cancel = cancel

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.cancel.set()  # after a complete reply: a no-op


def _as_api_error(err: BaseException) -> APIError:
    """A generation failure as a reply: a ValueError (bad input the checks let through) is a 400."""
    if isinstance(err, APIError):
        return err
    if isinstance(err, RequestCancelled):  # the reply reaches no one
        return APIError(400, "the request was cancelled: its client disconnected")
    if isinstance(err, ValueError):
        return APIError(400, str(err))
    logger.error("generation failed: %s", err, exc_info=err)
    return APIError(500, "internal error while generating", type="server_error")


async def _result(job: BatchJob) -> GenerationResult:
    try:
        return await asyncio.wrap_future(job.future)
    except Exception as err:  # noqa: BLE001 (every failure becomes an OpenAI error object)
        raise _as_api_error(err) from None


async def _result_while_connected(job: BatchJob, client: Request) -> GenerationResult:
    """``job``'s result; if the client disconnects first, its generation is cancelled (and ends within a token)."""
    waiting = asyncio.ensure_future(_result(job))
    while not (await asyncio.wait({waiting}, timeout=DISCONNECT_POLL_S))[0]:
        if await client.is_disconnected():
            job.request.cancelled.set()
    return await waiting


def _sse(body: dict[str, Any]) -> str:
    return f"data: {json.dumps(body)}\n\n"


def _model_card(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": "videopanda"}


def _check_model(requested: str, served: str) -> None:
    if requested != served:
        name = requested if len(requested) <= 80 else f"{requested[:77]}..."
        raise APIError(404, f"The model {name!r} does not exist: this server serves {served!r}", "model",
                       "model_not_found")


def _bearer_check(api_key: str | None):
    async def check(request: Request) -> None:
        if api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
            raise APIError(401, "invalid or missing API key: send 'Authorization: Bearer <key>'", None,
                           "invalid_api_key")

    return check


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(_: Request, err: APIError) -> JSONResponse:
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(_: Request, err: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}"
                    for e in err.errors()[:3]]  # messages only: an error's "input" may be a base64 payload
        return JSONResponse(error_body("; ".join(problems), "invalid_request_error"), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        message = f"{request.method} {request.url.path}: {err.detail}"
        return JSONResponse(error_body(message, "invalid_request_error"), status_code=err.status_code)

    @app.exception_handler(Exception)
    async def internal_error(_: Request, err: Exception) -> JSONResponse:
        logger.error("unexpected error: %s", err, exc_info=err)
        return JSONResponse(error_body("internal server error", "server_error"), status_code=500)
