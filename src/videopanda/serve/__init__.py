"""An OpenAI-compatible chat server (``/v1/chat/completions``, ``/v1/models``) for a local model.

protocol.py (request fields, response/chunk bodies, error objects), messages.py
(content parts -> turns + one visual), media.py (URLs -> files, the media-root
sandbox, download limits), models.py (Video-Panda or a plain LLM on the one
inference path of ``inference``), batching.py (dynamic batching), app.py
(routes, streaming, auth), limits.py (body size), server.py (listening).
"""

from videopanda.serve.app import create_app
from videopanda.serve.config import ServeConfig
from videopanda.serve.media import MediaPolicy
from videopanda.serve.models import load_served_model

__all__ = ["MediaPolicy", "ServeConfig", "create_app", "load_served_model"]
