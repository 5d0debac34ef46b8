from __future__ import annotations

import heapq
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.connection import as_utc, placeholders, read_session, run_sql
from db.handle import Store, reading
from db.models import Edit, Root, User
from db.users import user_row
from volumes.errors import NotFoundError


@dataclass(frozen=True)
class EditRecord:
    """One row of the edit log, as `history` returns it."""

    id: int
    user: str
    time: datetime
    operation: str  # "merge", "split", "undo" or "redo"
    arguments: dict[str, Any]
    affected_roots: list[int]
    resulting_roots: list[int]
    parent_id: int | None  # the edit an undo/redo acts on
    undone: bool  # True while the latest undo/redo aimed at this edit is an undo

    def as_json(self) -> dict[str, Any]:
        """JSON-ready dict; 64-bit ids as strings so JavaScript keeps them exact."""
        arguments = {key: [str(v) for v in value] if isinstance(value, list) else value
                     for key, value in self.arguments.items()}
        return {"id": self.id, "user": self.user, "time": self.time.isoformat(), "operation": self.operation,
                "arguments": arguments, "affected_roots": [str(r) for r in self.affected_roots],
                "resulting_roots": [str(r) for r in self.resulting_roots], "parent_id": self.parent_id,
                "undone": self.undone}


def latest_children(session: Session, edit_ids: Sequence[int]) -> dict[int, tuple[int, str]]:
    """For each edit, the (id, operation) of the latest undo/redo aimed at it."""
    latest: dict[int, tuple[int, str]] = {}
    rows = session.execute(select(Edit.parent_id, Edit.id, Edit.operation).where(
        Edit.parent_id.in_(list(edit_ids))).order_by(Edit.id)).all()
    for parent, child, operation in rows:
        latest[parent] = (child, operation)
    return latest



def latest_edit_id(store: Store, session: Session | None = None) -> int:
    """Id of the latest edit of the dataset (0 before any); cheap, for servers polling for changes."""
    with reading(store, session) as session:
        return latest_edit(session, store)


def latest_edit(session: Session, store: Store) -> int:
    return session.scalar(select(func.max(Edit.id)).where(Edit.dataset_id == store.dataset_id)) or 0


LINEAGE_EDITS = 1_000  # edits listed each way by default: a neuron grown by 10^5 merges has 10^5 ancestors


def lineage(store: Store, root: int, limit: int = LINEAGE_EDITS) -> dict[str, Any]:
    """Where a root came from and what became of it.

    Returns {"root", "created_edit", "retired_edit", "ancestors", "descendants", "more_ancestors",
    "more_descendants"}: ancestors and descendants are lists of {"edit", "operation", "consumed",
    "produced"} (roots that edit retired and created), the `limit` nearest each way, ancestors
    newest first, descendants oldest first; the flags say whether the walk stopped at the limit.
    """
    with read_session(store.engine) as session:
        row = session.get(Root, int(root))
        if row is None or row.dataset_id != store.dataset_id:
            raise NotFoundError(f"unknown root {root} in dataset {store.dataset!r}")
        connection = session.connection()
        ancestors, more_before = _walk_edits(connection, [row.created_edit], backward=True, limit=limit)
        descendants, more_after = _walk_edits(connection, [row.retired_edit] if row.retired_edit else [],
                                              backward=False, limit=limit)
    return {"root": row.id, "created_edit": row.created_edit, "retired_edit": row.retired_edit,
            "ancestors": ancestors, "descendants": descendants,
            "more_ancestors": more_before, "more_descendants": more_after}


def _walk_edits(connection, start: list[int], backward: bool, limit: int) -> tuple[list[dict[str, Any]], bool]:
    """The edits reachable from `start` through consumed (backward) or produced roots, nearest first.

    A heap keeps the walk in edit order, so stopping at `limit` keeps the nearest edits; each
    step is two indexed statements on the driver (the ORM cost ten times that per edit).
    """
    seen: set[int] = set()
    frontier = [(-e if backward else e) for e in start if e]
    heapq.heapify(frontier)
    steps: list[dict[str, Any]] = []
    while frontier and len(steps) < limit:
        edit_id = abs(heapq.heappop(frontier))
        if edit_id in seen:
            continue
        seen.add(edit_id)
        [(operation, consumed, produced)] = run_sql(
            connection, "SELECT operation, affected_roots, resulting_roots FROM edits WHERE id = ?", (edit_id,))
        consumed, produced = (json.loads(v) if isinstance(v, str) else list(v) for v in (consumed, produced))
        steps.append({"edit": edit_id, "operation": operation, "consumed": consumed, "produced": produced})
        roots = consumed if backward else produced
        if roots:
            column = "created_edit" if backward else "retired_edit"
            for (next_edit,) in run_sql(connection, f"SELECT {column} FROM roots WHERE id IN ({placeholders(len(roots))})",
                                        tuple(roots)):
                if next_edit and next_edit not in seen:
                    heapq.heappush(frontier, -next_edit if backward else next_edit)
    more = any(abs(e) not in seen for e in frontier)
    return steps, more


def history(store: Store, user: str | None = None, since_edit: int = 0, limit: int | None = None,
            session: Session | None = None) -> list[EditRecord]:
    """The edit log, oldest first, optionally of one user and after `since_edit` (in `session` when given)."""
    with reading(store, session) as session:
        query = (select(Edit, User.name).join(User, User.id == Edit.user_id)
                 .where(Edit.dataset_id == store.dataset_id, Edit.id > since_edit).order_by(Edit.id))
        if user is not None:
            query = query.where(User.id == user_row(session, user).id)
        if limit is not None:
            query = query.limit(limit)
        rows = session.execute(query).all()
        latest = latest_children(session, [edit.id for edit, _ in rows])
    return [EditRecord(id=edit.id, user=name, time=as_utc(edit.created_at), operation=edit.operation,
                       arguments=dict(edit.arguments), affected_roots=list(edit.affected_roots),
                       resulting_roots=list(edit.resulting_roots), parent_id=edit.parent_id,
                       undone=latest.get(edit.id, (0, ""))[1] == "undo") for edit, name in rows]
