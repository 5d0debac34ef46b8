from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from db.connection import now, placeholders, read_session, run_sql, take_ids, write_session
from db.edit_log import EditRecord, latest_children
from db.graph_store import supervoxel_at
from db.handle import Store, reading, writing
from db.mincut import component_labels, components, edge_capacities, minimum_cut
from db import annotations
from db import graph_cache
from db.components import (Neuron, NeuronGraph, add_roots, groups_of, join, neurons_of_roots, read_neuron_graph,
                           links_added_by, regroup)
from db.graph_cache import CachedGraph
from db.models import AgglomerationEdge, Edit, User
from db.sql import insert_tuples
from db.time_travel import checked_supervoxel_id, current_roots
from db.users import Role, add_user, editor_of, user_row
from volumes.errors import ConflictError, ForbiddenError, InputError, NotFoundError, RefusedError


@dataclass(frozen=True)
class EditResult:
    """What a committed edit (or a split preview, where `edit_id` is None) did."""

    edit_id: int | None
    operation: str
    affected_roots: list[int]
    resulting_roots: list[int]
    added_edges: list[tuple[int, int]] = field(default_factory=list)
    removed_edges: list[tuple[int, int]] = field(default_factory=list)
    # The supervoxel sets of the resulting neurons, in resulting_roots order (for a split
    # preview, in the order they would get new ids), for edits that cut links; empty for those
    # that only join neurons, where listing the merged neuron would cost its size.
    groups: list[list[int]] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)  # supervoxels of each resulting neuron


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


def _apply_edge_changes(session: Session, store: Store, edit: dict[str, Any], affected_roots: Sequence[int],
                        add_pairs: Sequence[tuple[int, int]], remove_edge_ids: Sequence[int],
                        pieces: "tuple[NeuronGraph, np.ndarray] | None" = None) -> EditResult:
    """Change the agglomeration edges, then give every neuron the edit touched a new root id.

    An edit that only adds edges joins neurons whole (db.components.join: the smaller sides
    move); one that removes edges recomputes the pieces of the neurons it touched and moves the
    supervoxels that leave (db.components.regroup); `pieces`, (the neuron graph after the cut, a
    piece label per member), when the caller (a split) has just computed them. Large neurons'
    graphs are carried from edit to edit (db.graph_cache). Runs on the Core connection: this is
    the hot path of every edit, and the ORM's unit of work would cost more than the SQL itself.
    """
    connection = session.connection()
    dataset_id, edit_id = store.dataset_id, edit["id"]
    affected = sorted(set(affected_roots))
    before = neurons_of_roots(connection, affected)
    removed: list[tuple[int, int]] = []
    if remove_edge_ids:
        ids = list(remove_edge_ids)
        removed = sorted(run_sql(
            connection, f"SELECT sv_a, sv_b FROM agglomeration_edges WHERE id IN ({placeholders(len(ids))})", tuple(ids)))
        run_sql(connection, f"UPDATE agglomeration_edges SET removed_edit = ? WHERE id IN ({placeholders(len(ids))})", (edit_id, *ids))
        if pieces is None:  # the edges are removed now: the pieces are the components of what is left
            graph = _neuron_graph(session, store, list(before.values()), [sv for pair in removed for sv in pair], ids)
            pieces = graph, component_labels(len(graph.members), graph.a, graph.b)
        graph, labels = pieces
        groups = groups_of(graph.members, labels)
        after = regroup(connection, dataset_id, edit_id, graph.members, graph.component, groups,
                        take_ids(session, "root_id", len(groups)))
        for group, neuron in zip(groups, after):
            if neuron.size >= graph_cache.CACHED_MIN_SUPERVOXELS:
                label = labels[np.searchsorted(graph.members, group[0])]
                graph_cache.keep(session, neuron.root, CachedGraph.piece(graph, labels, label, neuron.component))
    else:
        groups = []
        after = _join(session, store, edit_id, before, add_pairs)
    run_sql(connection, f"UPDATE roots SET retired_edit = ? WHERE id IN ({placeholders(len(affected))})", (edit_id, *affected))
    add_roots(connection, dataset_id, edit_id, after)
    new_roots = [n.root for n in after]
    connection.execute(insert(Edit), [{**edit, "affected_roots": affected, "resulting_roots": new_roots}])
    return EditResult(edit_id=edit_id, operation=edit["operation"], affected_roots=affected, resulting_roots=new_roots,
                      added_edges=list(add_pairs), removed_edges=removed, groups=groups, sizes=[n.size for n in after])


def _neuron_graph(session: Session, store: Store, neurons: Sequence[Neuron], endpoints: Sequence[int],
                  removed_ids: Sequence[int] = ()) -> NeuronGraph:
    """The graph of current neurons: from the cache for one large neuron (less the links just removed),
    else read from the store (which has already dropped them)."""
    if len(neurons) == 1:
        cached = graph_cache.lookup(session, store.graph_cache, neurons[0].root)
        if cached is not None:
            return cached.without(removed_ids).neuron_graph()
    return read_neuron_graph(session.connection(), store.dataset_id, [n.component for n in neurons], endpoints)


def _join(session: Session, store: Store, edit_id: int, before: dict[int, Neuron],
          add_pairs: Sequence[tuple[int, int]]) -> list[Neuron]:
    """Add links that only join neurons: the neurons they connect become one each (the smaller sides move)."""
    connection = session.connection()
    dataset_id = store.dataset_id
    root_of_sv = current_roots(session, store, sorted({sv for pair in add_pairs for sv in pair}))
    joined = components(sorted(before), [(root_of_sv[a], root_of_sv[b]) for a, b in add_pairs])
    # A large result keeps its graph cached when the largest side's is: the others' are read first (they
    # are the smaller sides), before they move.
    carried: dict[int, tuple[CachedGraph, list[CachedGraph]]] = {}
    for index, group in enumerate(joined):
        neurons = [before[r] for r in group]
        keeper = max(neurons, key=lambda n: (n.size, -n.component))
        cached = graph_cache.lookup(session, store.graph_cache, keeper.root)
        if cached is not None and sum(n.size for n in neurons) >= graph_cache.CACHED_MIN_SUPERVOXELS:
            others = [graph_cache.lookup(session, store.graph_cache, n.root) or CachedGraph.of(read_neuron_graph(
                connection, dataset_id, [n.component], [sv for pair in add_pairs for sv in pair]), n.component)
                for n in neurons if n is not keeper]
            carried[index] = cached, others
    capacities = _link_capacities(connection, dataset_id, add_pairs)
    insert_tuples(connection, AgglomerationEdge.__tablename__, ("dataset_id", "sv_a", "sv_b", "added_edit", "capacity_nm2"),
                  ((dataset_id, a, b, edit_id, capacity) for (a, b), capacity in zip(add_pairs, capacities)))
    new_roots = take_ids(session, "root_id", len(joined))
    after = [join(connection, dataset_id, edit_id, [before[r] for r in group], root) for group, root in zip(joined, new_roots)]
    if carried:
        links = links_added_by(connection, dataset_id, edit_id)
        for index, (cached, others) in carried.items():
            group_roots = set(joined[index])
            mine = np.array([root_of_sv[a] in group_roots for a in links.sv_a.tolist()], dtype=bool)
            new_links = CachedGraph(cached.component, np.zeros(0, np.int64), links.edge_ids[mine], links.sv_a[mine],
                                    links.sv_b[mine], links.capacity[mine])
            graph_cache.keep(session, after[index].root, cached.joined(others, new_links))
    return after


def _link_capacities(connection, dataset_id: int, pairs: Sequence[tuple[int, int]]) -> list[float]:
    """Min-cut capacity of new links (sv_a < sv_b) from their pairs' contacts; pairs that do not touch get
    the small capacity of a manual link."""
    area, score = [], []
    for a, b in pairs:
        rows = run_sql(connection, "SELECT contact_area_nm2, boundary_score FROM adjacencies WHERE dataset_id = ? "
                                   "AND sv_a = ? AND sv_b = ?", (dataset_id, a, b))
        area.append(rows[0][0] if rows else -1.0)
        score.append((rows[0][1] or 0.0) if rows else 0.0)
    return edge_capacities(np.asarray(area, dtype=np.float64), np.asarray(score, dtype=np.float64)).tolist()


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
            held = set(graph_cache.pending(session))
            try:
                with session.begin_nested():
                    outcomes.append(edit(session))
            except Exception as exc:  # noqa: BLE001 (the edit's own failure, handed back to its caller)
                graph_cache.drop_since(session, held)
                outcomes.append(exc)
    graph_cache.publish(session, store.graph_cache)
    return outcomes


def merge(store: Store, supervoxel_a: int, supervoxel_b: int, user: "str | User",
          seen_roots: Iterable[int] | None = None, session: Session | None = None) -> EditResult:
    """Join the neurons of two supervoxels by an agglomeration edge between them.

    `seen_roots`: the root ids the caller saw for these neurons; when given, the edit is refused
    with ConflictError unless both supervoxels still belong to roots in that list.
    `session`: an open write session to run in (see `apply_edits`); by default the edit is a
    transaction of its own.
    """
    a, b = sorted((checked_supervoxel_id(supervoxel_a), checked_supervoxel_id(supervoxel_b)))
    with writing(store, session) as session:
        editor = editor_of(session, user)
        roots = current_roots(session, store, [a, b])
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
                seen_roots: Iterable[int] | None) -> tuple[int, list[int], NeuronGraph, np.ndarray]:
    """(root, ids of the edge rows to remove, the neuron's graph without them, a piece label per member) of a
    minimum-cut split.

    Capacities come from the adjacency graph: contact area times (1 - boundary score), so the
    cut prefers small contacts across strong membranes.
    """
    if not sources or not sinks:
        raise InputError("a split needs at least one source and one sink supervoxel")
    both = sorted(set(sources) & set(sinks))
    if both:
        raise InputError(f"supervoxel{'s' if len(both) > 1 else ''} {', '.join(map(str, both))} "
                         "cannot be both a source and a sink")
    roots = current_roots(session, store, sources + sinks)
    _check_seen(roots, seen_roots)
    distinct = sorted(set(roots.values()))
    if len(distinct) > 1:
        listed = "; ".join(f"{sv} -> {roots[sv]}" for sv in sorted(roots))
        raise RefusedError(f"sources and sinks must be in one neuron, but they are in {len(distinct)} ({listed})")
    root = distinct[0]
    neuron = neurons_of_roots(session.connection(), [root])[root]
    graph = _neuron_graph(session, store, [neuron], sources + sinks)
    source_index, sink_index = np.searchsorted(graph.members, sources), np.searchsorted(graph.members, sinks)
    cut = minimum_cut(len(graph.members), graph.a, graph.b, graph.capacity, source_index, sink_index)
    kept = ~cut
    labels = component_labels(len(graph.members), graph.a[kept], graph.b[kept])
    if set(labels[source_index].tolist()) & set(labels[sink_index].tolist()):
        raise RefusedError("no cut separates these sources from these sinks")
    after_cut = NeuronGraph(graph.members, graph.component, graph.edge_ids[kept], graph.a[kept], graph.b[kept],
                            graph.capacity[kept])
    return root, sorted(graph.edge_ids[cut].tolist()), after_cut, labels


def split(store: Store, sources: Iterable[int], sinks: Iterable[int], user: "str | User",
          preview: bool = False, seen_roots: Iterable[int] | None = None, session: Session | None = None) -> EditResult:
    """Separate sources from sinks (all in one neuron) by a minimum cut of its agglomeration edges.

    Capacities come from the adjacency graph: contact area times (1 - boundary score), so the
    cut prefers small contacts across strong membranes. With `preview` nothing is written and
    the result lists the edges that would be removed and the resulting supervoxel groups.
    `session`: as for `merge`.
    """
    sources = sorted({checked_supervoxel_id(sv) for sv in sources})
    sinks = sorted({checked_supervoxel_id(sv) for sv in sinks})
    if preview:
        with reading(store, session) as session:
            user_row(session, user)
            root, cut_ids, graph, labels = _split_plan(session, store, sources, sinks, seen_roots)
            groups = groups_of(graph.members, labels)
            removed = session.execute(select(AgglomerationEdge.sv_a, AgglomerationEdge.sv_b).where(
                AgglomerationEdge.id.in_(cut_ids))).all()
        return EditResult(edit_id=None, operation="split", affected_roots=[root], resulting_roots=[],
                          removed_edges=sorted(removed), groups=groups, sizes=[len(g) for g in groups])
    with writing(store, session) as session:
        editor = editor_of(session, user)
        root, cut_ids, graph, labels = _split_plan(session, store, sources, sinks, seen_roots)
        edit = _new_edit(session, store, editor, "split", {"sources": sources, "sinks": sinks})
        return _apply_edge_changes(session, store, edit, [root], [], cut_ids, pieces=(graph, labels))


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
    with writing(store, session) as session:
        editor = editor_of(session, user)
        target = session.get(Edit, edit_id)
        if target is None or target.dataset_id != store.dataset_id:
            raise NotFoundError(f"no edit {edit_id} in dataset {store.dataset!r}")
        if target.operation not in ("merge", "split", "annotate"):
            instead = "redo" if target.operation == "undo" else "undo"
            raise InputError(f"edit {edit_id} is itself an {target.operation} of edit {target.parent_id}; "
                             f"{instead} edit {target.parent_id} instead")
        if not Role(editor.role).allows(Role.ADMIN) and target.user_id != editor.id:
            author = session.get(User, target.user_id)
            raise ForbiddenError(f"edit {edit_id} is {author.name}'s; a {editor.role} may {operation} only their own edits")
        last = latest_children(session, [edit_id]).get(edit_id)
        undone = last is not None and last[1] == "undo"
        if operation == "undo" and undone:
            raise RefusedError(f"edit {edit_id} is already undone (by edit {last[0]}); redo it instead")
        if operation == "redo" and not undone:
            raise RefusedError(f"edit {edit_id} is not undone, so there is nothing to redo")
        if target.operation == "annotate":
            outcome = annotations.reverse(session, store, editor.id, target, last[0] if last else None, operation)
            return EditResult(edit_id=outcome.edit_id, operation=operation, affected_roots=outcome.affected_roots,
                              resulting_roots=outcome.affected_roots)
        added, removed, active, later = _edge_history(session, store, edit_id)
        to_add, to_remove = (removed, added) if operation == "undo" else (added, removed)
        clashes = sorted([pair for pair in to_remove if pair not in active] + [pair for pair in to_add if pair in active])
        if clashes:
            editors = sorted({e for pair in clashes for e in later.get(pair, ())})
            raise ConflictError(f"conflict: cannot {operation} edit {edit_id}: later edit(s) "
                                f"{', '.join(map(str, editors))} changed the link(s) "
                                f"{', '.join(f'{a}-{b}' for a, b in clashes[:5])} it depends on")
        roots = current_roots(session, store, [sv for pair in to_add + to_remove for sv in pair])
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
    """Pairs the edit added and removed, the active edge row of each such pair, and later edits touching each.

    Each lookup is one index seek (by added or removed edit, then by pair), so the cost follows
    the edit and its pairs' own history, not the dataset's: an OR across the two edit columns, or
    all rows of the pairs' first supervoxels, grew with every edit ever made.
    """
    connection = session.connection()
    added = sorted(run_sql(connection, "SELECT sv_a, sv_b FROM agglomeration_edges WHERE added_edit = ?", (edit_id,)))
    removed = sorted(run_sql(connection, "SELECT sv_a, sv_b FROM agglomeration_edges WHERE removed_edit = ?", (edit_id,)))
    active: dict[tuple[int, int], int] = {}
    later: dict[tuple[int, int], set[int]] = defaultdict(set)
    for a, b in sorted(set(added) | set(removed)):
        for row_id, added_by, removed_by in run_sql(
                connection, "SELECT id, added_edit, removed_edit FROM agglomeration_edges WHERE dataset_id = ? "
                            "AND sv_a = ? AND sv_b = ?", (store.dataset_id, a, b)):
            if removed_by is None:
                active[(a, b)] = row_id
            later[(a, b)].update(e for e in (added_by, removed_by) if e is not None and e > edit_id)
    return added, removed, active, later


def _replay_annotation(store: Store, arguments: dict[str, Any], user: str, session: Session,
                       new_annotations: dict[int, int]) -> EditResult:
    """One logged annotation change again (its status is taken as logged, whatever today's vocabulary)."""
    if arguments["action"] == "set":
        value = arguments["value"]
        outcome = annotations.set_neuron_field(store, arguments["supervoxel"], arguments["kind"], value, user,
                                               statuses=[value] if value else (), session=session)
    elif arguments["action"] == "add":
        outcome = annotations.add_annotation(store, arguments["kind"], arguments["value"], user, arguments["supervoxel"],
                                             arguments["position_nm"], session=session)
    else:
        logged = arguments["annotation"]
        outcome = annotations.remove_annotation(store, new_annotations.get(logged, logged), user, session=session)
    new_annotations.update(zip(arguments.get("started", []), outcome.started))
    return EditResult(edit_id=outcome.edit_id, operation="annotate", affected_roots=outcome.affected_roots,
                      resulting_roots=outcome.affected_roots)


REPLAY_BATCH_EDITS = 200  # edits per transaction when replaying a log (group commit)


def replay(store: Store, records: Iterable[EditRecord]) -> list[EditResult]:
    """Re-run logged edits in order (e.g. on a freshly built store); users missing there are created as admins.

    Undo/redo arguments are translated to the ids the replayed edits get. Edits commit in
    batches (`apply_edits`); the first that fails raises, after the edits before it committed.
    """
    records = list(records)
    with read_session(store.engine) as session:
        known = set(session.execute(select(User.name)).scalars())
    for name in sorted({record.user for record in records} - known):
        add_user(store, name, "admin")
    new_ids: dict[int, int] = {}
    new_annotations: dict[int, int] = {}  # logged annotation id -> the replay's
    failures: list[Exception] = []

    def rerun(record: EditRecord) -> Callable[[Session], EditResult]:
        def edit(session: Session) -> EditResult:
            if failures:  # an earlier edit of the batch failed: the ones after it must not commit
                raise RefusedError(f"edit {record.id} not replayed: an earlier edit failed")
            try:
                return replayed(record, session)
            except Exception as exc:
                failures.append(exc)
                raise
        return edit

    def replayed(record: EditRecord, session: Session) -> EditResult:
        arguments, user = record.arguments, record.user
        if record.operation == "merge":
            result = merge(store, *arguments["supervoxels"], user=user, session=session)
        elif record.operation == "split":
            result = split(store, arguments["sources"], arguments["sinks"], user=user, session=session)
        elif record.operation in ("undo", "redo"):
            target = new_ids.get(arguments["edit"], arguments["edit"])
            result = (undo if record.operation == "undo" else redo)(store, target, user=user, session=session)
        elif record.operation == "annotate":
            result = _replay_annotation(store, arguments, user, session, new_annotations)
        else:
            raise InputError(f"edit {record.id}: unknown operation {record.operation!r}")
        new_ids[record.id] = result.edit_id
        return result

    results: list[EditResult] = []
    for start in range(0, len(records), REPLAY_BATCH_EDITS):
        results.extend(apply_edits(store, [rerun(record) for record in records[start:start + REPLAY_BATCH_EDITS]]))
        if failures:
            raise failures[0]
    return results
