"""One thread owns the model; requests wait in a bounded queue and run in arrival order.

A single worker keeps torch's threads from fighting each other (on a small CPU several generations at
once are slower than the same ones in turn) and makes memory use independent of the request rate.
A full queue refuses at once (``QueueFull``) instead of letting latency grow without bound.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

Job = tuple[Future, Callable[..., Any], tuple[Any, ...]]


class QueueFull(RuntimeError):
    """The model's queue holds ``max_queue`` requests already."""


class ModelWorker:
    """Runs ``fn(model, *args)`` jobs one at a time on its own thread; ``submit`` returns a Future.

    A job whose Future was cancelled while it waited (its request timed out) is skipped. A job that
    has started runs to the end: a torch forward pass cannot be interrupted, and every generation is
    bounded by ``max_new_tokens``, so the worker is never stuck for long.
    """

    def __init__(self, model: Any, max_queue: int) -> None:
        if max_queue < 1:
            raise ValueError(f"max_queue must be at least 1, got {max_queue}")
        self.model = model
        self.max_queue = max_queue
        self._jobs: queue.Queue[Job | None] = queue.Queue(maxsize=max_queue)
        self._busy = threading.Event()
        self._thread = threading.Thread(target=self._run, name="llmcxr-model-worker", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        """Requests waiting plus the one running."""
        return self._jobs.qsize() + int(self._busy.is_set())

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        future: Future = Future()
        try:
            self._jobs.put_nowait((future, fn, args))
        except queue.Full:
            raise QueueFull(f"{self.max_queue} requests are already waiting for the model") from None
        return future

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, fn, args = job
            if not future.set_running_or_notify_cancel():
                continue  # its request gave up while it waited
            self._busy.set()
            try:
                future.set_result(fn(self.model, *args))
            except BaseException as err:  # the request gets the error; the worker lives on
                future.set_exception(err)
            finally:
                self._busy.clear()

    def close(self, timeout: float = 5.0) -> None:
        """Cancel what waits, let the running job finish, stop the thread."""
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job[0].cancel()
        self._jobs.put(None)
        self._thread.join(timeout)
