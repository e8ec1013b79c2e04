"""transformers' processor and video-processor mixin tests that fail or skip here, each with its reason.

``tests/test_transformers_processor_suite.py`` fails on any failure or skip not listed (``Class::test``).
"""

from __future__ import annotations

EXCEPTIONS: dict[str, str] = {}
