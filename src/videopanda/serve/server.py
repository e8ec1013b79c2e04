"""Listening: the port is claimed before the model loads, so "in use" is said before anything serves."""

from __future__ import annotations

import logging
import socket

from fastapi import FastAPI

logger = logging.getLogger(__name__)


class PortInUseError(OSError):
    """The host/port cannot be listened on; the message says which and what to do."""


def bind_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (uvicorn listens on it), or ``PortInUseError``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port in TIME_WAIT, never one in use
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise PortInUseError(f"cannot listen on {host}:{port} ({err.strerror}): choose another --port "
                             "or stop what uses it") from None
    return sock


def run(app: FastAPI, sock: socket.socket, model_id: str) -> None:
    """Serve ``app`` on the bound ``sock`` until interrupted."""
    import uvicorn

    host, port = sock.getsockname()[:2]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    logger.info("serving %s on http://%s:%d/v1", model_id, host, port)
    server.run(sockets=[sock])
