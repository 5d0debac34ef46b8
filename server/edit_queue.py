"""The server's edits, applied one thread in arrival order, with group commit.

A store takes one writer at a time, so concurrent edits wait for each other whatever we do.
What we can choose is what each one waits for: here, edits that queue up while a transaction
runs are applied together in the next one, each in its own savepoint (`store.apply_edits`).
They share one writer-lock turn, one BEGIN and one COMMIT, which with 8 busy proofreaders
was about half the cost of an edit. An edit that fails is rolled back alone.
"""
from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from sqlalchemy.orm import Session

from db import store
from volumes.errors import UnavailableError

LOG = logging.getLogger(__name__)

MAX_EDITS_PER_TRANSACTION = 32  # bounds how long the first edit of a group waits for the last


class EditQueue:
    """`submit(edit)` -> Future of the edit's result, set once its transaction has committed."""

    def __init__(self, target: store.Store, after_commit: Callable[[], None] = lambda: None,
                 max_batch: int = MAX_EDITS_PER_TRANSACTION):
        """`after_commit`: called on the queue's thread after each transaction that wrote (must not raise)."""
        self.store, self.after_commit, self.max_batch = target, after_commit, max_batch
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="connectome-edits", daemon=True)
        self._closed = False
        self._thread.start()

    def submit(self, edit: Callable[[Session], Any]) -> Future:
        """Queue `edit(session)`; it runs after every edit submitted before it."""
        if self._closed:
            raise UnavailableError("the server is shutting down; the edit was not applied")
        future: Future = Future()
        self._queue.put((edit, future))
        return future

    def close(self, timeout_s: float = 5.0) -> None:
        """Finish the edits already queued, then stop the thread."""
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout=timeout_s)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # stop after this batch
                    break
                batch.append(item)
            self._apply([edit for edit, _ in batch], [future for _, future in batch])

    def _apply(self, edits: list[Callable[[Session], Any]], futures: list[Future]) -> None:
        live = [(edit, future) for edit, future in zip(edits, futures) if future.set_running_or_notify_cancel()]
        if not live:
            return
        try:
            outcomes = store.apply_edits(self.store, [edit for edit, _ in live])
        except Exception as exc:  # noqa: BLE001 (the transaction failed: every edit in it failed)
            LOG.warning("a group of %d edits failed to commit: %s: %s", len(live), type(exc).__name__, exc)
            for _, future in live:
                future.set_exception(exc)
            return
        self.after_commit()
        for (_, future), outcome in zip(live, outcomes):
            if isinstance(outcome, Exception):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
