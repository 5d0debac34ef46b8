"""Review queues (focused proofreading): the store hands each reviewer the next question and records the answer.

The merge queue asks "are these two touching supervoxels, now in different neurons, one neuron?",
most likely and most useful first: priority is the pair's min-cut capacity (contact area x
(1 - boundary score): big contacts across weak boundaries, where an oversegmentation most often
cut one neuron) times the cube root of the smaller supervoxel's voxel count (joining two large
pieces mends more of a neuron than attaching a speck). On FIB-25 that order reaches half of the
achievable VOI reduction in 0.42 of random order's decisions, contact alone in 0.51. NeuTu's focused proofreading reported 3-5x faster proofreading
this way than unguided; `bench/review_bench.py` measures the ordering against random.

A task is leased to one reviewer at a time (with an expiry, so an abandoned one comes back); an
accepted merge is an ordinary merge in the edit log; a rejection is remembered and never asked
again; a skip returns the task to the queue. A pair an edit has joined meanwhile is closed as
"merged" without asking anyone.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.connection import as_utc, now, read_session, write_session
from db.edits import merge
from db.handle import Store, writing
from db.models import Adjacency, ReviewTask, Supervoxel, User
from db.sql import insert_tuples
from db.time_travel import current_roots, resolve_at_in, root_map
from db.users import editor_of
from volumes.errors import ConflictError, InputError, NotFoundError

QUEUES = ("merge",)
ANSWERS = ("accept", "reject", "skip")
LEASE_SECONDS = 600
DEFAULT_MERGE_TASKS = 100_000


@dataclass(frozen=True)
class Task:
    """A leased question: is `supervoxels` one neuron? (`roots`: their neurons when it was handed out;
    `position_nm`: z, y, x of the smaller supervoxel's centroid, where a viewer looks)."""

    id: int
    queue: str
    supervoxels: tuple[int, int]
    roots: tuple[int, int]
    priority: float
    lease_expires_at: datetime
    position_nm: tuple[float, float, float]

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "queue": self.queue, "supervoxels": [str(sv) for sv in self.supervoxels],
                "roots": [str(r) for r in self.roots], "priority": self.priority,
                "lease_expires_at": self.lease_expires_at.isoformat(), "position_nm": list(self.position_nm)}


def build_merge_queue(store: Store, limit: int = DEFAULT_MERGE_TASKS) -> int:
    """Add the `limit` most likely merges among adjacent pairs now in different neurons; returns how many
    were added (pairs already in the queue, answered or not, are not added again)."""
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise InputError(f"limit must be a positive number of tasks, not {limit!r}")
    with read_session(store.engine) as session:
        svs, roots = root_map(session, store, resolve_at_in(session, store, None))
        pairs = session.execute(select(Adjacency.sv_a, Adjacency.sv_b, Adjacency.contact_area_nm2,
                                       func.coalesce(Adjacency.boundary_score, 0.0))
                                .where(Adjacency.dataset_id == store.dataset_id)).all()
        sizes = dict(session.execute(select(Supervoxel.id, Supervoxel.size_voxels)
                                     .where(Supervoxel.dataset_id == store.dataset_id)).all())
        queued = set(session.execute(select(ReviewTask.sv_a, ReviewTask.sv_b).where(
            ReviewTask.dataset_id == store.dataset_id, ReviewTask.queue == "merge")).all())
    if not pairs:
        return 0
    table = np.array([(a, b, area * (1.0 - score) * min(sizes[a], sizes[b]) ** (1 / 3)) for a, b, area, score in pairs],
                     dtype=[("a", np.int64), ("b", np.int64), ("priority", np.float64)])
    root_a, root_b = roots[np.searchsorted(svs, table["a"])], roots[np.searchsorted(svs, table["b"])]
    candidates = table[root_a != root_b]
    candidates = candidates[np.argsort(-candidates["priority"], kind="stable")]
    fresh = [(int(a), int(b), float(p)) for a, b, p in candidates.tolist() if (a, b) not in queued][:limit]
    with write_session(store.engine, store.dataset_id) as session:
        insert_tuples(session.connection(), "review_tasks", ("dataset_id", "queue", "sv_a", "sv_b", "priority", "state"),
                      ((store.dataset_id, "merge", a, b, p, "open") for a, b, p in fresh))
    return len(fresh)


def next_task(store: Store, user: "str | User", queue: str = "merge", lease_s: float = LEASE_SECONDS,
              session: Session | None = None) -> Task | None:
    """Lease the next open question of `queue` to `user` (their own unexpired lease first); None when done."""
    if queue not in QUEUES:
        raise InputError(f"unknown queue {queue!r}: use one of {', '.join(QUEUES)}")
    with writing(store, session) as session:
        editor = editor_of(session, user)
        moment = now()
        task_of = select(ReviewTask).where(ReviewTask.dataset_id == store.dataset_id, ReviewTask.queue == queue)
        best = (ReviewTask.priority.desc(), ReviewTask.id)
        mine = session.scalars(task_of.where(ReviewTask.state == "leased", ReviewTask.leased_by == editor.id,
                                             ReviewTask.lease_expires_at >= moment).order_by(*best).limit(1)).first()
        while True:
            # Two index walks (open ones, expired leases), the better of their heads: one OR would scan the queue.
            heads = [mine] if mine is not None else [
                session.scalars(task_of.where(ReviewTask.state == "open").order_by(*best).limit(1)).first(),
                session.scalars(task_of.where(ReviewTask.state == "leased", ReviewTask.lease_expires_at < moment)
                                .order_by(*best).limit(1)).first()]
            heads = [head for head in heads if head is not None]
            task = min(heads, key=lambda t: (-t.priority, t.id)) if heads else None
            mine = None
            if task is None:
                return None
            roots = current_roots(session, store, [task.sv_a, task.sv_b])
            if roots[task.sv_a] == roots[task.sv_b]:  # an edit joined them meanwhile: nothing to ask
                task.state, task.answer, task.answered_at = "done", "merged", moment
                session.flush()
                continue
            task.state, task.leased_by = "leased", editor.id
            task.lease_expires_at = moment + timedelta(seconds=lease_s)
            session.flush()
            return Task(task.id, queue, (task.sv_a, task.sv_b), (roots[task.sv_a], roots[task.sv_b]), task.priority,
                        as_utc(task.lease_expires_at), _smaller_centroid(session, store, task.sv_a, task.sv_b))


def _smaller_centroid(session: Session, store: Store, a: int, b: int) -> tuple[float, float, float]:
    rows = session.execute(select(Supervoxel.size_voxels, Supervoxel.centroid_z_nm, Supervoxel.centroid_y_nm,
                                  Supervoxel.centroid_x_nm).where(Supervoxel.dataset_id == store.dataset_id,
                                                                  Supervoxel.id.in_([a, b]))).all()
    _, z, y, x = min(rows)
    return (float(z), float(y), float(x))


def answer_task(store: Store, task_id: int, user: "str | User", answer: str,
                session: Session | None = None) -> int | None:
    """Answer a task leased to `user`: accept (merge; returns the edit id), reject (never asked again) or
    skip (back to the queue). ConflictError for a task leased to someone else, expired or already answered."""
    if answer not in ANSWERS:
        raise InputError(f"answer must be one of {', '.join(ANSWERS)}, not {answer!r}")
    with writing(store, session) as session:
        editor = editor_of(session, user)
        task = session.get(ReviewTask, int(task_id))
        if task is None or task.dataset_id != store.dataset_id:
            raise NotFoundError(f"no review task {task_id} in dataset {store.dataset!r}")
        moment = now()
        if task.state == "done":
            raise ConflictError(f"conflict: task {task_id} is already answered ({task.answer})")
        if task.state != "leased" or task.leased_by != editor.id:
            holder = session.get(User, task.leased_by).name if task.leased_by else "nobody"
            raise ConflictError(f"conflict: task {task_id} is leased to {holder}, not to {editor.name}; "
                                "ask for the next task")
        if as_utc(task.lease_expires_at) < moment:
            raise ConflictError(f"conflict: your lease on task {task_id} expired; ask for the next task")
        edit_id = None
        if answer == "skip":
            task.state, task.leased_by, task.lease_expires_at = "open", None, None
        else:
            if answer == "accept":
                edit_id = merge(store, task.sv_a, task.sv_b, editor.name, session=session).edit_id
            task.state, task.answer, task.answered_by, task.answered_at = "done", answer, editor.id, moment
            task.answer_edit = edit_id
        session.flush()
        return edit_id


def queue_progress(store: Store) -> list[dict[str, Any]]:
    """Per queue and user: tasks answered (accepted, rejected); per queue: open, leased, closed as merged."""
    with read_session(store.engine) as session:
        rows = session.execute(select(ReviewTask.queue, ReviewTask.state, ReviewTask.answer, User.name, func.count())
                               .outerjoin(User, User.id == ReviewTask.answered_by)
                               .where(ReviewTask.dataset_id == store.dataset_id)
                               .group_by(ReviewTask.queue, ReviewTask.state, ReviewTask.answer, User.name)).all()
    return [{"queue": queue, "state": state, "answer": answer, "user": name, "tasks": count}
            for queue, state, answer, name, count in sorted(rows, key=lambda r: tuple(str(v) for v in r))]
