"""Neurons as components: the representation that makes an edit cost what it changes, not the neuron.

A *component* is a set of supervoxels with a stable id. Each supervoxel belongs to exactly one
(`supervoxels.component_id`), each live component has exactly one current root (`components`),
and every root ever made is one version of one component (`roots.component_id`).

* A join (merge; undo of a split; redo of a merge) keeps the component with the most
  supervoxels and moves the others' supervoxels into it: union by size, so a supervoxel moves
  at most log2(n) times over any sequence of joins and a merge writes O(smaller side) rows,
  amortised, whatever the size of the neuron it produces.
* A cut (split; undo of a merge; redo of a split) reads the neuron's members and active edges
  (the minimum cut and the connectivity check need them), keeps the component for the piece
  that holds most of it and moves only the supervoxels of the other pieces.
* Either way each resulting neuron gets a new root row: O(1) per neuron.

History is interval-stamped so time travel stays exact: `component_members` rows say "supervoxel
s was in component c from edit a until edit b" (written only when s moves) and root rows say
"root r was component c's version from edit a until edit b". The root of s as of edit E is the
version, alive at E, of the component s was in at E; the supervoxels of root r are its
component's members as of r's created edit (a component's set never changes within a version).

Why this and not PyChunkedGraph's octree of chunk-level components: the hierarchy makes edits
and root lookups O(log volume) independent of neuron size, but it needs a supervoxel graph
organised by chunks and a layer of nodes per level to maintain; the union-by-size component
gives the same write bound for merges (amortised), keeps every table a plain indexed SQL table
on SQLite and PostgreSQL, and lets an existing workspace migrate row for row. Its weak point is
the cut: a split reads the links of the neuron it cuts (about 0.25 s for 10^5 supervoxels), which
db.graph_cache avoids for neurons a process has cut before.

A component is named after the first root id it had (unique and never reused, so no counter of
its own); those ids are internal and never shown to users.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import Connection

from db.connection import placeholders, run_sql
from db.sql import id_chunks, insert_tuples, sql_records


@dataclass(frozen=True)
class Neuron:
    """A current neuron as the store holds it: its root (version), component and size."""

    root: int
    component: int
    size: int


def neurons_of_roots(connection: Connection, roots: Sequence[int]) -> dict[int, Neuron]:
    """The component and size of each root (current or not)."""
    found: dict[int, Neuron] = {}
    for part in id_chunks(sorted(set(roots))):
        for root, component, size in run_sql(
                connection, f"SELECT id, component_id, size_supervoxels FROM roots WHERE id IN ({placeholders(len(part))})",
                tuple(part)):
            found[root] = Neuron(root, component, size)
    return found


def join(connection: Connection, dataset_id: int, edit_id: int, neurons: Sequence[Neuron], root: int) -> Neuron:
    """Make the given neurons one, with root id `root`: the largest component absorbs the others."""
    keeper = max(neurons, key=lambda n: (n.size, -n.component))
    movers = sorted(n.component for n in neurons if n.component != keeper.component)
    size = sum(n.size for n in neurons)
    for part in id_chunks(movers):
        inside = f"component_id IN ({placeholders(len(part))})"
        # The old intervals end, the new ones start (both at this edit), then the current column follows.
        run_sql(connection, f"UPDATE component_members SET ended_edit = ? WHERE dataset_id = ? AND {inside} "
                            "AND ended_edit IS NULL", (edit_id, dataset_id, *part))
        run_sql(connection, "INSERT INTO component_members (dataset_id, sv_id, started_edit, component_id) "
                            f"SELECT dataset_id, id, ?, ? FROM supervoxels WHERE dataset_id = ? AND {inside}",
                (edit_id, keeper.component, dataset_id, *part))
        run_sql(connection, f"UPDATE supervoxels SET component_id = ? WHERE dataset_id = ? AND {inside}",
                (keeper.component, dataset_id, *part))
        run_sql(connection, f"DELETE FROM components WHERE id IN ({placeholders(len(part))})", tuple(part))
    run_sql(connection, "UPDATE components SET root_id = ?, size_supervoxels = ? WHERE id = ?",
            (root, size, keeper.component))
    return Neuron(root, keeper.component, size)


@dataclass(frozen=True)
class NeuronGraph:
    """The members and active agglomeration edges of some current neurons, as arrays.

    `members` sorted, `component` of each member; edges as indices into `members` (a, b) with
    their row ids and min-cut capacities. What a cut reads: the neuron's edges, nothing else.
    """

    members: np.ndarray
    component: np.ndarray
    edge_ids: np.ndarray
    a: np.ndarray
    b: np.ndarray
    capacity: np.ndarray


_EDGE = np.dtype([("id", np.int64), ("a", np.int64), ("b", np.int64), ("capacity", np.float64),
                  ("component", np.int64)])


def read_neuron_graph(connection: Connection, dataset_id: int, components: Sequence[int],
                      endpoints: Sequence[int]) -> NeuronGraph:
    """The NeuronGraph of the given components, read as their active edges alone.

    One statement per 10,000 components: members by the component index, then the active edges
    leaving each by sv_a (a nested-loop join of index seeks; CROSS JOIN keeps SQLite to that
    order, PostgreSQL plans it as the inner join it is). Every member of a component of two or
    more has an active edge, so the members are the edges' ends plus `endpoints`: the supervoxels
    of links this edit removed (a member may have lost its last edge) or the split's seeds.
    """
    parts = [sql_records(connection, "SELECT e.id, e.sv_a, e.sv_b, e.capacity_nm2, s.component_id FROM supervoxels s "
                                     f"CROSS JOIN agglomeration_edges e WHERE s.dataset_id = ? AND s.component_id IN "
                                     f"({placeholders(len(part))}) AND e.dataset_id = s.dataset_id AND e.sv_a = s.id "
                                     "AND e.removed_edit IS NULL", (dataset_id, *part), _EDGE)
             for part in id_chunks(sorted(set(components)))]
    edge = np.concatenate(parts) if parts else np.zeros(0, _EDGE)
    extra = sorted(set(int(sv) for sv in endpoints))
    extra_component = dict(run_sql(connection, f"SELECT id, component_id FROM supervoxels WHERE dataset_id = ? AND id IN "
                                               f"({placeholders(len(extra))})", (dataset_id, *extra))) if extra else {}
    wanted = set(components)
    extra = [sv for sv in extra if extra_component.get(sv) in wanted]  # endpoints may lie in other neurons
    members = np.unique(np.concatenate([edge["a"], edge["b"], np.asarray(extra, dtype=np.int64)]))
    component = np.empty(len(members), dtype=np.int64)
    a, b = np.searchsorted(members, edge["a"]), np.searchsorted(members, edge["b"])
    if extra:
        component[np.searchsorted(members, extra)] = [extra_component[sv] for sv in extra]
    component[a] = edge["component"]
    component[b] = edge["component"]  # an active edge lies inside one component
    return NeuronGraph(members=members, component=component, edge_ids=edge["id"], a=a, b=b, capacity=edge["capacity"])


@dataclass(frozen=True)
class Links:
    """Agglomeration links by supervoxel id: row ids, ends and capacities."""

    edge_ids: np.ndarray
    sv_a: np.ndarray
    sv_b: np.ndarray
    capacity: np.ndarray


def links_added_by(connection: Connection, dataset_id: int, added_edit: int) -> Links:
    """The links an edit added."""
    rows = sql_records(connection, "SELECT id, sv_a, sv_b, capacity_nm2 FROM agglomeration_edges WHERE added_edit = ? "
                       "AND dataset_id = ?", (added_edit, dataset_id),
                       np.dtype([("id", np.int64), ("a", np.int64), ("b", np.int64), ("capacity", np.float64)]))
    return Links(rows["id"], rows["a"], rows["b"], rows["capacity"])


def groups_of(members: np.ndarray, labels: np.ndarray) -> list[list[int]]:
    """Members grouped by label, each group sorted, groups ordered by their smallest supervoxel."""
    order = np.lexsort((members, labels))
    sorted_labels = labels[order]
    starts = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1]])
    groups = [group.tolist() for group in np.split(members[order], starts[1:])]
    return sorted(groups, key=lambda group: group[0])


def regroup(connection: Connection, dataset_id: int, edit_id: int, members: np.ndarray, component: np.ndarray,
            groups: Sequence[Sequence[int]], roots: Sequence[int]) -> list[Neuron]:
    """Give each group of supervoxels (the pieces of a cut) a component and its new root.

    `members` (sorted) and `component` are every supervoxel of the groups and its current
    component. Each old component stays with the piece holding most of its supervoxels (larger
    overlaps first), so only the supervoxels of the other pieces move; a piece left without one
    starts a component named after its new root. Components no piece kept are deleted.
    """
    label = np.empty(len(members), dtype=np.int64)
    for index, group in enumerate(groups):
        label[np.searchsorted(members, np.asarray(group, dtype=np.int64))] = index
    olds, old_index = np.unique(component, return_inverse=True)
    counts = np.bincount(label * len(olds) + old_index, minlength=len(groups) * len(olds))
    pairs = np.flatnonzero(counts)
    chosen: dict[int, int] = {}
    taken: set[int] = set()
    for key in pairs[np.lexsort((pairs // len(olds), -counts[pairs]))].tolist():  # largest overlap first
        index, old = key // len(olds), int(olds[key % len(olds)])
        if index not in chosen and old not in taken:
            chosen[index] = old
            taken.add(old)
    target = np.array([chosen.get(index, root) for index, root in enumerate(roots)], dtype=np.int64)
    neurons: list[Neuron] = []
    for index, (group, root) in enumerate(zip(groups, roots)):
        if index in chosen:
            run_sql(connection, "UPDATE components SET root_id = ?, size_supervoxels = ? WHERE id = ?",
                    (root, len(group), chosen[index]))
        else:
            run_sql(connection, "INSERT INTO components (id, dataset_id, root_id, size_supervoxels) VALUES (?, ?, ?, ?)",
                    (root, dataset_id, root, len(group)))
        neurons.append(Neuron(root, int(target[index]), len(group)))
    for part in id_chunks(sorted(set(component.tolist()) - taken)):
        run_sql(connection, f"DELETE FROM components WHERE id IN ({placeholders(len(part))})", tuple(part))
    leaving = target[label] != component
    move_supervoxels(connection, dataset_id, edit_id, list(zip(members[leaving].tolist(), target[label][leaving].tolist())))
    return neurons


def move_supervoxels(connection: Connection, dataset_id: int, edit_id: int, moves: Sequence[tuple[int, int]]) -> None:
    """Move each (supervoxel, component): end its open interval, start one in the new component."""
    if not moves:
        return
    run_sql(connection, "UPDATE component_members SET ended_edit = ? WHERE dataset_id = ? AND sv_id = ? "
                        "AND ended_edit IS NULL", [(edit_id, dataset_id, sv) for sv, _ in moves])
    insert_tuples(connection, "component_members", ("dataset_id", "sv_id", "started_edit", "component_id"),
                  ((dataset_id, sv, edit_id, component) for sv, component in moves))
    run_sql(connection, "UPDATE supervoxels SET component_id = ? WHERE dataset_id = ? AND id = ?",
            [(component, dataset_id, sv) for sv, component in moves])


def add_roots(connection: Connection, dataset_id: int, edit_id: int, neurons: Sequence[Neuron]) -> None:
    """Insert the root (version) rows of the neurons an edit produced."""
    insert_tuples(connection, "roots", ("id", "dataset_id", "created_edit", "component_id", "size_supervoxels"),
                  ((n.root, dataset_id, edit_id, n.component, n.size) for n in neurons))


def start_components(connection: Connection, dataset_id: int, supervoxels: Sequence[int], components: Sequence[int]) -> None:
    """The state of a freshly built graph (edit 0): each supervoxel in the component given for it (its own, or its
    initial neuron's), each component named after its first root id."""
    names, sizes = np.unique(np.asarray(components, dtype=np.int64), return_counts=True)
    names, sizes = names.tolist(), sizes.tolist()
    constant = [dataset_id] * len(names)
    insert_tuples(connection, "roots", ("id", "dataset_id", "created_edit", "component_id", "size_supervoxels"),
                  zip(names, constant, [0] * len(names), names, sizes))
    insert_tuples(connection, "components", ("id", "dataset_id", "root_id", "size_supervoxels"),
                  zip(names, constant, names, sizes))
    insert_tuples(connection, "component_members", ("dataset_id", "sv_id", "started_edit", "component_id"),
                  zip([dataset_id] * len(supervoxels), supervoxels, [0] * len(supervoxels), components))
