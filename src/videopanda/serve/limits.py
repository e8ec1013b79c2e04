"""A request-body size limit, enforced before the app reads the body (declared or chunked)."""

from __future__ import annotations

import json

from videopanda.serve.protocol import error_body


class BodySizeLimit:
    """ASGI middleware: a body over ``max_bytes`` is answered 413 and never reaches the app.

    The body is read here (at most ``max_bytes``) and replayed to the app, so a
    chunked body without Content-Length is bounded too.
    """

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(send)
            return
        messages, size = [], 0
        while True:
            message = await receive()
            messages.append(message)
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await self._refuse(send)
                return
            if message["type"] != "http.request" or not message.get("more_body"):
                break

        async def replay():
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send) -> None:
        body = json.dumps(error_body(f"request body exceeds this server's limit of {self.max_bytes} bytes",
                                     "invalid_request_error", "request_too_large")).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
