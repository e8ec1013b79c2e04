"""JSON-lines files that survive crashes: appends are flushed line by line, a torn last line is ignored."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from videopanda.files import atomic_write_text

logger = logging.getLogger(__name__)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """All complete records of ``path`` ([] if absent); a torn final line (a crash mid-write) is skipped.

    Every line must be a JSON object: anything else is a ``ValueError`` naming ``path:line``."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if number == len(lines):
                logger.warning("%s: ignoring a torn last line (%s)", path, err)
                continue
            raise ValueError(f"{path}:{number}: not a JSON line ({err})") from err
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{number}: expected a JSON object {{...}}, got {type(record).__name__} "
                             f"{line.strip()[:60]}")
        records.append(record)
    return records


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    """Write ``records`` atomically (temp file + rename; a failed write leaves the old file and no temp file)."""
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


class JsonlAppender:
    """Thread-safe line appender; each record is flushed and fsynced before ``append`` returns.

    Opening an existing file rewrites it without a torn last line first, so the
    next record starts on a fresh line.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_file():
            write_jsonl(self.path, read_jsonl(self.path))
        self._file = self.path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with self._lock:
            self._file.write(line)
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
