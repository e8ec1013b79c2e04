"""Drive a server from client threads: the one loop the serving benchmarks share."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

Job = TypeVar("Job")


def run_client_threads(clients: int, jobs: Sequence[Job], call: Callable[[Job], object]) -> tuple[float, list[float]]:
    """``jobs`` shared by ``clients`` threads, each taking the next job when its call returns.

    Returns the wall time of all jobs and each call's latency (seconds). A call's exception ends the run.
    """
    pending = iter(jobs)
    latencies: list[float] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                job = next(pending, None) if not errors else None
            if job is None:
                return
            start = time.perf_counter()
            try:
                call(job)
            except BaseException as error:  # re-raised in the caller's thread below
                with lock:
                    errors.append(error)
                return
            with lock:
                latencies.append(time.perf_counter() - start)

    threads = [threading.Thread(target=work) for _ in range(clients)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - began, latencies
