"""The proofreading store's public API: every reader and writer of proofreading state goes through here.

Model
-----
* A *supervoxel* is one segment of the FFN segmentation (its id is the label in the segmentation
  layer). The *adjacency graph* (region adjacency graph) links touching supervoxels, with the
  contact area in nm^2 and an optional boundary score in [0, 1] (1 = a clear membrane).
* A *neuron* is a connected component of the active *agglomeration edges* between supervoxels.
  Each neuron has a *root id*. A root id names one immutable set of supervoxels: any edit that
  touches a neuron retires its root id and gives the result(s) new ids, never reused; neurons an
  edit does not touch keep theirs. The root id is therefore also the neuron's *version*.
* Every write is one transaction and one row of the *edit log*. Edit ids increase in commit
  order (writers to a dataset are serialised), so "as of edit N" means "after edits 1..N";
  edit 0 is the freshly built graph. `at` arguments take an edit id (int), an ISO-8601 time
  string or a datetime (the last edit at or before that time), or None for now.
* Users have a role: "admin", "proofreader" or "viewer" (read only). Write functions take the
  acting `user` as a name or a `User`; a proofreader may undo/redo only their own edits.

Errors: `volumes.errors.InputError` for bad input (unknown supervoxel, malformed request),
`RefusedError` for valid requests the store refuses (permission, already one neuron, already
undone), and its subclass `ConflictError` when the neurons an edit saw changed since. A refused
or failed call leaves the store unchanged.

Typical use::

    from db import store
    s = store.open_store(workspace)                 # or store.open_store("postgresql+psycopg://...")
    token = store.add_user(s, "ana", "proofreader")  # shown once, stored hashed
    result = store.merge(s, 12, 34, user="ana", seen_roots=[root_a, root_b])
    store.split(s, sources=[12], sinks=[34], user="ana", preview=True)   # what would be cut
    store.undo(s, result.edit_id, user="ana")
    store.roots_of(s, [12, 34], at=result.edit_id)   # {12: root, 34: root}
    store.synapse_table(s, at="2026-01-01T12:00:00Z") # pandas DataFrame

Functions (all take the Store first):
    open_store, build_graph, add_layer, add_user, user_for_token, get_user,
    merge, merge_points, split, undo, redo,
    roots_of, root_of, supervoxels_of, equivalence_groups, lineage, latest_edit_id, resolve_at,
    history, replay,
    add_synapses, synapses_of_root, synapse_table, edge_table, neuron_table, supervoxel_at
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
from scipy.sparse import coo_matrix, csr_matrix
from scipy.sparse.csgraph import breadth_first_order, connected_components, maximum_flow
from sqlalchemy import Connection, Engine, and_, func, insert, or_, select
from sqlalchemy.orm import Session

from db.connection import (check_existing_store, ensure_dataset, make_engine, migrate, now, placeholders, read_session,
                           require_existing_database, run_sql, stop_checkpointer, take_ids, write_session)
from db.graph import region_graph
from db.models import (Adjacency, AgglomerationEdge, Dataset, Edit, Layer, Root, RootMember, Supervoxel, SynapseBlock,
                       User)
from volumes.errors import InputError, RefusedError
from volumes.ids import is_decimal

if TYPE_CHECKING:
    from volumes.workspace import Workspace

ROLES = ("admin", "proofreader", "viewer")
DEFAULT_DATASET = "default"
USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")
# Min-cut capacity of a merge between supervoxels that do not touch (no adjacency row), in nm^2:
# small, so a split cuts such manual links before real contacts.
UNTOUCHING_EDGE_CAPACITY_NM2 = 1.0
# Keeps every capacity positive, so a contact across a perfect membrane still costs something.
MINIMUM_CAPACITY_NM2 = 1e-3
INSERT_CHUNK_ROWS = 100_000

# `at` accepts an edit id, an ISO time, a datetime, or None (now).
At = int | str | datetime | None


class ConflictError(RefusedError):
    """The neurons an edit (or undo/redo) depends on changed since the caller saw them."""


@dataclass(frozen=True)
class EditResult:
    """What a committed edit (or a split preview, where `edit_id` is None) did."""

    edit_id: int | None
    operation: str
    affected_roots: list[int]
    resulting_roots: list[int]
    added_edges: list[tuple[int, int]] = field(default_factory=list)
    removed_edges: list[tuple[int, int]] = field(default_factory=list)
    # The supervoxel sets of the resulting neurons, in resulting_roots order
    # (for a split preview, in the order they would get new ids).
    groups: list[list[int]] = field(default_factory=list)


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


class Store:
    """A connection pool bound to one dataset; share it across threads, open one per process."""

    def __init__(self, engine: Engine, dataset: str, dataset_id: int):
        self.engine = engine
        self.url = engine.url.render_as_string(hide_password=True)
        self.dataset = dataset
        self.dataset_id = dataset_id

    def close(self) -> None:
        """Stop background checkpoints and dispose of the connection pool."""
        stop_checkpointer(self.engine)
        self.engine.dispose()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.url!r}, dataset={self.dataset!r})"


def open_store(target: "str | Path | Workspace", dataset: str = DEFAULT_DATASET, create: bool = True) -> Store:
    """Open (and migrate to the latest schema) the store of a workspace or SQLAlchemy URL.

    SQLite gets WAL and a busy timeout so several processes can write; PostgreSQL is the team
    backend. `dataset` selects the dataset every call on this Store works on. Only commands that
    build a workspace pass `create=True`; the others (`create=False`) refuse a store that is
    missing, emptied, not a connectome store or corrupted, naming the file, instead of silently
    starting a new, empty one.
    """
    url = _database_url(target)
    if not create:
        require_existing_database(url)
    engine = make_engine(url)
    try:
        if not create:
            check_existing_store(engine)
        migrate(engine)
        return Store(engine, dataset, ensure_dataset(engine, dataset, create))
    except BaseException:
        stop_checkpointer(engine)
        engine.dispose()
        raise


def _database_url(target: "str | Path | Workspace") -> str:
    from volumes.workspace import Workspace

    if isinstance(target, Workspace):
        return target.database_url
    if isinstance(target, str) and "://" in target:
        return target
    return Workspace(target).database_url


# ---------------------------------------------------------------- graph, layers, users

def build_graph(store: Store, labels_zyx: np.ndarray, resolution_nm: Sequence[float], image: np.ndarray | None = None,
                offset_nm: Sequence[float] = (0.0, 0.0, 0.0)) -> dict[str, int]:
    """Load supervoxels (size, bbox, centroid) and their adjacency graph from a label volume.

    `image`, when given, is a boundary map of the same shape (higher = more boundary-like,
    e.g. 1 - FFN probability, any numeric range; it is rescaled to [0, 1]). Refuses a dataset
    that already has supervoxels. Each supervoxel starts as its own neuron (as of edit 0).
    Returns counts: {"supervoxels": n, "adjacencies": m}.
    """
    graph = region_graph(labels_zyx, resolution_nm, image, offset_nm)
    dataset_id = store.dataset_id
    with write_session(store.engine, dataset_id) as session:
        if session.scalar(select(Supervoxel.id).where(Supervoxel.dataset_id == dataset_id).limit(1)) is not None:
            raise RefusedError(f"dataset {store.dataset!r} already has a supervoxel graph")
        ids = graph.ids.tolist()
        roots = take_ids(session, "root_id", len(ids))
        connection = session.connection()
        constant = [dataset_id] * len(ids)
        _insert_tuples(connection, "roots", ["id", "dataset_id", "created_edit"], zip(roots, constant, [0] * len(ids)))
        _insert_tuples(connection, "root_members", ["root_id", "sv_id", "dataset_id"], zip(roots, ids, constant))
        box = np.hstack([graph.bbox_start, graph.bbox_stop]).T.tolist()
        centroid = graph.centroid_nm.T.tolist()
        _insert_tuples(connection, "supervoxels",
                       ["dataset_id", "id", "size_voxels", "root_id", "bbox_z0", "bbox_y0", "bbox_x0", "bbox_z1",
                        "bbox_y1", "bbox_x1", "centroid_z_nm", "centroid_y_nm", "centroid_x_nm"],
                       zip(constant, ids, graph.size_voxels.tolist(), roots, *box, *centroid))
        count = len(graph.sv_a)
        scores = graph.boundary_score.tolist() if graph.boundary_score is not None else [None] * count
        _insert_tuples(connection, "adjacencies", ["dataset_id", "sv_a", "sv_b", "contact_area_nm2", "boundary_score"],
                       zip([dataset_id] * count, graph.sv_a.tolist(), graph.sv_b.tolist(),
                           graph.contact_area_nm2.tolist(), scores))
    return {"supervoxels": len(ids), "adjacencies": len(graph.sv_a)}


def add_layer(store: Store, name: str, url: str, layer_type: str, resolution_nm: Sequence[float]) -> None:
    """Record (or update) a layer of the dataset, e.g. the segmentation whose labels are the supervoxels."""
    if layer_type not in ("image", "segmentation"):
        raise InputError(f"layer type must be 'image' or 'segmentation', not {layer_type!r}")
    z, y, x = (float(v) for v in resolution_nm)
    with write_session(store.engine, store.dataset_id) as session:
        layer = session.scalar(select(Layer).where(Layer.dataset_id == store.dataset_id, Layer.name == name))
        if layer is None:
            layer = Layer(dataset_id=store.dataset_id, name=name)
            session.add(layer)
        layer.layer_type, layer.url = layer_type, url
        layer.resolution_z_nm, layer.resolution_y_nm, layer.resolution_x_nm = z, y, x


def token_digest(token: str) -> str:
    """The SHA-256 a token is stored and looked up by; the token itself is never stored."""
    return hashlib.sha256((token or "").encode()).hexdigest()


def add_user(store: Store, name: str, role: str, expires_at: datetime | None = None) -> str:
    """Create a user and return their new token (shown once; only its SHA-256 is stored)."""
    if role not in ROLES:
        raise InputError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if not USER_NAME.match(name or ""):
        raise InputError(f"invalid user name {name!r}: use letters, digits, '_', '.', '@' or '-'")
    token = secrets.token_urlsafe(32)
    with write_session(store.engine, None) as session:
        if session.scalar(select(User.id).where(User.name == name)) is not None:
            raise RefusedError(f"user {name!r} already exists")
        session.add(User(name=name, role=role, token_sha256=token_digest(token), created_at=now(),
                         token_expires_at=expires_at))
    return token


def user_for_token(store: Store, token: str) -> User:
    """The active user a token belongs to; RefusedError for an unknown, expired or revoked token."""
    digest = token_digest(token)
    with read_session(store.engine) as session:
        user = session.scalar(select(User).where(User.token_sha256 == digest))
    # The row was found by its digest; comparing the digests again in constant time keeps any
    # index or collation quirk of the database from deciding on its own.
    if user is None or not hmac.compare_digest(user.token_sha256, digest) or user.revoked_at is not None:
        raise RefusedError("unknown or revoked token")
    if user.token_expires_at is not None and _utc(user.token_expires_at) <= now():
        raise RefusedError(f"the token of {user.name!r} expired; an admin gives a new one with 'connectome user reset-token'")
    return user


def reset_token(store: Store, name: str, expires_at: datetime | None = None) -> str:
    """Give a user a new token (the old one stops working) and return it; also re-activates a removed user."""
    token = secrets.token_urlsafe(32)
    with write_session(store.engine, None) as session:
        user = _user_row(session, name)
        user.token_sha256, user.token_expires_at, user.revoked_at = token_digest(token), expires_at, None
    return token


def remove_user(store: Store, name: str) -> None:
    """Revoke a user: their token stops working; their edits, annotations and name stay in the history."""
    with write_session(store.engine, None) as session:
        user = _user_row(session, name)
        if user.revoked_at is not None:
            raise RefusedError(f"user {name!r} was already removed")
        # A fresh random digest as well, so the old token cannot match even if revoked_at were cleared.
        user.token_sha256, user.revoked_at = token_digest(secrets.token_urlsafe(32)), now()


def list_users(store: Store) -> list[User]:
    """Every user, active or removed, by name."""
    with read_session(store.engine) as session:
        return list(session.scalars(select(User).order_by(User.name)))


def get_user(store: Store, name: str) -> User:
    """The user called `name`; InputError if there is none."""
    with read_session(store.engine) as session:
        return _user_row(session, name)


def _user_row(session: Session, user: "str | User") -> User:
    name = user.name if isinstance(user, User) else user
    row = session.scalar(select(User).where(User.name == name))
    if row is None:
        raise InputError(f"unknown user {name!r} (add one with 'connectome user add NAME --role proofreader')")
    return row


class EditorRow(NamedTuple):
    id: int
    name: str
    role: str


def _editor(session: Session, user: "str | User") -> EditorRow:
    """The acting user (id, name, role), refused unless their role may change the store."""
    name = user.name if isinstance(user, User) else user
    rows = run_sql(session.connection(), "SELECT id, name, role FROM users WHERE name = ?", (name,))
    if not rows:
        raise InputError(f"unknown user {name!r} (add one with 'connectome user add NAME --role proofreader')")
    editor = EditorRow(*rows[0])
    if editor.role not in ("admin", "proofreader"):
        raise RefusedError(f"user {editor.name!r} has the {editor.role} role and cannot edit")
    return editor


# ---------------------------------------------------------------- edits

def _supervoxel_id(value: Any) -> int:
    if isinstance(value, bool):
        raise InputError(f"invalid supervoxel id {value!r}")
    try:
        sv = int(value)
    except (TypeError, ValueError):
        raise InputError(f"invalid supervoxel id {value!r}: expected a positive integer") from None
    if sv <= 0 or sv >= 2**63:
        raise InputError(f"invalid supervoxel id {value!r}: expected a positive 64-bit integer")
    return sv


def _current_roots(session: Session, store: Store, supervoxels: Sequence[int]) -> dict[int, int]:
    """Current root of each supervoxel; InputError names unknown ones."""
    found: dict[int, int] = {}
    unique = sorted(set(supervoxels))
    for start in range(0, len(unique), 10_000):
        part = unique[start:start + 10_000]
        found.update(run_sql(session.connection(), f"SELECT id, root_id FROM supervoxels WHERE dataset_id = ? "
                          f"AND id IN ({placeholders(len(part))})", (store.dataset_id, *part)))
    missing = [sv for sv in unique if sv not in found]
    if missing:
        listed = ", ".join(str(sv) for sv in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise InputError(f"unknown supervoxel{'s' if len(missing) > 1 else ''} {listed} in dataset {store.dataset!r}")
    return found


def _check_seen(roots_by_supervoxel: Mapping[int, int], seen_roots: Iterable[int] | None) -> None:
    """Refuse an edit built on a stale view: each supervoxel's current root must be one the caller saw."""
    if seen_roots is None:
        return
    seen = {int(r) for r in seen_roots}
    for sv, root in sorted(roots_by_supervoxel.items()):
        if root not in seen:
            raise ConflictError(f"conflict: supervoxel {sv} now belongs to neuron {root}, not to the neuron(s) you saw "
                                f"({', '.join(map(str, sorted(seen)))}); another edit changed it, reload and retry")


def _new_edit(session: Session, store: Store, editor: Any, operation: str, arguments: dict[str, Any],
              parent_id: int | None = None) -> dict[str, Any]:
    """The values of an edit-log row with a fresh id; inserted when the edit is complete."""
    return {"id": take_ids(session, "edit_id", 1)[0], "dataset_id": store.dataset_id, "user_id": editor.id,
            "created_at": now(), "operation": operation, "arguments": arguments, "parent_id": parent_id}


SMALL_GRAPH_EDGES = 256  # below this, a Python union-find beats scipy's per-call checks (~0.25 ms)


def _components(nodes: Sequence[int], pairs: Iterable[tuple[int, int]]) -> list[list[int]]:
    """Connected components (each sorted), ordered by smallest supervoxel id."""
    pairs = list(pairs)
    if len(pairs) < SMALL_GRAPH_EDGES:
        return _small_components(nodes, pairs)
    order = np.asarray(sorted(nodes), dtype=np.int64)
    if pairs:
        ends = np.asarray(pairs, dtype=np.int64)
        a, b = np.searchsorted(order, ends[:, 0]), np.searchsorted(order, ends[:, 1])
    else:
        a = b = np.zeros(0, dtype=np.int64)
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(len(order), len(order)))
    _, labels = connected_components(graph, directed=False)
    groups: dict[int, list[int]] = defaultdict(list)
    for sv, label in zip(order.tolist(), labels.tolist()):
        groups[label].append(sv)
    return sorted(groups.values(), key=lambda group: group[0])


def _small_components(nodes: Sequence[int], pairs: Sequence[tuple[int, int]]) -> list[list[int]]:
    """`_components` for the few edges of a typical merge or undo: union-find on a dict."""
    parent = {node: node for node in nodes}

    def find(node: int) -> int:
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for a, b in pairs:
        root_a, root_b = find(a), find(b)
        if root_a != root_b:
            parent[max(root_a, root_b)] = min(root_a, root_b)
    groups: dict[int, list[int]] = defaultdict(list)
    for node in sorted(parent):
        groups[find(node)].append(node)
    return sorted(groups.values(), key=lambda group: group[0])


def _active_edges_of_roots(session: Session, store: Store, roots: Sequence[int],
                           members: Sequence[int] | None = None) -> list[tuple[int, int, int]]:
    """(edge row id, sv_a, sv_b) of the active agglomeration edges inside the given (current) neurons.

    Two indexed queries, members by root then edges by sv_a, so the cost follows the neurons'
    size, not the dataset's (a join lets the planner scan every edge of the dataset).
    """
    connection = session.connection()
    if members is None:
        roots = list(roots)
        members = [sv for (sv,) in run_sql(connection, f"SELECT id FROM supervoxels WHERE dataset_id = ? AND root_id IN "
                                                       f"({placeholders(len(roots))})", (store.dataset_id, *roots))]
    rows: list[tuple[int, int, int]] = []
    for start in range(0, len(members), 10_000):
        part = list(members[start:start + 10_000])
        rows.extend(run_sql(
            connection, f"SELECT id, sv_a, sv_b FROM agglomeration_edges WHERE dataset_id = ? AND sv_a IN ({placeholders(len(part))}) "
                        "AND removed_edit IS NULL", (store.dataset_id, *part)))
    return rows


def _apply_edge_changes(session: Session, store: Store, edit: dict[str, Any], affected_roots: Sequence[int],
                        add_pairs: Sequence[tuple[int, int]], remove_edge_ids: Sequence[int]) -> EditResult:
    """Change the agglomeration edges, then give every neuron the edit touched a new root id.

    Runs on the Core connection: this is the hot path of every edit, and the ORM's unit of work
    would cost more than the SQL itself.
    """
    connection = session.connection()
    dataset_id, edit_id = store.dataset_id, edit["id"]
    affected = sorted(set(affected_roots))
    if add_pairs:
        _insert_tuples(connection, AgglomerationEdge.__tablename__, ("dataset_id", "sv_a", "sv_b", "added_edit"),
                       ((dataset_id, a, b, edit_id) for a, b in add_pairs))
    removed: list[tuple[int, int]] = []
    if remove_edge_ids:
        ids = list(remove_edge_ids)
        removed = sorted(run_sql(
            connection, f"SELECT sv_a, sv_b FROM agglomeration_edges WHERE id IN ({placeholders(len(ids))})", tuple(ids)))
        run_sql(connection, f"UPDATE agglomeration_edges SET removed_edit = ? WHERE id IN ({placeholders(len(ids))})", (edit_id, *ids))
    roots = run_sql(connection, f"SELECT id, root_id FROM supervoxels WHERE dataset_id = ? AND root_id IN ({placeholders(len(affected))})",
                 (dataset_id, *affected))
    if remove_edge_ids:
        members = [sv for sv, _ in roots]
        pairs = [(a, b) for _, a, b in _active_edges_of_roots(session, store, affected, members)]
        groups = _components(members, pairs)
    else:
        # Only additions: neurons join whole, so the components follow from the roots alone.
        root_of_sv = dict(roots)
        joined = _components(affected, [(root_of_sv[a], root_of_sv[b]) for a, b in add_pairs])
        by_root: dict[int, list[int]] = defaultdict(list)
        for sv, root in roots:
            by_root[root].append(sv)
        groups = sorted((sorted(sv for r in group for sv in by_root[r]) for group in joined), key=lambda g: g[0])
    new_roots = take_ids(session, "root_id", len(groups))
    run_sql(connection, f"UPDATE roots SET retired_edit = ? WHERE id IN ({placeholders(len(affected))})", (edit_id, *affected))
    _insert_tuples(connection, Root.__tablename__, ("id", "dataset_id", "created_edit"),
                   ((r, dataset_id, edit_id) for r in new_roots))
    # membership rows are the bulk of an edit: plain driver executemany, not per-row Core parameters
    _insert_tuples(connection, RootMember.__tablename__, ("root_id", "sv_id", "dataset_id"),
                   ((r, sv, dataset_id) for r, group in zip(new_roots, groups) for sv in group))
    if len(groups) == 1:
        run_sql(connection, f"UPDATE supervoxels SET root_id = ? WHERE dataset_id = ? AND root_id IN ({placeholders(len(affected))})",
             (new_roots[0], dataset_id, *affected))
    else:
        run_sql(connection, "UPDATE supervoxels SET root_id = ? WHERE dataset_id = ? AND id = ?",
             [(r, dataset_id, sv) for r, group in zip(new_roots, groups) for sv in group])
    connection.execute(insert(Edit), [{**edit, "affected_roots": affected, "resulting_roots": new_roots}])
    return EditResult(edit_id=edit_id, operation=edit["operation"], affected_roots=affected, resulting_roots=new_roots,
                      added_edges=list(add_pairs), removed_edges=removed, groups=groups)


@contextmanager
def _writing(store: Store, session: Session | None) -> Iterator[Session]:
    """The caller's open write session, else a write transaction of our own (committed on success)."""
    if session is not None:
        yield session
        return
    with write_session(store.engine, store.dataset_id) as own:
        yield own


@contextmanager
def _reading(store: Store, session: Session | None) -> Iterator[Session]:
    """The caller's open session, else a read session of our own."""
    if session is not None:
        yield session
        return
    with read_session(store.engine) as own:
        yield own


T = TypeVar("T")


def apply_edits(store: Store, edits: Sequence[Callable[[Session], T]]) -> list["T | Exception"]:
    """Run several edits in one write transaction, each in a savepoint of its own: group commit.

    A server with edits queued behind one another pays one transaction (writer lock, BEGIN,
    COMMIT) for the lot instead of one each. Each edit is a callable given the session (e.g.
    `lambda s: merge(store, a, b, user, session=s)`); it sees the edits before it. An edit that
    raises is rolled back alone and its exception takes its place in the returned list; if the
    commit itself fails, that error is raised and none of them happened.
    """
    outcomes: list[T | Exception] = []
    with write_session(store.engine, store.dataset_id) as session:
        for edit in edits:
            try:
                with session.begin_nested():
                    outcomes.append(edit(session))
            except Exception as exc:  # noqa: BLE001 (the edit's own failure, handed back to its caller)
                outcomes.append(exc)
    return outcomes


def merge(store: Store, supervoxel_a: int, supervoxel_b: int, user: "str | User",
          seen_roots: Iterable[int] | None = None, session: Session | None = None) -> EditResult:
    """Join the neurons of two supervoxels by an agglomeration edge between them.

    `seen_roots`: the root ids the caller saw for these neurons; when given, the edit is refused
    with ConflictError unless both supervoxels still belong to roots in that list.
    `session`: an open write session to run in (see `apply_edits`); by default the edit is a
    transaction of its own.
    """
    a, b = sorted((_supervoxel_id(supervoxel_a), _supervoxel_id(supervoxel_b)))
    with _writing(store, session) as session:
        editor = _editor(session, user)
        roots = _current_roots(session, store, [a, b])
        _check_seen(roots, seen_roots)
        if roots[a] == roots[b]:
            raise RefusedError(f"supervoxels {a} and {b} are already in one neuron ({roots[a]}); nothing to merge")
        edit = _new_edit(session, store, editor, "merge", {"supervoxels": [a, b]})
        return _apply_edge_changes(session, store, edit, [roots[a], roots[b]], [(a, b)], [])


def merge_points(store: Store, point_a_nm: Sequence[float], point_b_nm: Sequence[float], user: "str | User",
                 seen_roots: Iterable[int] | None = None, layer: str | None = None) -> EditResult:
    """`merge` of the supervoxels under two points (z, y, x in nm) of the segmentation layer."""
    return merge(store, supervoxel_at(store, point_a_nm, layer), supervoxel_at(store, point_b_nm, layer), user,
                 seen_roots)


def _split_plan(session: Session, store: Store, sources: list[int], sinks: list[int],
                seen_roots: Iterable[int] | None) -> tuple[int, list[int], list[list[int]]]:
    """(root, ids of the edge rows to remove, resulting supervoxel groups) of a minimum-cut split."""
    if not sources or not sinks:
        raise InputError("a split needs at least one source and one sink supervoxel")
    both = sorted(set(sources) & set(sinks))
    if both:
        raise InputError(f"supervoxel{'s' if len(both) > 1 else ''} {', '.join(map(str, both))} "
                         "cannot be both a source and a sink")
    roots = _current_roots(session, store, sources + sinks)
    _check_seen(roots, seen_roots)
    distinct = sorted(set(roots.values()))
    if len(distinct) > 1:
        listed = "; ".join(f"{sv} -> {roots[sv]}" for sv in sorted(roots))
        raise RefusedError(f"sources and sinks must be in one neuron, but they are in {len(distinct)} ({listed})")
    root = distinct[0]
    members = session.connection().execute(select(Supervoxel.id).where(
        Supervoxel.dataset_id == store.dataset_id, Supervoxel.root_id == root)).scalars().all()
    edges = _active_edges_of_roots(session, store, [root], members)
    contacts = _contact(session, store, edges)
    rows = [(row_id, a, b, *contacts.get((a, b), (None, None))) for row_id, a, b in edges]
    cut_rows = _minimum_cut(rows, sources, sinks)
    cut_ids = {row_id for row_id, _, _ in cut_rows}
    groups = _components(members, [(a, b) for row_id, a, b, _, _ in rows if row_id not in cut_ids])
    for group in groups:
        members_of_group = set(group)
        if members_of_group & set(sources) and members_of_group & set(sinks):
            raise RefusedError("no cut separates these sources from these sinks")
    return root, sorted(cut_ids), groups


def _contact(session: Session, store: Store, edges: Sequence[tuple[int, int, int]]) -> dict[tuple[int, int], tuple]:
    """(contact area, boundary score) of each edge's supervoxel pair that touches."""
    found: dict[tuple[int, int], tuple] = {}
    firsts = sorted({a for _, a, _ in edges})
    wanted = {(a, b) for _, a, b in edges}
    for start in range(0, len(firsts), 10_000):
        for a, b, area, score in session.connection().execute(
                select(Adjacency.sv_a, Adjacency.sv_b, Adjacency.contact_area_nm2, Adjacency.boundary_score).where(
                    Adjacency.dataset_id == store.dataset_id, Adjacency.sv_a.in_(firsts[start:start + 10_000]))):
            if (a, b) in wanted:
                found[(a, b)] = (area, score)
    return found


def _minimum_cut(rows: Sequence[tuple], sources: list[int], sinks: list[int]) -> list[tuple[int, int, int]]:
    """Edge rows (id, sv_a, sv_b) of a minimum cut; capacity = contact area x (1 - boundary score).

    scipy's maximum_flow (compiled, integer capacities) on the neuron's graph plus a super source
    and sink; the cut is the set of edges leaving what the source still reaches in the residual graph.
    """
    nodes = sorted({sv for _, a, b, _, _ in rows for sv in (a, b)} | set(sources) | set(sinks))
    index = {sv: i for i, sv in enumerate(nodes)}
    source, sink = len(nodes), len(nodes) + 1
    capacity = np.array([UNTOUCHING_EDGE_CAPACITY_NM2 if area is None else area * (1.0 - (score or 0.0))
                         for _, _, _, area, score in rows], dtype=np.float64)
    capacity = np.maximum(capacity, MINIMUM_CAPACITY_NM2)
    # Integer capacities for scipy: scaled so that even all of them together stay within int32.
    scaled = np.maximum(1, np.floor(capacity * (1e9 / (capacity.sum() + 1.0)))).astype(np.int64)
    infinite = int(scaled.sum()) + 1
    a = np.array([index[row[1]] for row in rows], dtype=np.int32)
    b = np.array([index[row[2]] for row in rows], dtype=np.int32)
    seeds_out = np.array([index[sv] for sv in sources], dtype=np.int32)
    seeds_in = np.array([index[sv] for sv in sinks], dtype=np.int32)
    tails = np.concatenate([a, b, np.full(len(seeds_out), source), seeds_in]).astype(np.int32)
    heads = np.concatenate([b, a, seeds_out, np.full(len(seeds_in), sink)]).astype(np.int32)
    weights = np.concatenate([scaled, scaled, np.full(len(seeds_out) + len(seeds_in), infinite)]).astype(np.int32)
    graph = csr_matrix((weights, (tails, heads)), shape=(len(nodes) + 2, len(nodes) + 2))
    flow = maximum_flow(graph, source, sink).flow
    residual = (graph - flow).tocsr()
    residual.data[residual.data < 0] = 0
    residual.eliminate_zeros()
    reached = np.zeros(len(nodes) + 2, dtype=bool)
    reached[breadth_first_order(residual, source, directed=True, return_predecessors=False)] = True
    return sorted({(row[0], row[1], row[2]) for row, i, j in zip(rows, a, b) if reached[i] != reached[j]})


def split(store: Store, sources: Iterable[int], sinks: Iterable[int], user: "str | User",
          preview: bool = False, seen_roots: Iterable[int] | None = None, session: Session | None = None) -> EditResult:
    """Separate sources from sinks (all in one neuron) by a minimum cut of its agglomeration edges.

    Capacities come from the adjacency graph: contact area times (1 - boundary score), so the
    cut prefers small contacts across strong membranes. With `preview` nothing is written and
    the result lists the edges that would be removed and the resulting supervoxel groups.
    `session`: as for `merge`.
    """
    sources = sorted({_supervoxel_id(sv) for sv in sources})
    sinks = sorted({_supervoxel_id(sv) for sv in sinks})
    if preview:
        with _reading(store, session) as session:
            _user_row(session, user)
            root, cut_ids, groups = _split_plan(session, store, sources, sinks, seen_roots)
            removed = session.execute(select(AgglomerationEdge.sv_a, AgglomerationEdge.sv_b).where(
                AgglomerationEdge.id.in_(cut_ids))).all()
        return EditResult(edit_id=None, operation="split", affected_roots=[root], resulting_roots=[],
                          removed_edges=sorted(removed), groups=groups)
    with _writing(store, session) as session:
        editor = _editor(session, user)
        root, cut_ids, _ = _split_plan(session, store, sources, sinks, seen_roots)
        edit = _new_edit(session, store, editor, "split", {"sources": sources, "sinks": sinks})
        return _apply_edge_changes(session, store, edit, [root], [], cut_ids)


def undo(store: Store, edit_id: int, user: "str | User", seen_roots: Iterable[int] | None = None,
         session: Session | None = None) -> EditResult:
    """Reverse an edit's edge changes as a new edit; ConflictError if a later edit changed those edges.

    Only merges and splits are undone or redone; a proofreader may undo only their own edits.
    `session`: as for `merge`.
    """
    return _undo_or_redo(store, edit_id, user, seen_roots, "undo", session)


def redo(store: Store, edit_id: int, user: "str | User", seen_roots: Iterable[int] | None = None,
         session: Session | None = None) -> EditResult:
    """Re-apply an undone edit's edge changes as a new edit; ConflictError if those edges changed since."""
    return _undo_or_redo(store, edit_id, user, seen_roots, "redo", session)


def _undo_or_redo(store: Store, edit_id: int, user: "str | User", seen_roots: Iterable[int] | None,
                  operation: str, session: Session | None) -> EditResult:
    edit_id = _edit_id(edit_id)
    with _writing(store, session) as session:
        editor = _editor(session, user)
        target = session.get(Edit, edit_id)
        if target is None or target.dataset_id != store.dataset_id:
            raise InputError(f"no edit {edit_id} in dataset {store.dataset!r}")
        if target.operation not in ("merge", "split"):
            instead = "redo" if target.operation == "undo" else "undo"
            raise InputError(f"edit {edit_id} is itself an {target.operation} of edit {target.parent_id}; "
                             f"{instead} edit {target.parent_id} instead")
        if editor.role != "admin" and target.user_id != editor.id:
            raise RefusedError(f"edit {edit_id} was made by another user; a proofreader may {operation} only their own edits")
        last = _latest_children(session, [edit_id]).get(edit_id)
        undone = last is not None and last[1] == "undo"
        if operation == "undo" and undone:
            raise RefusedError(f"edit {edit_id} is already undone (by edit {last[0]}); redo it instead")
        if operation == "redo" and not undone:
            raise RefusedError(f"edit {edit_id} is not undone, so there is nothing to redo")
        added, removed, active, later = _edge_history(session, store, edit_id)
        to_add, to_remove = (removed, added) if operation == "undo" else (added, removed)
        clashes = sorted([pair for pair in to_remove if pair not in active] + [pair for pair in to_add if pair in active])
        if clashes:
            editors = sorted({e for pair in clashes for e in later.get(pair, ())})
            raise ConflictError(f"conflict: cannot {operation} edit {edit_id}: later edit(s) "
                                f"{', '.join(map(str, editors))} changed the link(s) "
                                f"{', '.join(f'{a}-{b}' for a, b in clashes[:5])} it depends on")
        roots = _current_roots(session, store, [sv for pair in to_add + to_remove for sv in pair])
        _check_seen(roots, seen_roots)
        edit = _new_edit(session, store, editor, operation, {"edit": edit_id}, parent_id=edit_id)
        return _apply_edge_changes(session, store, edit, list(roots.values()), to_add,
                                   [active[pair] for pair in to_remove])


def _edit_id(value: Any) -> int:
    try:
        edit_id = int(value)
    except (TypeError, ValueError):
        raise InputError(f"invalid edit id {value!r}: expected a positive integer") from None
    if edit_id <= 0 or isinstance(value, bool):
        raise InputError(f"invalid edit id {value!r}: expected a positive integer")
    return edit_id


def _edge_history(session: Session, store: Store, edit_id: int):
    """Pairs the edit added and removed, the active edge row of each such pair, and later edits touching each."""
    edge = AgglomerationEdge
    own = session.execute(select(edge.sv_a, edge.sv_b, edge.added_edit, edge.removed_edit).where(
        edge.dataset_id == store.dataset_id, or_(edge.added_edit == edit_id, edge.removed_edit == edit_id))).all()
    added = sorted({(a, b) for a, b, added_by, _ in own if added_by == edit_id})
    removed = sorted({(a, b) for a, b, _, removed_by in own if removed_by == edit_id})
    pairs = set(added) | set(removed)
    rows = session.execute(select(edge.id, edge.sv_a, edge.sv_b, edge.added_edit, edge.removed_edit).where(
        edge.dataset_id == store.dataset_id, edge.sv_a.in_(sorted({a for a, _ in pairs})))).all()
    active: dict[tuple[int, int], int] = {}
    later: dict[tuple[int, int], set[int]] = defaultdict(set)
    for row_id, a, b, added_by, removed_by in rows:
        if (a, b) not in pairs:
            continue
        if removed_by is None:
            active[(a, b)] = row_id
        later[(a, b)].update(e for e in (added_by, removed_by) if e is not None and e > edit_id)
    return added, removed, active, later


def _latest_children(session: Session, edit_ids: Sequence[int]) -> dict[int, tuple[int, str]]:
    """For each edit, the (id, operation) of the latest undo/redo aimed at it."""
    latest: dict[int, tuple[int, str]] = {}
    rows = session.execute(select(Edit.parent_id, Edit.id, Edit.operation).where(
        Edit.parent_id.in_(list(edit_ids))).order_by(Edit.id)).all()
    for parent, child, operation in rows:
        latest[parent] = (child, operation)
    return latest


# ---------------------------------------------------------------- roots and time travel

def latest_edit_id(store: Store, session: Session | None = None) -> int:
    """Id of the latest edit of the dataset (0 before any); cheap, for servers polling for changes."""
    with _reading(store, session) as session:
        return _latest_edit(session, store)


def _latest_edit(session: Session, store: Store) -> int:
    return session.scalar(select(func.max(Edit.id)).where(Edit.dataset_id == store.dataset_id)) or 0


def resolve_at(store: Store, at: At) -> int:
    """The edit id an `at` argument means (the latest edit for None)."""
    with read_session(store.engine) as session:
        return _resolve_at(session, store, at)


def _resolve_at(session: Session, store: Store, at: At) -> int:
    latest = _latest_edit(session, store)
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
    svs = [_supervoxel_id(sv) for sv in supervoxels]
    with read_session(store.engine) as session:
        current = _current_roots(session, store, svs)
        edit = _resolve_at(session, store, at)
        if at is None or edit == _latest_edit(session, store):
            return {sv: current[sv] for sv in svs}
        found: dict[int, int] = {}
        unique = sorted(set(svs))
        for start in range(0, len(unique), 10_000):
            found.update(session.execute(
                select(RootMember.sv_id, RootMember.root_id).join(Root, Root.id == RootMember.root_id)
                .where(RootMember.dataset_id == store.dataset_id, RootMember.sv_id.in_(unique[start:start + 10_000]),
                       _alive_at(edit))).all())
        return {sv: found[sv] for sv in svs}


def _alive_at(edit: int):
    return and_(Root.created_edit <= edit, or_(Root.retired_edit.is_(None), Root.retired_edit > edit))


def root_of(store: Store, supervoxel: int, at: At = None) -> int:
    """Root id of one supervoxel now or as of `at`."""
    return roots_of(store, [supervoxel], at)[_supervoxel_id(supervoxel)]


def _root_map(session: Session, store: Store, edit: int) -> tuple[np.ndarray, np.ndarray]:
    """(supervoxel ids sorted, their roots) of the whole dataset as of an edit."""
    if edit >= _latest_edit(session, store):
        query = select(Supervoxel.id, Supervoxel.root_id).where(Supervoxel.dataset_id == store.dataset_id)
    else:
        query = (select(RootMember.sv_id, RootMember.root_id).join(Root, Root.id == RootMember.root_id)
                 .where(Root.dataset_id == store.dataset_id, _alive_at(edit)))
    rows = _driver_records(session, query, np.dtype([("sv", np.int64), ("root", np.int64)]))
    order = np.argsort(rows["sv"], kind="stable")
    return rows["sv"][order], rows["root"][order]


def supervoxels_of(store: Store, root: int) -> list[int]:
    """The supervoxels of a root (current or retired; a root's set never changes)."""
    with read_session(store.engine) as session:
        if session.scalar(select(Root.id).where(Root.id == int(root), Root.dataset_id == store.dataset_id)) is None:
            raise InputError(f"unknown root {root} in dataset {store.dataset!r}")
        return sorted(session.execute(select(RootMember.sv_id).where(RootMember.root_id == int(root))).scalars().all())


def equivalence_groups(store: Store, at: At = None) -> list[list[int]]:
    """Supervoxel id lists, one per neuron with more than one supervoxel (Neuroglancer equivalences)."""
    with read_session(store.engine) as session:
        svs, roots = _root_map(session, store, _resolve_at(session, store, at))
    order = np.argsort(roots, kind="stable")
    svs, roots = svs[order], roots[order]
    starts = np.flatnonzero(np.r_[True, roots[1:] != roots[:-1]])
    groups = [group.tolist() for group in np.split(svs, starts[1:]) if len(group) > 1]
    return sorted(groups, key=lambda g: g[0])


def lineage(store: Store, root: int) -> dict[str, Any]:
    """Where a root came from and what became of it.

    Returns {"root", "created_edit", "retired_edit", "ancestors", "descendants"}: each a list of
    {"edit", "operation", "consumed", "produced"} (roots that edit retired and created), ancestors
    newest first, descendants oldest first.
    """
    with read_session(store.engine) as session:
        row = session.get(Root, int(root))
        if row is None or row.dataset_id != store.dataset_id:
            raise InputError(f"unknown root {root} in dataset {store.dataset!r}")
        ancestors = _walk_edits(session, [row.created_edit], backward=True)
        descendants = _walk_edits(session, [row.retired_edit] if row.retired_edit else [], backward=False)
    return {"root": row.id, "created_edit": row.created_edit, "retired_edit": row.retired_edit,
            "ancestors": sorted(ancestors, key=lambda e: -e["edit"]), "descendants": sorted(descendants, key=lambda e: e["edit"])}


def _walk_edits(session: Session, start: list[int], backward: bool) -> list[dict[str, Any]]:
    seen: set[int] = set()
    frontier = [e for e in start if e]
    steps = []
    while frontier:
        edit_id = frontier.pop()
        if edit_id in seen:
            continue
        seen.add(edit_id)
        edit = session.get(Edit, edit_id)
        steps.append({"edit": edit.id, "operation": edit.operation, "consumed": list(edit.affected_roots),
                      "produced": list(edit.resulting_roots)})
        roots = edit.affected_roots if backward else edit.resulting_roots
        column = Root.created_edit if backward else Root.retired_edit
        frontier.extend(e for e in session.execute(select(column).where(Root.id.in_(roots))).scalars() if e)
    return steps


def history(store: Store, user: str | None = None, since_edit: int = 0, limit: int | None = None,
            session: Session | None = None) -> list[EditRecord]:
    """The edit log, oldest first, optionally of one user and after `since_edit` (in `session` when given)."""
    with _reading(store, session) as session:
        query = (select(Edit, User.name).join(User, User.id == Edit.user_id)
                 .where(Edit.dataset_id == store.dataset_id, Edit.id > since_edit).order_by(Edit.id))
        if user is not None:
            query = query.where(User.id == _user_row(session, user).id)
        if limit is not None:
            query = query.limit(limit)
        rows = session.execute(query).all()
        latest = _latest_children(session, [edit.id for edit, _ in rows])
    return [EditRecord(id=edit.id, user=name, time=_utc(edit.created_at), operation=edit.operation,
                       arguments=dict(edit.arguments), affected_roots=list(edit.affected_roots),
                       resulting_roots=list(edit.resulting_roots), parent_id=edit.parent_id,
                       undone=latest.get(edit.id, (0, ""))[1] == "undo") for edit, name in rows]


def _utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; every stored time is UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def replay(store: Store, records: Iterable[EditRecord]) -> list[EditResult]:
    """Re-run logged edits in order (e.g. on a freshly built store); users missing there are created as admins.

    Undo/redo arguments are translated to the ids the replayed edits get.
    """
    new_ids: dict[int, int] = {}
    results = []
    with read_session(store.engine) as session:
        known = set(session.execute(select(User.name)).scalars())
    for record in records:
        if record.user not in known:
            add_user(store, record.user, "admin")
            known.add(record.user)
        arguments = record.arguments
        if record.operation == "merge":
            result = merge(store, *arguments["supervoxels"], user=record.user)
        elif record.operation == "split":
            result = split(store, arguments["sources"], arguments["sinks"], user=record.user)
        elif record.operation in ("undo", "redo"):
            target = new_ids.get(arguments["edit"], arguments["edit"])
            result = (undo if record.operation == "undo" else redo)(store, target, user=record.user)
        else:
            raise InputError(f"edit {record.id}: unknown operation {record.operation!r}")
        new_ids[record.id] = result.edit_id
        results.append(result)
    return results


# ---------------------------------------------------------------- synapses and connectivity

SYNAPSE_COLUMNS = ["id", "pre_pt_position", "post_pt_position", "ctr_pt_position", "pre_pt_supervoxel_id",
                   "post_pt_supervoxel_id", "pre_pt_root_id", "post_pt_root_id", "size", "score"]


def add_synapses(target: Any, rows: "Iterable[Mapping[str, Any]] | pd.DataFrame", dataset: str = DEFAULT_DATASET,
                 replace: bool = False) -> int:
    """Insert synapses; `target` is a Store or a SQLAlchemy Session (then the caller commits, and
    `dataset` names the dataset). With `replace`, the dataset's synapses are these alone afterwards
    (in the same transaction: readers see the old set or the new one, never neither).

    Each row: position_nm (z, y, x of the synaptic cleft centre), pre_supervoxel_id,
    post_supervoxel_id, and optionally pre_position_nm, post_position_nm (default: position_nm),
    score (default 1.0), size (voxels, default 0). A DataFrame may instead hold the position
    columns split as position_z_nm, position_y_nm, position_x_nm (likewise pre_/post_).
    Both supervoxels must exist in the dataset. Returns the number of rows inserted.
    """
    columns = _synapse_columns(rows)
    if isinstance(target, Store):
        with write_session(target.engine, target.dataset_id) as session:
            return _insert_synapses(session, target.dataset_id, columns, replace)
    if isinstance(target, Session):
        dataset_id = target.scalar(select(Dataset.id).where(Dataset.name == dataset))
        if dataset_id is None:
            raise InputError(f"no dataset {dataset!r} in the store")
        return _insert_synapses(target, dataset_id, columns, replace)
    raise TypeError(f"add_synapses needs a Store or a Session, not {type(target).__name__}")


def _synapse_columns(rows: "Iterable[Mapping[str, Any]] | pd.DataFrame") -> dict[str, np.ndarray]:
    """Validated column arrays: ctr/pre/post (n, 3) nm, pre/post supervoxel ids, score, size."""
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    if frame.empty:
        return {}

    def points(prefix: str, default: np.ndarray | None) -> np.ndarray:
        if f"{prefix}position_nm" in frame:
            values = np.asarray(frame[f"{prefix}position_nm"].tolist(), dtype=np.float64)
        elif f"{prefix}position_z_nm" in frame:
            values = frame[[f"{prefix}position_{a}_nm" for a in "zyx"]].to_numpy(dtype=np.float64)
        elif default is not None:
            return default
        else:
            raise InputError("each synapse needs position_nm (z, y, x in nm)")
        if values.ndim != 2 or values.shape[1] != 3 or not np.isfinite(values).all():
            raise InputError(f"{prefix}position_nm must be three finite numbers (z, y, x) per synapse")
        return values

    missing = [c for c in ("pre_supervoxel_id", "post_supervoxel_id") if c not in frame]
    if missing:
        raise InputError(f"synapse rows lack {', '.join(missing)}")
    ctr = points("", None)
    columns = {"ctr": ctr, "pre": points("pre_", ctr), "post": points("post_", ctr)}
    for side in ("pre", "post"):
        ids = frame[f"{side}_supervoxel_id"].to_numpy()
        if not np.issubdtype(ids.dtype, np.integer) or (ids <= 0).any():
            raise InputError(f"{side}_supervoxel_id must be positive integers")
        columns[side + "_sv"] = ids.astype(np.int64)
    n = len(frame)
    columns["score"] = frame["score"].to_numpy(dtype=np.float64) if "score" in frame else np.ones(n)
    columns["size"] = frame["size"].to_numpy(dtype=np.float64) if "size" in frame else np.zeros(n)
    return columns


# A stored synapse block (models.SynapseBlock.data): these columns, each contiguous and
# little-endian, one after the other; `count` rows. Points are (count, 3) z, y, x in nm.
SYNAPSE_BLOCK_LAYOUT = (("id", "<i8", 1), ("ctr", "<f8", 3), ("pre", "<f8", 3), ("post", "<f8", 3),
                        ("pre_sv", "<i8", 1), ("post_sv", "<i8", 1), ("score", "<f8", 1), ("size", "<f8", 1))
SYNAPSE_BLOCK_ROWS = 1_000_000  # one block per million: an export reads it without copying (~104 MB)
# The 0001 schema's row columns, named here for the migration test.
SYNAPSE_POINT_COLUMNS = [f"{point}_{axis}_nm" for point in ("ctr", "pre", "post") for axis in "zyx"]


def encode_synapse_block(columns: Mapping[str, np.ndarray]) -> bytes:
    """The columns of SYNAPSE_BLOCK_LAYOUT packed one after another."""
    return b"".join(np.ascontiguousarray(columns[name], dtype=dtype).tobytes() for name, dtype, _ in SYNAPSE_BLOCK_LAYOUT)


def decode_synapse_block(data: bytes, count: int) -> dict[str, np.ndarray]:
    """Views into `data` (no copy): a million synapses decode in microseconds, not seconds of row handling."""
    columns, offset = {}, 0
    for name, dtype, width in SYNAPSE_BLOCK_LAYOUT:
        values = np.frombuffer(data, dtype=dtype, count=count * width, offset=offset)
        columns[name] = values.reshape(count, width) if width > 1 else values
        offset += values.nbytes
    if offset != len(data):
        raise ValueError(f"a synapse block of {count} rows holds {len(data)} bytes, not {offset}")
    return columns


def _insert_synapses(session: Session, dataset_id: int, columns: dict[str, np.ndarray], replace: bool = False) -> int:
    connection = session.connection()
    if replace:
        run_sql(connection, "DELETE FROM synapse_blocks WHERE dataset_id = ?", (dataset_id,))
    if not columns:
        return 0
    known = np.asarray(connection.execute(select(Supervoxel.id).where(Supervoxel.dataset_id == dataset_id))
                       .scalars().all(), dtype=np.int64)
    for side in ("pre", "post"):
        unknown = np.unique(columns[side + "_sv"][~np.isin(columns[side + "_sv"], known)])
        if len(unknown):
            raise InputError(f"unknown {side}-synaptic supervoxel(s) {', '.join(map(str, unknown[:5].tolist()))}")
    count = len(columns["ctr"])
    columns = {**columns, "id": np.arange(count, dtype=np.int64) + take_ids(session, "synapse_id", count)[0]}
    for start in range(0, count, SYNAPSE_BLOCK_ROWS):
        block = {name: values[start:start + SYNAPSE_BLOCK_ROWS] for name, values in columns.items()}
        connection.execute(insert(SynapseBlock), {"dataset_id": dataset_id, "first_synapse_id": int(block["id"][0]),
                                                  "count": len(block["id"]), "data": encode_synapse_block(block)})
    return count


def _insert_tuples(connection: Connection, table: str, names: Sequence[str], rows: Iterable[tuple]) -> None:
    """Driver-level executemany of plain tuples, a chunk at a time: for millions of rows,
    SQLAlchemy's per-row parameter handling costs more than the database does."""
    sql = f"INSERT INTO {table} ({', '.join(names)}) VALUES ({placeholders(len(names))})"
    chunk: list[tuple] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == INSERT_CHUNK_ROWS:
            run_sql(connection, sql, chunk)
            chunk = []
    if chunk:
        run_sql(connection, sql, chunk)


def _points(array: np.ndarray) -> pd.Series:
    """An (n, 3) array as one column of fixed-size lists (Arrow-backed: cheap to build and to write)."""
    values = pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(array).ravel()), 3)
    return pd.Series(pd.arrays.ArrowExtensionArray(values))


def _read_synapses(session: Session, store: Store, supervoxels: Sequence[int] | None = None) -> dict[str, np.ndarray]:
    """The dataset's synapse columns (SYNAPSE_BLOCK_LAYOUT names) in id order; with `supervoxels`, only
    the synapses whose pre- or post-synaptic supervoxel is one of them."""
    connection = session.connection()
    sql = "SELECT first_synapse_id, count, data FROM synapse_blocks WHERE dataset_id = ?"
    if connection.dialect.name == "postgresql":  # binary protocol: bytea as raw bytes, not hex text twice the size
        with connection.connection.driver_connection.cursor() as cursor:
            rows = cursor.execute(sql.replace("?", "%s"), (store.dataset_id,), binary=True).fetchall()
    else:
        rows = run_sql(connection, sql, (store.dataset_id,))
    rows.sort(key=lambda row: row[0])  # sorted here: an ORDER BY makes SQLite copy every block through its sorter
    blocks = [decode_synapse_block(bytes(data), count) for _, count, data in rows]
    if not blocks:
        return decode_synapse_block(b"", 0)
    columns = blocks[0] if len(blocks) == 1 else {name: np.concatenate([b[name] for b in blocks]) for name in blocks[0]}
    if supervoxels is not None:
        wanted = np.asarray(list(supervoxels), dtype=np.int64)
        keep = np.isin(columns["pre_sv"], wanted) | np.isin(columns["post_sv"], wanted)
        columns = {name: values[keep] for name, values in columns.items()}
    return columns


def _inline_sql(connection: Connection, query) -> str:
    """A query's SQL with its (integer only) parameters rendered inline."""
    return str(query.compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True}))


def _driver_records(session: Session, query, dtype: np.dtype) -> np.ndarray:
    """A query's rows as a numpy record array, built by numpy straight from the driver's cursor:
    SQLAlchemy Row objects (and numpy probing each for the array protocol) cost several times
    the query for 10^5-10^6 rows."""
    connection = session.connection()
    cursor = connection.connection.cursor()
    try:
        cursor.execute(_inline_sql(connection, query))
        return np.fromiter(cursor, dtype=dtype)
    finally:
        cursor.close()


def _root_lookup(svs: np.ndarray, roots: np.ndarray):
    """supervoxel ids -> root ids for the sorted map (svs, roots).

    A dense table when the ids are compact enough (FFN ids are: one gather, no search), else
    binary search; millions of synapse ends are looked up per export.
    """
    if not len(svs):
        return lambda supervoxels: np.zeros(len(supervoxels), dtype=np.int64)
    if svs[-1] <= 8 * len(svs) + 1_000_000:
        table = np.zeros(int(svs[-1]) + 1, dtype=np.int64)
        table[svs] = roots
        return lambda supervoxels: table[supervoxels]
    return lambda supervoxels: roots[np.clip(np.searchsorted(svs, supervoxels), 0, len(svs) - 1)]


def _synapse_frame(session: Session, store: Store, edit: int, supervoxels: Sequence[int] | None = None) -> pd.DataFrame:
    columns = _read_synapses(session, store, supervoxels)
    svs, roots = _root_map(session, store, edit)

    root_ids = _root_lookup(svs, roots)
    return pd.DataFrame({
        "id": columns["id"],
        "pre_pt_position": _points(columns["pre"]),
        "post_pt_position": _points(columns["post"]),
        "ctr_pt_position": _points(columns["ctr"]),
        "pre_pt_supervoxel_id": columns["pre_sv"],
        "post_pt_supervoxel_id": columns["post_sv"],
        "pre_pt_root_id": root_ids(columns["pre_sv"]),
        "post_pt_root_id": root_ids(columns["post_sv"]),
        "size": columns["size"],
        "score": columns["score"],
    }, copy=False)  # the columns are fresh (or read-only views of the blocks): no second copy of 10^6 rows


def synapse_table(store: Store, at: At = None) -> "pd.DataFrame":
    """All synapses with CAVE-style columns: id, pre_pt_position, post_pt_position, ctr_pt_position
    (z, y, x in nm, as 3-element lists), pre_pt_supervoxel_id, post_pt_supervoxel_id,
    pre_pt_root_id, post_pt_root_id, size, score; roots as of `at`."""
    with read_session(store.engine) as session:
        return _synapse_frame(session, store, _resolve_at(session, store, at))


def synapses_of_root(store: Store, root: int, at: At = None) -> "pd.DataFrame":
    """The synapses whose pre- or post-synaptic supervoxel belongs to `root` (synapse_table columns)."""
    members = supervoxels_of(store, root)
    with read_session(store.engine) as session:
        return _synapse_frame(session, store, _resolve_at(session, store, at), members)


def edge_table(store: Store, at: At = None, synapses: "pd.DataFrame | None" = None) -> "pd.DataFrame":
    """Neuron-to-neuron edges: pre_root_id, post_root_id, n_synapses, size (summed); most synapses first.

    `synapses` (a synapse_table) saves re-reading them."""
    synapses = synapse_table(store, at) if synapses is None else synapses
    edges = (synapses.groupby(["pre_pt_root_id", "post_pt_root_id"], sort=True)
             .agg(n_synapses=("id", "size"), size=("size", "sum")).reset_index()
             .rename(columns={"pre_pt_root_id": "pre_root_id", "post_pt_root_id": "post_root_id"}))
    return edges.sort_values(["n_synapses", "pre_root_id", "post_root_id"], ascending=[False, True, True],
                             kind="stable").reset_index(drop=True)


def neuron_table(store: Store, at: At = None, synapses: "pd.DataFrame | None" = None) -> "pd.DataFrame":
    """One row per neuron as of `at`: root_id, n_supervoxels, voxels, n_pre, n_post (synapse counts)."""
    with read_session(store.engine) as session:
        edit = _resolve_at(session, store, at)
        svs, roots = _root_map(session, store, edit)
        sizes = dict(session.execute(select(Supervoxel.id, Supervoxel.size_voxels)
                                     .where(Supervoxel.dataset_id == store.dataset_id)).all())
    synapses = synapse_table(store, edit) if synapses is None else synapses
    neurons = pd.DataFrame({"root_id": roots, "voxels": [sizes[sv] for sv in svs.tolist()]})
    neurons = neurons.groupby("root_id", sort=True).agg(n_supervoxels=("voxels", "size"), voxels=("voxels", "sum"))
    neurons["n_pre"] = synapses["pre_pt_root_id"].value_counts().reindex(neurons.index, fill_value=0).to_numpy()
    neurons["n_post"] = synapses["post_pt_root_id"].value_counts().reindex(neurons.index, fill_value=0).to_numpy()
    return neurons.reset_index().astype({"n_pre": np.int64, "n_post": np.int64})


def supervoxel_at(store: Store, point_nm: Sequence[float], layer: str | None = None) -> int:
    """The supervoxel under a point (z, y, x in nm) of the dataset's segmentation layer."""
    from volumes.geometry import Box
    from volumes.io import open_volume

    with read_session(store.engine) as session:
        query = select(Layer).where(Layer.dataset_id == store.dataset_id, Layer.layer_type == "segmentation")
        if layer is not None:
            query = query.where(Layer.name == layer)
        row = session.scalars(query.order_by(Layer.id)).first()
    if row is None:
        raise InputError(f"dataset {store.dataset!r} has no segmentation layer{' ' + repr(layer) if layer else ''}")
    point = np.asarray(point_nm, dtype=np.float64)
    if point.shape != (3,) or not np.isfinite(point).all():
        raise InputError(f"a point is three numbers z, y, x in nm, not {point_nm!r}")
    volume = open_volume(row.url, resolution_nm=(row.resolution_z_nm, row.resolution_y_nm, row.resolution_x_nm))
    voxel = np.floor((point - np.asarray(volume.offset_nm)) / np.asarray(volume.resolution_nm)).astype(int)
    if np.any(voxel < 0) or np.any(voxel >= np.asarray(volume.shape[:3])):
        raise InputError(f"point {point.tolist()} nm lies outside the segmentation {row.name!r}")
    value = int(np.asarray(volume.read(Box(tuple(voxel), tuple(voxel + 1)))).ravel()[0])
    if value == 0:
        raise InputError(f"point {point.tolist()} nm lies on background (label 0), not on a supervoxel")
    return value
