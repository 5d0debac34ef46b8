"""The server's edit queue: arrival order, group commit of edits that queued up, failures kept apart."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from db import store as S
from server.edit_queue import EditQueue
from volumes.errors import UnavailableError
from volumes.errors import RefusedError


@pytest.fixture
def line_store(tmp_path):
    """Supervoxels 1..12 in a row along x, each touching the next; two proofreaders."""
    labels = np.repeat(np.arange(1, 13, dtype=np.uint32), 2)[None, None, :].repeat(3, 0).repeat(3, 1)
    with S.open_store(f"sqlite:///{tmp_path / 'edits.sqlite'}") as opened:
        S.build_graph(opened, labels, (8.0, 8.0, 8.0))
        S.add_user(opened, "ana", "proofreader")
        S.add_user(opened, "bo", "proofreader")
        yield opened


def test_edits_queued_behind_a_transaction_share_the_next_one(line_store, monkeypatch):
    batches: list[int] = []
    real_apply = S.apply_edits

    def counting_apply(target, edits):
        batches.append(len(edits))
        return real_apply(target, edits)

    monkeypatch.setattr(S, "apply_edits", counting_apply)
    commits = []
    queue = EditQueue(line_store, after_commit=lambda: commits.append(len(batches)))
    started, release = threading.Event(), threading.Event()
    try:
        def slow_first(session):
            started.set()
            release.wait(10)
            return S.merge(line_store, 1, 2, user="ana", session=session)

        futures = [queue.submit(slow_first)]
        assert started.wait(10)
        for a in (3, 5, 7, 3, 9):  # the second 3-4 merge is refused: they are one neuron by then
            futures.append(queue.submit(lambda session, a=a: S.merge(line_store, a, a + 1, user="bo", session=session)))
        release.set()
        outcomes = []
        for future in futures:
            try:
                outcomes.append(future.result(timeout=30))
            except RefusedError as exc:
                outcomes.append(exc)
    finally:
        queue.close()
    assert batches == [1, 5] and commits == [1, 2]  # one transaction for the five that waited
    refused = outcomes.pop(4)
    assert isinstance(refused, RefusedError) and "already in one neuron" in str(refused)
    assert [result.edit_id for result in outcomes] == sorted(result.edit_id for result in outcomes)  # arrival order
    assert [(r.operation, r.user) for r in S.history(line_store)] == [("merge", "ana")] + [("merge", "bo")] * 4
    roots = S.roots_of(line_store, range(1, 13))
    assert roots[9] == roots[10] != roots[11] and len(set(roots.values())) == 12 - 5


def test_a_failed_transaction_fails_every_edit_in_it(line_store, monkeypatch):
    def broken_apply(target, edits):
        raise OSError("disk full")

    monkeypatch.setattr(S, "apply_edits", broken_apply)
    queue = EditQueue(line_store)
    try:
        future = queue.submit(lambda session: S.merge(line_store, 1, 2, user="ana", session=session))
        with pytest.raises(OSError, match="disk full"):
            future.result(timeout=10)
    finally:
        queue.close()
    assert S.history(line_store) == []


def test_an_edit_after_close_is_refused_and_the_queued_ones_are_applied(line_store):
    queue = EditQueue(line_store)
    queued = queue.submit(lambda session: S.merge(line_store, 1, 2, user="ana", session=session))
    queue.close()
    assert queued.result(timeout=10).operation == "merge"
    with pytest.raises(UnavailableError, match="shutting down"):
        queue.submit(lambda session: S.merge(line_store, 3, 4, user="ana", session=session))
    assert [(r.operation, r.user) for r in S.history(line_store)] == [("merge", "ana")]
