"""On-disk judge cache: one JSON line per successful verdict, keyed by what determines it.

The key hashes the judge model, the prompt's hash, the question, the answer
and the prediction, so a rerun (or a run resumed after a crash) asks the
judge only about items it has not answered; failures are not cached and are
retried on the next run.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

from videopanda.eval.jsonl import JsonlAppender, read_jsonl
from videopanda.eval.judge.base import QAItem, Verdict


def cache_key(model: str, prompt_hash: str, item: QAItem) -> str:
    parts = (model, prompt_hash, item.question, item.answer, item.pred, item.question2 or "", item.pred2 or "")
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


class JudgeCache:
    """``get``/``put`` verdicts by key; ``path`` None keeps it in memory only."""

    def __init__(self, path: str | Path | None = None) -> None:
        self._entries: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._appender = None
        if path is not None:
            self._entries = {r["key"]: r["verdict"] for r in read_jsonl(path)}
            self._appender = JsonlAppender(path)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str, item_id: str) -> Verdict | None:
        with self._lock:
            entry = self._entries.get(key)
        return None if entry is None else Verdict(**{**entry, "id": item_id})

    def put(self, key: str, verdict: Verdict) -> None:
        if not verdict.ok:
            return
        record = verdict.to_dict()
        with self._lock:
            self._entries[key] = record
        if self._appender is not None:
            self._appender.append({"key": key, "verdict": record})

    def close(self) -> None:
        if self._appender is not None:
            self._appender.close()
