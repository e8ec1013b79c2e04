"""Dynamic batching: requests that arrive together share one batched ``generate``.

One worker thread owns the model. It takes the first waiting request, then
gathers more for at most ``max_wait_s`` (or until ``max_batch_size``), and
generates them as one left-padded batch, each with its own limits and stops.
A batch that fails is retried one request at a time, so a request that breaks
only itself never fails the others; a streamed request that has already sent
text gets the failure instead (a retry would send its text twice).

A request whose client left (``GenerationRequest.cancelled``) is dropped if it
is still waiting, and otherwise ends within a token of its batch (``RowMonitor``),
so it never holds the next requests back.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from videopanda.inference import FINISH_CANCELLED, GenerationRequest, GenerationResult

logger = logging.getLogger(__name__)


class RequestCancelled(Exception):
    """The request's client left before its generation began."""


@dataclass
class BatchJob:
    request: GenerationRequest
    future: Future[GenerationResult] = field(default_factory=Future)
    batch_size: int = 0  # how many requests its batch held, once generated
    streamed: bool = False  # some of its text has reached the client


class DynamicBatcher:
    def __init__(
        self, generate: Callable[[list[GenerationRequest]], list[GenerationResult]],
        max_batch_size: int = 8, max_wait_s: float = 0.01,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        self.generate = generate
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.batch_sizes: list[int] = []  # every batch generated so far
        self._queue: queue.Queue[BatchJob | None] = queue.Queue()
        self._worker = threading.Thread(target=self._run, name="videopanda-batcher", daemon=True)
        self._worker.start()

    def submit(self, request: GenerationRequest) -> BatchJob:
        job = BatchJob(request)
        if request.on_text is not None:
            send = request.on_text

            def on_text(text: str) -> None:
                job.streamed = True
                send(text)

            request.on_text = on_text
        self._queue.put(job)
        return job

    def close(self) -> None:
        self._queue.put(None)
        self._worker.join(timeout=60)

    def _run(self) -> None:
        while (batch := self._gather()) is not None:
            self._generate(batch)

    def _gather(self) -> list[BatchJob] | None:
        while (first := self._queue.get()) is not None and _dropped(first):
            pass
        if first is None:
            return None
        batch, deadline = [first], time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch_size:
            try:
                job = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if job is None:
                self._queue.put(None)  # close after this batch
                break
            if not _dropped(job):
                batch.append(job)
        return batch

    def _generate(self, batch: list[BatchJob]) -> None:
        self.batch_sizes.append(len(batch))
        try:
            results = self.generate([job.request for job in batch])
        except Exception as err:  # noqa: BLE001 (handed to the requests, never lost in this thread)
            if len(batch) == 1:
                batch[0].future.set_exception(err)
                return
            logger.warning("a batch of %d failed (%s): generating its requests one by one", len(batch), err)
            for job in batch:
                if job.streamed:
                    job.future.set_exception(err)
                else:
                    self._generate([job])
            return
        for job, result in zip(batch, results, strict=True):
            job.batch_size = len(batch)
            if result.finish_reason == FINISH_CANCELLED:
                logger.info("a request whose client left stopped after %d generated tokens", result.completion_tokens)
            job.future.set_result(result)


def _dropped(job: BatchJob) -> bool:
    """Whether ``job``'s client left while it waited: then it is answered ``RequestCancelled`` and not generated."""
    if job.request.cancelled.is_set():
        job.future.set_exception(RequestCancelled())
        return True
    return False
