"""Large neurons' graphs kept in memory between edits, keyed by root id: cuts of a big neuron read nothing.

A cut (split, undo of a merge) must know the neuron's active links; reading them costs about
2.5 us per link (~0.25 s for 10^5 supervoxels). A proofreader edits the same neuron again and
again, and the server is one long-lived process, so it keeps the graphs of the large neurons it
touched, each under the root id it belongs to: a root names one immutable set of supervoxels and
links (any change to either gives the neuron a new root), so an entry is never stale, and an
edit by another process simply misses the cache. Every edit that produces a large neuron derives
its graph from what it already holds (a cut keeps the piece's part; a join appends the smaller
sides, read in O(their size), and the new links).

Entries are published only when the transaction that made their root commits: root ids come
from a counter that a rollback winds back, so an id from a rolled-back edit may later name
another neuron. Until then they wait in the session (`session.info`), where later edits of the
same group commit find them; a savepoint that fails drops what it added.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy.orm import Session

from db.components import NeuronGraph

# Neurons below this size read their links in a few milliseconds: not worth the memory.
CACHED_MIN_SUPERVOXELS = 500
CACHE_MAX_LINKS = 2_000_000  # ~100 MB of arrays
_PENDING = "connectome_pending_graphs"


@dataclass(frozen=True)
class CachedGraph:
    """One neuron's members and active links, by supervoxel id (so joining two is a concatenation)."""

    component: int
    members: np.ndarray
    edge_ids: np.ndarray
    sv_a: np.ndarray
    sv_b: np.ndarray
    capacity: np.ndarray

    @property
    def links(self) -> int:
        return len(self.edge_ids)

    @classmethod
    def piece(cls, graph: NeuronGraph, labels: np.ndarray, label: int, component: int) -> "CachedGraph":
        """The part of a (cut) neuron graph holding the members labelled `label`."""
        inside = labels[graph.a] == label
        return cls(component=component, members=graph.members[labels == label], edge_ids=graph.edge_ids[inside],
                   sv_a=graph.members[graph.a[inside]], sv_b=graph.members[graph.b[inside]],
                   capacity=graph.capacity[inside])

    @classmethod
    def of(cls, graph: NeuronGraph, component: int) -> "CachedGraph":
        return cls.piece(graph, np.zeros(len(graph.members), dtype=np.int64), 0, component)

    def joined(self, others: Sequence["CachedGraph"], links: "CachedGraph") -> "CachedGraph":
        """This neuron with others and the new links between them appended (this one's component kept)."""
        parts = [self, *others]
        return CachedGraph(component=self.component,
                           members=np.concatenate([part.members for part in parts]),
                           edge_ids=np.concatenate([part.edge_ids for part in parts] + [links.edge_ids]),
                           sv_a=np.concatenate([part.sv_a for part in parts] + [links.sv_a]),
                           sv_b=np.concatenate([part.sv_b for part in parts] + [links.sv_b]),
                           capacity=np.concatenate([part.capacity for part in parts] + [links.capacity]))

    def without(self, edge_ids: Iterable[int]) -> "CachedGraph":
        keep = ~np.isin(self.edge_ids, np.fromiter(edge_ids, dtype=np.int64))
        return CachedGraph(self.component, self.members, self.edge_ids[keep], self.sv_a[keep], self.sv_b[keep],
                           self.capacity[keep])

    def neuron_graph(self) -> NeuronGraph:
        """The NeuronGraph a cut works on (members sorted, links as member indices)."""
        members = np.sort(self.members)
        return NeuronGraph(members=members, component=np.full(len(members), self.component, dtype=np.int64),
                           edge_ids=self.edge_ids, a=np.searchsorted(members, self.sv_a),
                           b=np.searchsorted(members, self.sv_b), capacity=self.capacity)


class GraphCache:
    """Least recently used graphs of committed roots, up to CACHE_MAX_LINKS links in all; thread-safe."""

    def __init__(self, max_links: int = CACHE_MAX_LINKS):
        self.max_links = max_links
        self._graphs: OrderedDict[int, CachedGraph] = OrderedDict()
        self._links = 0
        self._lock = threading.Lock()

    def get(self, root: int) -> CachedGraph | None:
        with self._lock:
            graph = self._graphs.get(root)
            if graph is not None:
                self._graphs.move_to_end(root)
            return graph

    def put(self, root: int, graph: CachedGraph) -> None:
        with self._lock:
            if root in self._graphs:
                return
            self._graphs[root] = graph
            self._links += graph.links
            while self._links > self.max_links and len(self._graphs) > 1:
                _, evicted = self._graphs.popitem(last=False)
                self._links -= evicted.links

    def clear(self) -> None:
        with self._lock:
            self._graphs.clear()
            self._links = 0

    def __len__(self) -> int:
        return len(self._graphs)


def pending(session: Session) -> dict[int, CachedGraph]:
    """Graphs of roots made in this (uncommitted) transaction."""
    return session.info.setdefault(_PENDING, {})


def lookup(session: Session, cache: GraphCache, root: int) -> CachedGraph | None:
    """The graph of `root` as this transaction sees it: made by it, or committed and cached."""
    return pending(session).get(root) or cache.get(root)


def keep(session: Session, root: int, graph: CachedGraph) -> None:
    """Hold a new root's graph until the transaction commits (only large neurons are kept)."""
    if len(graph.members) >= CACHED_MIN_SUPERVOXELS:
        pending(session)[root] = graph


def publish(session: Session, cache: GraphCache) -> None:
    """After a commit: the transaction's graphs become everyone's."""
    for root, graph in session.info.pop(_PENDING, {}).items():
        cache.put(root, graph)


def drop_since(session: Session, before: set[int]) -> None:
    """After a savepoint rolled back: forget the graphs it added."""
    held = pending(session)
    for root in set(held) - before:
        del held[root]
