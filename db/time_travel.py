from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from db.connection import placeholders, read_session, run_sql
from db.edit_log import latest_edit
from db.handle import At, Store
from db.models import Component, ComponentMember, Edit, Root, Supervoxel
from db.sql import driver_records, id_chunks, sql_records
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
        found.update(run_sql(session.connection(), "SELECT s.id, c.root_id FROM supervoxels s JOIN components c "
                             f"ON c.id = s.component_id WHERE s.dataset_id = ? AND s.id IN ({placeholders(len(part))})",
                             (store.dataset_id, *part)))
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
        found = past_roots(session, store, sorted(set(svs)), edit)
        return {sv: found[sv] for sv in svs}


# The component each supervoxel was in as of an edit, and that component's version then: the
# latest root it had by that edit (a component's versions follow one another without gaps).
_PAST_ROOTS_SQL = (
    "SELECT m.sv_id, (SELECT r.id FROM roots r WHERE r.component_id = m.component_id AND r.created_edit <= ? "
    "ORDER BY r.created_edit DESC LIMIT 1) FROM component_members m WHERE m.dataset_id = ? AND m.sv_id IN ({ids}) "
    "AND m.started_edit <= ? AND (m.ended_edit IS NULL OR m.ended_edit > ?)")


def past_roots(session: Session, store: Store, supervoxels: Sequence[int], edit: int) -> dict[int, int]:
    """Root of each (known) supervoxel as of an edit: two index seeks per supervoxel."""
    found: dict[int, int] = {}
    for part in id_chunks(supervoxels):
        found.update(run_sql(session.connection(), _PAST_ROOTS_SQL.format(ids=placeholders(len(part))),
                             (edit, store.dataset_id, *part, edit, edit)))
    return found


def root_of(store: Store, supervoxel: int, at: At = None) -> int:
    """Root id of one supervoxel now or as of `at`."""
    return roots_of(store, [supervoxel], at)[checked_supervoxel_id(supervoxel)]


def root_map(session: Session, store: Store, edit: int) -> tuple[np.ndarray, np.ndarray]:
    """(supervoxel ids sorted, their roots) of the whole dataset as of an edit: for exports, not per edit."""
    pair = np.dtype([("key", np.int64), ("value", np.int64)])
    if edit >= latest_edit(session, store):
        rows = driver_records(session, select(Supervoxel.id, Component.root_id).join(
            Component, Component.id == Supervoxel.component_id).where(Supervoxel.dataset_id == store.dataset_id), pair)
        svs, roots = rows["key"], rows["value"]
    else:
        member = ComponentMember
        rows = driver_records(session, select(member.sv_id, member.component_id).where(
            member.dataset_id == store.dataset_id, member.started_edit <= edit,
            or_(member.ended_edit.is_(None), member.ended_edit > edit)), pair)
        versions = driver_records(session, select(Root.component_id, Root.id).where(
            Root.dataset_id == store.dataset_id, alive_at(edit)), pair)
        versions.sort(order="key")
        svs = rows["key"]
        roots = versions["value"][np.searchsorted(versions["key"], rows["value"])]
    order = np.argsort(svs, kind="stable")
    return svs[order], roots[order]


def alive_at(edit: int):
    return and_(Root.created_edit <= edit, or_(Root.retired_edit.is_(None), Root.retired_edit > edit))


def supervoxels_of(store: Store, root: int) -> list[int]:
    """The supervoxels of a root (current or retired; a root's set never changes)."""
    with read_session(store.engine) as session:
        row = session.get(Root, int(root))
        if row is None or row.dataset_id != store.dataset_id:
            raise NotFoundError(f"unknown root {root} in dataset {store.dataset!r}")
        return members_of_root(session, store, row.component_id, row.created_edit, row.retired_edit is None)


def members_of_root(session: Session, store: Store, component: int, created_edit: int, current: bool) -> list[int]:
    """The supervoxels of one version of a component: its members as of the version's created edit.

    A current version reads the component's members as they are (O(members)); a past one reads
    the component's membership history (O(everything that ever joined it)).
    """
    one = np.dtype([("sv", np.int64)])
    if current:
        # One statement, so one snapshot even on PostgreSQL: nothing comes back if the version stopped
        # being current meanwhile, and the history below answers instead.
        rows = sql_records(session.connection(), "SELECT s.id FROM supervoxels s JOIN components c ON c.id = s.component_id "
                           "WHERE s.dataset_id = ? AND s.component_id = ? AND c.root_id = (SELECT r.id FROM roots r "
                           "WHERE r.component_id = ? AND r.created_edit = ?)",
                           (store.dataset_id, component, component, created_edit), one)
        if len(rows):
            return np.sort(rows["sv"]).tolist()
    rows = sql_records(session.connection(), "SELECT sv_id FROM component_members WHERE component_id = ? "
                       "AND started_edit <= ? AND (ended_edit IS NULL OR ended_edit > ?)",
                       (component, created_edit, created_edit), one)
    return np.sort(rows["sv"]).tolist()


def neuron_changes(store: Store, after_edit: int, until_edit: int) -> tuple[list[int], dict[int, list[int]]]:
    """What edits (after_edit, until_edit] did to the neurons: (roots they retired, {root: supervoxels}
    of the roots they created that are still current at until_edit).

    For followers of the agglomeration (the viewers): the cost follows the neurons the edits
    produced, not the dataset.
    """
    with read_session(store.engine) as session:
        retired = session.execute(select(Root.id).where(
            Root.dataset_id == store.dataset_id, Root.retired_edit > after_edit, Root.retired_edit <= until_edit)
        ).scalars().all()
        created = session.execute(select(Root.id, Root.component_id, Root.created_edit, Root.retired_edit).where(
            Root.dataset_id == store.dataset_id, Root.created_edit > after_edit, Root.created_edit <= until_edit,
            or_(Root.retired_edit.is_(None), Root.retired_edit > until_edit))).all()
        return sorted(retired), {root: members_of_root(session, store, component, edit, retired_edit is None)
                                 for root, component, edit, retired_edit in created}


def neurons_of_several(store: Store, at: At = None) -> dict[int, list[int]]:
    """{root: sorted supervoxels} of every neuron with more than one supervoxel, now or as of `at`."""
    with read_session(store.engine) as session:
        svs, roots = root_map(session, store, resolve_at_in(session, store, at))
    order = np.argsort(roots, kind="stable")
    svs, roots = svs[order], roots[order]
    starts = np.flatnonzero(np.r_[True, roots[1:] != roots[:-1]])
    return {int(roots[start]): group.tolist() for start, group in zip(starts, np.split(svs, starts[1:]))
            if len(group) > 1}


def equivalence_groups(store: Store, at: At = None) -> list[list[int]]:
    """Supervoxel id lists, one per neuron with more than one supervoxel (Neuroglancer equivalences)."""
    return sorted(neurons_of_several(store, at).values(), key=lambda g: g[0])


@dataclass(frozen=True)
class NeuronSummary:
    """A current neuron as a viewer needs it: its supervoxels, voxel count and bounding box (z, y, x voxels)."""

    root: int
    created_edit: int
    supervoxels: list[int]
    size_voxels: int
    bbox_zyx: tuple[int, int, int, int, int, int]  # z0, y0, x0, z1, y1, x1


def neuron_summary(store: Store, root: int) -> NeuronSummary:
    """One neuron's members and extent from one read (NotFoundError for an unknown root).

    A root names an immutable set, so the summary of a root id never goes stale; a retired root's
    summary is as of its last version.
    """
    with read_session(store.engine) as session:
        row = session.get(Root, int(root))
        if row is None or row.dataset_id != store.dataset_id:
            raise NotFoundError(f"unknown root {root} in dataset {store.dataset!r}")
        members = members_of_root(session, store, row.component_id, row.created_edit, row.retired_edit is None)
        parts = [run_sql(session.connection(), "SELECT SUM(size_voxels), MIN(bbox_z0), MIN(bbox_y0), MIN(bbox_x0), "
                         "MAX(bbox_z1), MAX(bbox_y1), MAX(bbox_x1) FROM supervoxels WHERE dataset_id = ? "
                         f"AND id IN ({placeholders(len(part))})", (store.dataset_id, *part))[0] for part in id_chunks(members)]
        found = np.array([part for part in parts if part[0] is not None], dtype=np.int64).reshape(-1, 7)
        size = int(found[:, 0].sum())
        box = tuple(int(v) for v in np.r_[found[:, 1:4].min(axis=0), found[:, 4:7].max(axis=0)]) if len(found) else (0,) * 6
        return NeuronSummary(int(root), row.created_edit, members, size, box)


def retired_among(store: Store, roots: Iterable[int]) -> set[int]:
    """Which of these root ids an edit has retired (unknown ids are left out)."""
    unique = sorted({int(root) for root in roots})
    retired: set[int] = set()
    with read_session(store.engine) as session:
        for part in id_chunks(unique):
            retired.update(row[0] for row in run_sql(
                session.connection(), f"SELECT id FROM roots WHERE dataset_id = ? AND id IN ({placeholders(len(part))}) "
                "AND retired_edit IS NOT NULL", (store.dataset_id, *part)))
    return retired


def successors(store: Store, root: int) -> list[int]:
    """The current neurons that now hold a root's supervoxels (one after a merge, the pieces after a split)."""
    return sorted(set(roots_of(store, supervoxels_of(store, root)).values()))
