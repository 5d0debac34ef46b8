"""What proofreaders say about neurons: status, cell type, name, notes, and bookmarks/to-dos at points.

An annotation is anchored to a supervoxel (and, for points, a position in nm) and records the
root its neuron had when it was set. It follows its neuron through merges and splits by that
anchor: the neuron an annotation belongs to is whichever neuron holds the anchor now (or as of
`at`). When that neuron's root differs from the recorded one, the annotation is flagged as set
on an earlier version (CAVE's `valid_id` idea): a "Done" set before a later edit is not trusted
blindly.

Every change is a row of the edit log (operation "annotate"), so history, time travel and
undo/redo work as for merges and splits. Rows are interval-stamped like component membership:
an annotation is alive from set_edit until ended_edit; a change never rewrites one.

Status, cell type and name hold one value per neuron: setting one ends the values of that kind
the neuron held (after a merge of two annotated neurons, both are held until someone sets it).
Notes and points accumulate.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from db.connection import as_utc, now, placeholders, read_session, run_sql, take_ids
from db.handle import At, Store, writing
from db.models import Annotation as AnnotationRow
from db.models import Edit, User
from db.edit_log import latest_edit
from db.time_travel import checked_supervoxel_id, current_roots, past_roots, resolve_at_in
from db.users import editor_of
from volumes.errors import ConflictError, InputError, NotFoundError
from volumes.workspace import DEFAULT_STATUSES

NEURON_FIELDS = ("status", "cell_type", "name")  # one value per neuron
LIST_KINDS = ("note", "bookmark", "todo")  # as many as proofreaders add
KINDS = NEURON_FIELDS + LIST_KINDS
MAX_TEXT_CHARS = 2_000


@dataclass(frozen=True)
class Annotation:
    """One annotation as of a moment, with the neuron its anchor belongs to then."""

    id: int
    kind: str
    value: str
    supervoxel: int | None
    position_nm: tuple[float, float, float] | None
    root: int | None  # the neuron holding the anchor now (or as of `at`); None for a point on no supervoxel
    set_on_root: int | None  # the neuron's root when the annotation was set
    user: str
    time: datetime
    edit_id: int

    @property
    def earlier_version(self) -> bool:
        """True when the neuron changed since the annotation was set (its root is another)."""
        return self.root is not None and self.root != self.set_on_root

    def as_json(self) -> dict[str, Any]:
        """JSON-ready; 64-bit ids as strings."""
        return {"id": self.id, "kind": self.kind, "value": self.value,
                "supervoxel": None if self.supervoxel is None else str(self.supervoxel),
                "position_nm": None if self.position_nm is None else list(self.position_nm),
                "root": None if self.root is None else str(self.root),
                "set_on_root": None if self.set_on_root is None else str(self.set_on_root),
                "earlier_version": self.earlier_version, "user": self.user, "time": self.time.isoformat(),
                "edit_id": self.edit_id}


@dataclass(frozen=True)
class AnnotationEdit:
    """What an annotation change did: its edit, the annotations it started and ended."""

    edit_id: int
    operation: str
    started: list[int]
    ended: list[int]
    affected_roots: list[int]


def checked_text(kind: str, value: Any, statuses: Sequence[str]) -> str:
    """The stripped value of an annotation of `kind`; InputError for an unknown kind or status, empty or long text."""
    if kind not in KINDS:
        raise InputError(f"unknown annotation kind {kind!r}: use one of {', '.join(KINDS)}")
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"a {kind} needs a non-empty text value")
    text = value.strip()
    if len(text) > MAX_TEXT_CHARS:
        raise InputError(f"a {kind} is at most {MAX_TEXT_CHARS} characters, not {len(text)}")
    if kind == "status" and text not in statuses:
        raise InputError(f"unknown status {text!r}: use one of {', '.join(statuses)} "
                         "(the vocabulary is [proofreading] statuses in connectome.toml)")
    return text


def set_neuron_field(store: Store, supervoxel: int, kind: str, value: str | None, user: "str | User",
                     statuses: Sequence[str] = DEFAULT_STATUSES, session: Session | None = None) -> AnnotationEdit:
    """Set (or with value None, clear) the status, cell type or name of the neuron holding `supervoxel`."""
    if kind not in NEURON_FIELDS:
        raise InputError(f"{kind!r} is not a neuron field: use one of {', '.join(NEURON_FIELDS)}")
    sv = checked_supervoxel_id(supervoxel)
    text = None if value is None else checked_text(kind, value, statuses)
    with writing(store, session) as session:
        editor = editor_of(session, user)
        root = current_roots(session, store, [sv])[sv]
        ended = _alive_of_neuron(session, store, kind, root)
        if text is None and not ended:
            raise InputError(f"neuron {root} has no {kind} to clear")
        edit_id = take_ids(session, "edit_id", 1)[0]
        _end(session, ended, edit_id)
        started = [] if text is None else [_start(session, store, edit_id, editor.id, kind, text, sv, root, None)]
        _log(session, store, edit_id, editor.id, {"action": "set", "kind": kind, "value": text, "supervoxel": sv,
                                                  "started": started}, [root])
        return AnnotationEdit(edit_id, "annotate", started, ended, [root])


def add_annotation(store: Store, kind: str, text: str, user: "str | User", supervoxel: int | None = None,
                   position_nm: Sequence[float] | None = None, session: Session | None = None) -> AnnotationEdit:
    """Add a note (on the neuron of `supervoxel`) or a bookmark / to-do (at `position_nm`, on its neuron if given)."""
    if kind not in LIST_KINDS:
        raise InputError(f"{kind!r} is not a list annotation: use one of {', '.join(LIST_KINDS)}")
    value = checked_text(kind, text, ())
    if kind == "note" and supervoxel is None:
        raise InputError("a note is on a neuron: give the supervoxel it is anchored to")
    if kind != "note" and position_nm is None:
        raise InputError(f"a {kind} is at a point: give its position z, y, x in nm")
    position = None if position_nm is None else _checked_position(position_nm)
    sv = None if supervoxel is None else checked_supervoxel_id(supervoxel)
    with writing(store, session) as session:
        editor = editor_of(session, user)
        root = None if sv is None else current_roots(session, store, [sv])[sv]
        edit_id = take_ids(session, "edit_id", 1)[0]
        started = [_start(session, store, edit_id, editor.id, kind, value, sv, root, position)]
        roots = [] if root is None else [root]
        _log(session, store, edit_id, editor.id, {"action": "add", "kind": kind, "value": value, "supervoxel": sv,
                                                  "position_nm": None if position is None else list(position),
                                                  "started": started}, roots)
        return AnnotationEdit(edit_id, "annotate", started, [], roots)


def remove_annotation(store: Store, annotation_id: int, user: "str | User",
                      session: Session | None = None) -> AnnotationEdit:
    """End one annotation (undoable like any edit)."""
    with writing(store, session) as session:
        editor = editor_of(session, user)
        row = session.get(AnnotationRow, int(annotation_id))
        if row is None or row.dataset_id != store.dataset_id:
            raise NotFoundError(f"no annotation {annotation_id} in dataset {store.dataset!r}")
        if row.ended_edit is not None:
            raise ConflictError(f"conflict: annotation {annotation_id} was already ended by edit {row.ended_edit}")
        roots = [] if row.anchor_sv is None else [current_roots(session, store, [row.anchor_sv])[row.anchor_sv]]
        edit_id = take_ids(session, "edit_id", 1)[0]
        _end(session, [row.id], edit_id)
        _log(session, store, edit_id, editor.id, {"action": "remove", "annotation": row.id}, roots)
        return AnnotationEdit(edit_id, "annotate", [], [row.id], roots)


def reverse(session: Session, store: Store, editor_id: int, target: Edit, last_child: int | None,
            operation: str) -> AnnotationEdit:
    """Undo (or redo) annotation edit `target` as a new edit: end what it started, bring back what it ended.

    A redo reverses the undo (`last_child`). ConflictError when a later edit already ended an
    annotation this would end.
    """
    reversed_edit = target.id if operation == "undo" else last_child
    started = session.execute(select(AnnotationRow).where(AnnotationRow.set_edit == reversed_edit)).scalars().all()
    ended = session.execute(select(AnnotationRow).where(AnnotationRow.ended_edit == reversed_edit)).scalars().all()
    changed = sorted({row.ended_edit for row in started if row.ended_edit is not None})
    if changed:
        raise ConflictError(f"conflict: cannot {operation} edit {target.id}: later edit(s) "
                            f"{', '.join(map(str, changed))} changed the annotations it set")
    anchors = sorted({row.anchor_sv for row in list(started) + list(ended) if row.anchor_sv is not None})
    roots = sorted(set(current_roots(session, store, anchors).values())) if anchors else []
    edit_id = take_ids(session, "edit_id", 1)[0]
    _end(session, [row.id for row in started], edit_id)
    restored = [_start(session, store, edit_id, row.user_id, row.kind, row.value, row.anchor_sv, row.anchor_root,
                       _position(row)) for row in ended]
    _log(session, store, edit_id, editor_id, {"edit": target.id}, roots, operation=operation, parent_id=target.id)
    return AnnotationEdit(edit_id, operation, restored, [row.id for row in started], roots)


def annotations(store: Store, at: At = None, root: int | None = None, kinds: Iterable[str] | None = None) -> list[Annotation]:
    """The annotations alive now or as of `at`, each with the neuron its anchor belonged to then; optionally
    only those of one neuron (`root`, as of `at`) or of some kinds. Oldest first."""
    wanted = None if kinds is None else set(kinds)
    if wanted is not None and wanted - set(KINDS):
        raise InputError(f"unknown annotation kind(s) {', '.join(sorted(wanted - set(KINDS)))}")
    with read_session(store.engine) as session:
        edit = resolve_at_in(session, store, at)
        query = (select(AnnotationRow, User.name).join(User, User.id == AnnotationRow.user_id)
                 .where(AnnotationRow.dataset_id == store.dataset_id, AnnotationRow.set_edit <= edit,
                        (AnnotationRow.ended_edit.is_(None)) | (AnnotationRow.ended_edit > edit))
                 .order_by(AnnotationRow.id))
        if wanted is not None:
            query = query.where(AnnotationRow.kind.in_(sorted(wanted)))
        rows = session.execute(query).all()
        anchors = sorted({row.anchor_sv for row, _ in rows if row.anchor_sv is not None})
        if edit >= latest_edit(session, store):
            roots_then = current_roots(session, store, anchors) if anchors else {}
        else:
            roots_then = past_roots(session, store, anchors, edit)
    found = [Annotation(id=row.id, kind=row.kind, value=row.value, supervoxel=row.anchor_sv, position_nm=_position(row),
                        root=roots_then.get(row.anchor_sv), set_on_root=row.anchor_root, user=name,
                        time=as_utc(row.created_at), edit_id=row.set_edit) for row, name in rows]
    return found if root is None else [a for a in found if a.root == int(root)]


def neuron_fields(store: Store, at: At = None) -> dict[int, dict[str, str]]:
    """{root: {"status": ..., "cell_type": ..., "name": ...}} of every annotated neuron (the latest value of
    each field when a merge left it with several)."""
    fields: dict[int, dict[str, str]] = {}
    for item in annotations(store, at, kinds=NEURON_FIELDS):
        if item.root is not None:
            fields.setdefault(item.root, {})[item.kind] = item.value
    return fields


ANNOTATION_COLUMNS = ["id", "kind", "value", "pt_supervoxel_id", "pt_root_id", "set_on_root_id", "earlier_version",
                      "pt_position", "user", "time", "edit_id"]


def annotation_table(store: Store, at: At = None) -> "pd.DataFrame":
    """The annotations as of `at` in CAVE-like columns: the anchor supervoxel and the root it belongs to then
    (0 for a point on no supervoxel), the root it was set on, position z, y, x in nm (NaN for none)."""
    rows = annotations(store, at)
    missing = [float("nan")] * 3
    return pd.DataFrame({
        "id": [a.id for a in rows], "kind": [a.kind for a in rows], "value": [a.value for a in rows],
        "pt_supervoxel_id": [a.supervoxel or 0 for a in rows], "pt_root_id": [a.root or 0 for a in rows],
        "set_on_root_id": [a.set_on_root or 0 for a in rows], "earlier_version": [a.earlier_version for a in rows],
        "pt_position": [list(a.position_nm) if a.position_nm else missing for a in rows],
        "user": [a.user for a in rows], "time": [a.time.isoformat() for a in rows],
        "edit_id": [a.edit_id for a in rows]}, columns=ANNOTATION_COLUMNS)


def _alive_of_neuron(session: Session, store: Store, kind: str, root: int) -> list[int]:
    rows = run_sql(session.connection(),
                   "SELECT a.id FROM annotations a JOIN supervoxels s ON s.dataset_id = a.dataset_id AND s.id = a.anchor_sv "
                   "JOIN components c ON c.id = s.component_id WHERE a.dataset_id = ? AND a.kind = ? "
                   "AND a.ended_edit IS NULL AND c.root_id = ?", (store.dataset_id, kind, root))
    return sorted(row[0] for row in rows)


def _log(session: Session, store: Store, edit_id: int, user_id: int, arguments: dict[str, Any], roots: list[int],
         operation: str = "annotate", parent_id: int | None = None) -> None:
    """Record the edit-log row of an annotation change; its roots are the neurons it is about (unchanged)."""
    session.connection().execute(insert(Edit), [{
        "id": edit_id, "dataset_id": store.dataset_id, "user_id": user_id, "created_at": now(), "operation": operation,
        "arguments": arguments, "affected_roots": roots, "resulting_roots": roots, "parent_id": parent_id}])


def _start(session: Session, store: Store, edit_id: int, user_id: int, kind: str, value: str, sv: int | None,
           root: int | None, position: tuple[float, float, float] | None) -> int:
    z, y, x = position if position is not None else (None, None, None)
    result = session.connection().execute(insert(AnnotationRow).values(
        dataset_id=store.dataset_id, kind=kind, value=value, anchor_sv=sv, anchor_root=root, position_z_nm=z,
        position_y_nm=y, position_x_nm=x, user_id=user_id, created_at=now(), set_edit=edit_id))
    return int(result.inserted_primary_key[0])


def _end(session: Session, ids: Sequence[int], edit_id: int) -> None:
    if ids:
        run_sql(session.connection(), f"UPDATE annotations SET ended_edit = ? WHERE id IN ({placeholders(len(ids))})",
                (edit_id, *ids))


def _position(row: AnnotationRow) -> tuple[float, float, float] | None:
    if row.position_z_nm is None:
        return None
    return (row.position_z_nm, row.position_y_nm, row.position_x_nm)


def _checked_position(position_nm: Sequence[float]) -> tuple[float, float, float]:
    try:
        z, y, x = (float(v) for v in position_nm)
    except (TypeError, ValueError):
        raise InputError(f"a position is three numbers z, y, x in nm, not {position_nm!r}") from None
    if not all(abs(v) < 1e12 for v in (z, y, x)):
        raise InputError(f"a position is three finite numbers z, y, x in nm, not {position_nm!r}")
    return z, y, x
