from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from typing import Any

import numpy as np
from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from db.connection import placeholders, read_session, run_sql
from db.edit_log import latest_edit
from db.handle import At, Store
from db.models import Edit, Root, RootMember, Supervoxel
from db.sql import driver_records, id_chunks
from volumes.errors import InputError, NotFoundError
from volumes.ids import is_decimal


def checked_supervoxel_id(value: Any) -> int:
    if isinstance(value, bool):
        raise InputError(f"invalid supervoxel id {value!r}")
    try:
        sv = int(value)
    except (TypeError, ValueError):
        raise InputError(f"invalid supervoxel id {value!r}: expected a positive integer") from None
    if sv <= 0 or sv >= 2**63:
        raise InputError(f"invalid supervoxel id {value!r}: expected a positive 64-bit integer")
    return sv


def current_roots(session: Session, store: Store, supervoxels: Sequence[int]) -> dict[int, int]:
    """Current root of each supervoxel; InputError names unknown ones."""
    found: dict[int, int] = {}
    unique = sorted(set(supervoxels))
    for part in id_chunks(unique):
        found.update(run_sql(session.connection(), f"SELECT id, root_id FROM supervoxels WHERE dataset_id = ? "
                          f"AND id IN ({placeholders(len(part))})", (store.dataset_id, *part)))
    missing = [sv for sv in unique if sv not in found]
    if missing:
        listed = ", ".join(str(sv) for sv in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise NotFoundError(f"unknown supervoxel{'s' if len(missing) > 1 else ''} {listed} in dataset {store.dataset!r}")
    return found


def resolve_at(store: Store, at: At) -> int:
    """The edit id an `at` argument means (the latest edit for None)."""
    with read_session(store.engine) as session:
        return resolve_at_in(session, store, at)


def resolve_at_in(session: Session, store: Store, at: At) -> int:
    latest = latest_edit(session, store)
    if at is None:
        return latest
    if isinstance(at, str) and is_decimal(at.strip()):
        at = int(at.strip())
    if isinstance(at, bool):
        raise InputError(f"invalid --at {at!r}")
    if isinstance(at, int):
        if at < 0 or at > latest:
            raise InputError(f"no edit {at} in dataset {store.dataset!r} (edits run from 0, the built graph, to {latest})")
        return at
    if isinstance(at, str):
        try:
            at = datetime.fromisoformat(at.strip())
        except ValueError:
            raise InputError(f"invalid --at {at!r}: give an edit id or an ISO time like 2026-01-31T12:00:00Z") from None
    # Stored times are UTC (SQLite keeps them without an offset), so compare in UTC.
    at = at.replace(tzinfo=timezone.utc) if at.tzinfo is None else at.astimezone(timezone.utc)
    # Edits commit in id order and are stamped inside their transaction, so times increase with ids.
    return session.scalar(select(func.max(Edit.id)).where(Edit.dataset_id == store.dataset_id,
                                                          Edit.created_at <= at)) or 0


def roots_of(store: Store, supervoxels: Iterable[int], at: At = None) -> dict[int, int]:
    """Root id of each supervoxel now or as of `at`; InputError names any unknown supervoxel."""
    svs = [checked_supervoxel_id(sv) for sv in supervoxels]
    with read_session(store.engine) as session:
        current = current_roots(session, store, svs)
        edit = resolve_at_in(session, store, at)
        if at is None or edit == latest_edit(session, store):
            return {sv: current[sv] for sv in svs}
        found: dict[int, int] = {}
        unique = sorted(set(svs))
        for part in id_chunks(unique):
            found.update(session.execute(
                select(RootMember.sv_id, RootMember.root_id).join(Root, Root.id == RootMember.root_id)
                .where(RootMember.dataset_id == store.dataset_id, RootMember.sv_id.in_(part),
                       alive_at(edit))).all())
        return {sv: found[sv] for sv in svs}


def alive_at(edit: int):
    return and_(Root.created_edit <= edit, or_(Root.retired_edit.is_(None), Root.retired_edit > edit))


def root_of(store: Store, supervoxel: int, at: At = None) -> int:
    """Root id of one supervoxel now or as of `at`."""
    return roots_of(store, [supervoxel], at)[checked_supervoxel_id(supervoxel)]


def root_map(session: Session, store: Store, edit: int) -> tuple[np.ndarray, np.ndarray]:
    """(supervoxel ids sorted, their roots) of the whole dataset as of an edit."""
    if edit >= latest_edit(session, store):
        query = select(Supervoxel.id, Supervoxel.root_id).where(Supervoxel.dataset_id == store.dataset_id)
    else:
        query = (select(RootMember.sv_id, RootMember.root_id).join(Root, Root.id == RootMember.root_id)
                 .where(Root.dataset_id == store.dataset_id, alive_at(edit)))
    rows = driver_records(session, query, np.dtype([("sv", np.int64), ("root", np.int64)]))
    order = np.argsort(rows["sv"], kind="stable")
    return rows["sv"][order], rows["root"][order]


def supervoxels_of(store: Store, root: int) -> list[int]:
    """The supervoxels of a root (current or retired; a root's set never changes)."""
    with read_session(store.engine) as session:
        if session.scalar(select(Root.id).where(Root.id == int(root), Root.dataset_id == store.dataset_id)) is None:
            raise NotFoundError(f"unknown root {root} in dataset {store.dataset!r}")
        return sorted(session.execute(select(RootMember.sv_id).where(RootMember.root_id == int(root))).scalars().all())


def equivalence_groups(store: Store, at: At = None) -> list[list[int]]:
    """Supervoxel id lists, one per neuron with more than one supervoxel (Neuroglancer equivalences)."""
    with read_session(store.engine) as session:
        svs, roots = root_map(session, store, resolve_at_in(session, store, at))
    order = np.argsort(roots, kind="stable")
    svs, roots = svs[order], roots[order]
    starts = np.flatnonzero(np.r_[True, roots[1:] != roots[:-1]])
    groups = [group.tolist() for group in np.split(svs, starts[1:]) if len(group) > 1]
    return sorted(groups, key=lambda g: g[0])
