"""The merge review queue: most likely merges first, one reviewer per task, answers kept, leases expire."""
from __future__ import annotations

import time

import numpy as np
import pytest
from conftest import require

from db import store as S
from db.connection import read_session
from db.models import ReviewTask
from store_testing import BACKENDS, fresh_database_url, postgres_url
from volumes.errors import ConflictError, ForbiddenError, InputError


@pytest.fixture(params=BACKENDS)
def chain(request, tmp_path):
    """Six slabs touching through faces of growing size (slab i and i+1 share a (i+1) x 4 face), 7 alone."""
    if request.param == "postgresql":
        require(postgres_url() is not None, "CONNECTOME_TEST_POSTGRES_URL is not set (eval \"$(bash .ci/services.sh)\")")
    labels = np.zeros((6, 4, 14), dtype=np.uint32)
    for i in range(6):
        labels[:, :, 2 * i:2 * i + 2] = i + 1
    for i in range(5):  # shrink the face between slab i+1 and i+2 to (i+1) rows: contacts of different areas
        labels[i + 1:, :, 2 * i + 2] = 0
    labels[0, 0, 13] = 7
    with fresh_database_url(request.param, tmp_path) as url, S.open_store(url) as store:
        S.build_graph(store, labels, (40.0, 8.0, 8.0))
        for name, role in (("ana", "proofreader"), ("bo", "proofreader"), ("vic", "viewer")):
            S.add_user(store, name, role)
        yield store


def test_tasks_come_largest_contact_first_and_answers_are_kept(chain):
    added = S.build_merge_queue(chain)
    assert added >= 5 and S.build_merge_queue(chain) == 0  # the same pairs are not queued twice
    first = S.next_task(chain, "ana")
    second = S.next_task(chain, "bo")
    assert first.priority >= second.priority and first.id != second.id
    assert S.next_task(chain, "ana").id == first.id  # ana's own lease comes back until answered
    with pytest.raises(ConflictError, match="leased to ana"):
        S.answer_task(chain, first.id, "bo", "accept")
    edit_id = S.answer_task(chain, first.id, "ana", "accept")
    assert S.root_of(chain, first.supervoxels[0]) == S.root_of(chain, first.supervoxels[1])
    assert [r.id for r in S.history(chain)] == [edit_id]
    with pytest.raises(ConflictError, match="already answered"):
        S.answer_task(chain, first.id, "ana", "reject")
    assert S.answer_task(chain, second.id, "bo", "reject") is None
    asked = {first.id, second.id}
    while (task := S.next_task(chain, "ana")) is not None:
        assert task.id not in asked, "an answered task was asked again"
        asked.add(task.id)
        S.answer_task(chain, task.id, "ana", "skip" if task.id % 2 else "reject")
        if task.id % 2:
            assert S.next_task(chain, "ana").id == task.id  # a skipped task goes back to the queue
            S.answer_task(chain, task.id, "ana", "reject")
    progress = {(row["answer"], row["user"]): row["tasks"] for row in S.queue_progress(chain) if row["state"] == "done"}
    assert progress[("accept", "ana")] == 1 and progress[("reject", "bo")] == 1
    assert sum(progress.values()) == added


def test_a_pair_joined_meanwhile_is_closed_without_asking(chain):
    S.build_merge_queue(chain)
    with read_session(chain.engine) as session:
        pairs = [(t.sv_a, t.sv_b) for t in session.query(ReviewTask).order_by(ReviewTask.priority.desc())]
    S.merge(chain, *pairs[0], user="bo")  # someone merged the top candidate by hand
    task = S.next_task(chain, "ana")
    assert task.supervoxels != pairs[0]
    answers = {row["answer"] for row in S.queue_progress(chain)}
    assert "merged" in answers


def test_an_expired_lease_goes_to_the_next_reviewer(chain):
    S.build_merge_queue(chain)
    task = S.next_task(chain, "ana", lease_s=0.05)
    time.sleep(0.1)
    assert S.next_task(chain, "bo").id == task.id
    with pytest.raises(ConflictError):
        S.answer_task(chain, task.id, "ana", "accept")


def test_review_refusals_change_nothing(chain):
    S.build_merge_queue(chain)
    task = S.next_task(chain, "ana")
    with pytest.raises(InputError, match="answer must be"):
        S.answer_task(chain, task.id, "ana", "maybe")
    with pytest.raises(InputError, match="unknown queue"):
        S.next_task(chain, "ana", queue="orphans?")
    with pytest.raises(ForbiddenError):
        S.next_task(chain, "vic")
    with pytest.raises(S.NotFoundError):
        S.answer_task(chain, 99999, "ana", "accept")
    assert S.history(chain) == [] and S.next_task(chain, "ana").id == task.id
