from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

import numpy as np
from scipy.sparse import coo_matrix, csr_matrix
from scipy.sparse.csgraph import breadth_first_order, connected_components, maximum_flow


# Min-cut capacity of a merge between supervoxels that do not touch (no adjacency row), in nm^2:
# small, so a split cuts such manual links before real contacts.
UNTOUCHING_EDGE_CAPACITY_NM2 = 1.0
# Keeps every capacity positive, so a contact across a perfect membrane still costs something.
MINIMUM_CAPACITY_NM2 = 1e-3


SMALL_GRAPH_EDGES = 256  # below this, a Python union-find beats scipy's per-call checks (~0.25 ms)


def components(nodes: Sequence[int], pairs: Iterable[tuple[int, int]]) -> list[list[int]]:
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
    """`components` for the few edges of a typical merge or undo: union-find on a dict."""
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


def minimum_cut(rows: Sequence[tuple], sources: list[int], sinks: list[int]) -> list[tuple[int, int, int]]:
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
