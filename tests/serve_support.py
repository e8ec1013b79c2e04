"""Helpers of the serve and demo tests: a model whose answers follow its frames, servers on 127.0.0.1."""

from __future__ import annotations

import base64
import io
import socket
import ssl
import subprocess
import sys
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO

import httpx
import numpy as np
import torch
import uvicorn
from PIL import Image


def frames_sensitive_model(source: Path, out: Path) -> Path:
    """The tiny random model of ``source`` with every weight matrix redrawn at std 0.3 (seeded).

    At the default 0.02 the tiny LLM's reply hardly depends on the visual tokens; at 0.3 a red
    and a blue square give different greedy answers, so a test can tell that frames reach the model.
    """
    from videopanda.model.llm import load_tokenizer
    from videopanda.model.modeling_videopanda import VideoPandaForCausalLM

    model = VideoPandaForCausalLM.from_pretrained(source)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if weight.dim() > 1 and "embed" not in name and "lm_head" not in name:
                weight.copy_(torch.randn(weight.shape, generator=generator) * 0.3)
    model.save_pretrained(out)
    load_tokenizer(source).save_pretrained(out)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_uvicorn(app) -> tuple[uvicorn.Server, threading.Thread, str]:
    """``app`` served by uvicorn on 127.0.0.1 in a thread; returns the server, thread and /v1 URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{port}/v1"


def start_cli_server(args: list[str], port: int, api_key: str | None = None,
                     timeout_s: float = 300, log: IO[str] | None = None) -> subprocess.Popen:
    """``videopanda serve ARGS --port PORT`` as its own process, once it answers /v1/models; its output goes to
    ``log`` (a file the test reads) or a pipe."""
    process = subprocess.Popen([sys.executable, "-m", "videopanda", "serve", *args, "--port", str(port)],
                               stdout=log or subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"videopanda serve exited: {process.stdout.read() if process.stdout else ''}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", headers=headers, timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    process.kill()
    raise RuntimeError("videopanda serve did not answer in time")


class StaticFiles:
    """A directory served by the standard library's http.server on 127.0.0.1.

    ``requested`` lists every path asked for and ``hosts`` their Host headers; ``redirects`` maps a path to a
    Location it answers with 302; ``tls``: served over TLS with that server context.
    """

    def __init__(self, directory: Path, redirects: dict[str, str] | None = None,
                 tls: ssl.SSLContext | None = None) -> None:
        self.requested: list[str] = []
        self.hosts: list[str | None] = []
        owner = self

        class Handler(SimpleHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requested.append(self.path)
                owner.hosts.append(self.headers.get("Host"))
                if self.path in (redirects or {}):
                    self.send_response(302)
                    self.send_header("Location", redirects[self.path])
                    self.end_headers()
                    return
                super().do_GET()

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(directory)))
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def png_data_url(frame: np.ndarray) -> str:
    """(H, W, 3) uint8 -> a data:image/png;base64 URL, as lmms-eval encodes frames."""
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
