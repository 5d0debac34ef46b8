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
the cut: a split reads the edges of the neuron it cuts (about 0.1 s for 10^5 supervoxels).

A component is named after the first root id it had (unique and never reused, so no counter of
its own); those ids are internal and never shown to users.
"""
from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection

from db.connection import placeholders, run_sql
from db.sql import id_chunks, insert_tuples


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


def members_of_components(connection: Connection, dataset_id: int, components: Sequence[int]) -> list[tuple[int, int]]:
    """(supervoxel, component) of every current member of the given components."""
    rows: list[tuple[int, int]] = []
    for part in id_chunks(sorted(set(components))):
        rows.extend(run_sql(connection, f"SELECT id, component_id FROM supervoxels WHERE dataset_id = ? AND component_id IN "
                                        f"({placeholders(len(part))})", (dataset_id, *part)))
    return rows


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


def regroup(connection: Connection, dataset_id: int, edit_id: int, component_of: dict[int, int],
            groups: Sequence[Sequence[int]], roots: Sequence[int]) -> list[Neuron]:
    """Give each group of supervoxels (the pieces of a cut) a component and its new root.

    `component_of` holds the current component of every supervoxel in the groups. Each old
    component stays with the piece holding most of its supervoxels (larger overlaps first), so
    only the supervoxels of the other pieces move; a piece left without one starts a component
    named after its new root. Components no piece kept are deleted.
    """
    overlaps = sorted(((count, -index, component) for index, group in enumerate(groups)
                       for component, count in Tally(component_of[sv] for sv in group).items()), reverse=True)
    chosen: dict[int, int] = {}
    taken: set[int] = set()
    for _, negative_index, component in overlaps:
        if -negative_index not in chosen and component not in taken:
            chosen[-negative_index] = component
            taken.add(component)
    neurons: list[Neuron] = []
    moves: list[tuple[int, int]] = []
    for index, (group, root) in enumerate(zip(groups, roots)):
        component = chosen.get(index, root)
        if index not in chosen:
            run_sql(connection, "INSERT INTO components (id, dataset_id, root_id, size_supervoxels) VALUES (?, ?, ?, ?)",
                    (component, dataset_id, root, len(group)))
        else:
            run_sql(connection, "UPDATE components SET root_id = ?, size_supervoxels = ? WHERE id = ?",
                    (root, len(group), component))
        moves.extend((sv, component) for sv in group if component_of[sv] != component)
        neurons.append(Neuron(root, component, len(group)))
    emptied = sorted(set(component_of.values()) - taken)
    for part in id_chunks(emptied):
        run_sql(connection, f"DELETE FROM components WHERE id IN ({placeholders(len(part))})", tuple(part))
    move_supervoxels(connection, dataset_id, edit_id, moves)
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


def start_components(connection: Connection, dataset_id: int, supervoxels: Sequence[int], roots: Sequence[int]) -> None:
    """The state of a freshly built graph (edit 0): every supervoxel its own component and root."""
    constant = [dataset_id] * len(supervoxels)
    insert_tuples(connection, "roots", ("id", "dataset_id", "created_edit", "component_id", "size_supervoxels"),
                  zip(roots, constant, [0] * len(roots), roots, [1] * len(roots)))
    insert_tuples(connection, "components", ("id", "dataset_id", "root_id", "size_supervoxels"),
                  zip(roots, constant, roots, [1] * len(roots)))
    insert_tuples(connection, "component_members", ("dataset_id", "sv_id", "started_edit", "component_id"),
                  zip(constant, supervoxels, [0] * len(roots), roots))
