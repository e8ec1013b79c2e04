"""Chat backend running a local chat model offline with transformers (SmolLM2 by default)."""

from __future__ import annotations

import threading

from videopanda.inference import ChatLLM


class LocalBackend:
    name = "local"
    seed = None  # greedy decoding: no sampling seed involved

    def __init__(self, llm: ChatLLM, max_new_tokens: int = 48) -> None:
        self.llm = llm
        self.model = llm.model_id
        self.max_new_tokens = max_new_tokens
        self._lock = threading.Lock()  # one generation at a time, whatever the thread pool

    def complete(self, system: str, user: str) -> str:
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        with self._lock:
            return self.llm.reply(messages, self.max_new_tokens)
