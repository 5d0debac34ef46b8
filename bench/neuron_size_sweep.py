"""Edit latency as one neuron grows to 100, 1,000, 10,000 and 100,000 supervoxels in a graph of 10^6.

    .venv/bin/python bench/edit_bench.py --only sweep [--grid 100] [--database-url URL]

The graph is a 100x100x100 lattice of cubic supervoxels (1,000,000 supervoxels, ~3,000,000
adjacencies). One neuron grows by merges along a path through the lattice (each step touches
the last). At each size this measures, each edit a transaction of its own:
  merge     the neuron with the next supervoxel of its path
  undo of a merge   (a cut: the store reads the neuron's edges to find the pieces)
  split     a cut of <= 300 supervoxels off the neuron's end (minimum cut over the whole neuron)
  undo of a split   (a join of the piece back)
  roots of 1,000 of the neuron's supervoxels as of a past edit, and now
  the supervoxel set of the neuron now and as of a past edit; the lineage of its root
  cold cut  the first cut at each size, before the graph cache holds the neuron (db/graph_cache.py)
The baseline is the representation before components (every edit rewrote each supervoxel's
root and inserted a membership row per supervoxel of every new neuron), kept here only: a plain
SQLite file with those tables, the same graph size, a neuron of the same size, timed merges and
splits by that algorithm.
"""
from __future__ import annotations

import random
import sqlite3
import time
from pathlib import Path

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import breadth_first_order, maximum_flow
from tqdm import tqdm

from db import store as S

SIZES = (100, 1_000, 10_000, 100_000)
SAMPLES = 30


def snake(side: int) -> list[int]:
    """Lattice ids (1 + (z*side + y)*side + x) along a path whose every step touches the previous one."""
    path = []
    for z in range(side):
        ys = range(side) if z % 2 == 0 else range(side - 1, -1, -1)
        for row, y in enumerate(ys):
            xs = range(side) if (row + z * side) % 2 == 0 else range(side - 1, -1, -1)
            path.extend(1 + (z * side + y) * side + x for x in xs)
    return path


def timed(call):
    start, start_cpu = time.perf_counter(), time.process_time()
    result = call()
    return result, (time.perf_counter() - start, time.process_time() - start_cpu)


def summary(samples: list[tuple[float, float]]) -> str:
    if not samples:
        return "-"
    wall, cpu = (np.asarray(column) * 1000 for column in zip(*samples))
    return (f"{np.percentile(wall, 50):7.1f} / {np.percentile(wall, 99):7.1f} ms "
            f"[cpu {np.percentile(cpu, 50):6.1f} / {np.percentile(cpu, 99):6.1f}]")


def grow(store: S.Store, path: list[int], start: int, stop: int) -> None:
    """Merge path[start..stop) onto the neuron, many per transaction (group commit), untimed."""
    steps = [(path[i - 1], path[i]) for i in range(max(start, 1), stop)]
    for first in tqdm(range(0, len(steps), 500), desc=f"grow to {stop}", unit="batch", leave=False):
        S.apply_edits(store, [lambda s, a=a, b=b: S.merge(store, a, b, "bench", session=s)
                              for a, b in steps[first:first + 500]])


def measure_size(store: S.Store, path: list[int], size: int, rng: random.Random) -> dict[str, list]:
    """The timed edits and reads at one neuron size (the neuron ends where it started)."""
    out: dict[str, list] = {key: [] for key in ("merge", "undo merge", "split", "undo split", "roots past",
                                                 "roots now", "members now", "members past", "lineage",
                                                 "cold cut")}
    # The first cut of a neuron this process has not cut before reads its links from the store (the
    # graph cache then carries them): timed on its own, not among the samples.
    store.graph_cache.clear()  # as in a freshly started server
    result = S.merge(store, path[size - 1], path[size], "bench")
    out["cold cut"].append(timed(lambda: S.undo(store, result.edit_id, "bench"))[1])
    for i in range(SAMPLES):  # each merge adds the next path supervoxel; its undo cuts it off again
        result, elapsed = timed(lambda: S.merge(store, path[size - 1], path[size], "bench"))
        out["merge"].append(elapsed)
        out["undo merge"].append(timed(lambda: S.undo(store, result.edit_id, "bench"))[1])
    piece = min(300, size // 3)
    for i in range(SAMPLES):
        sink = path[size - 1 - piece]
        result, elapsed = timed(lambda: S.split(store, [path[size - 1]], [sink], "bench"))
        assert len(result.resulting_roots) == 2 and min(result.sizes) <= piece, result.sizes
        out["split"].append(elapsed)
        out["undo split"].append(timed(lambda: S.undo(store, result.edit_id, "bench"))[1])
    latest = S.latest_edit_id(store)
    past = latest - 4 * SAMPLES - 2  # the neuron as it was before this size's edits, at this size
    root = S.root_of(store, path[0])
    past_root = S.root_of(store, path[0], at=past)
    for _ in range(10):
        batch = rng.sample(path[:size], min(1000, size))
        out["roots past"].append(timed(lambda: S.roots_of(store, batch, at=past))[1])
        out["roots now"].append(timed(lambda: S.roots_of(store, batch))[1])
    for _ in range(5):
        members, elapsed = timed(lambda: S.supervoxels_of(store, root))
        assert len(members) == size
        out["members now"].append(elapsed)
        out["members past"].append(timed(lambda: S.supervoxels_of(store, past_root))[1])
        out["lineage"].append(timed(lambda: S.lineage(store, root))[1])
    return out


class PreviousRepresentation:
    """The store's representation before components, for the baseline only: supervoxels.root_id and
    root_members rewritten for every supervoxel of each neuron an edit produces."""

    def __init__(self, path: Path, supervoxels: int, edges: np.ndarray):
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.executescript("""
            PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA cache_size=-32768;
            CREATE TABLE supervoxels (id INTEGER PRIMARY KEY, root_id INTEGER);
            CREATE INDEX ix_sv_root ON supervoxels (root_id);
            CREATE TABLE roots (id INTEGER PRIMARY KEY, created_edit INTEGER, retired_edit INTEGER);
            CREATE TABLE root_members (root_id INTEGER, sv_id INTEGER, PRIMARY KEY (root_id, sv_id));
            CREATE INDEX ix_members_sv ON root_members (sv_id);
            CREATE TABLE agglomeration_edges (id INTEGER PRIMARY KEY, sv_a INTEGER, sv_b INTEGER,
                                              added_edit INTEGER, removed_edit INTEGER);
            CREATE INDEX ix_edges_a ON agglomeration_edges (sv_a);
            CREATE TABLE adjacencies (sv_a INTEGER, sv_b INTEGER, area REAL, PRIMARY KEY (sv_a, sv_b));
        """)
        self.db.execute("BEGIN")
        self.db.executemany("INSERT INTO supervoxels VALUES (?, ?)", ((sv, sv) for sv in range(1, supervoxels + 1)))
        self.db.executemany("INSERT INTO roots VALUES (?, 0, NULL)", ((sv,) for sv in range(1, supervoxels + 1)))
        self.db.executemany("INSERT INTO root_members VALUES (?, ?)", ((sv, sv) for sv in range(1, supervoxels + 1)))
        self.db.executemany("INSERT INTO adjacencies VALUES (?, ?, 64.0)", edges.tolist())
        self.db.execute("COMMIT")
        self.next_root, self.edit = 10**9, 0

    def make_neuron(self, members: list[int]) -> None:
        """Set the state to one neuron of these members (a chain of edges), as earlier edits would have."""
        root = self._new_root()
        self.db.execute("BEGIN")
        self.db.executemany("UPDATE roots SET retired_edit = 0 WHERE id = ?", ((sv,) for sv in members))
        self.db.execute("INSERT INTO roots VALUES (?, 0, NULL)", (root,))
        self.db.executemany("INSERT INTO root_members VALUES (?, ?)", ((root, sv) for sv in members))
        self.db.executemany("UPDATE supervoxels SET root_id = ? WHERE id = ?", ((root, sv) for sv in members))
        self.db.executemany("INSERT INTO agglomeration_edges (sv_a, sv_b, added_edit) VALUES (?, ?, 0)",
                            ((min(a, b), max(a, b)) for a, b in zip(members, members[1:])))
        self.db.execute("COMMIT")

    def _new_root(self) -> int:
        self.next_root += 1
        return self.next_root

    def _rewrite(self, affected: list[int], groups: list[list[int]]) -> None:
        self.db.executemany("UPDATE roots SET retired_edit = ? WHERE id = ?", ((self.edit, r) for r in affected))
        for group in groups:
            root = self._new_root()
            self.db.execute("INSERT INTO roots VALUES (?, ?, NULL)", (root, self.edit))
            self.db.executemany("INSERT INTO root_members VALUES (?, ?)", ((root, sv) for sv in group))
            self.db.executemany("UPDATE supervoxels SET root_id = ? WHERE id = ?", ((root, sv) for sv in group))

    def merge(self, a: int, b: int) -> None:
        self.edit += 1
        self.db.execute("BEGIN IMMEDIATE")
        roots = dict(self.db.execute("SELECT id, root_id FROM supervoxels WHERE id IN (?, ?)", (a, b)))
        self.db.execute("INSERT INTO agglomeration_edges (sv_a, sv_b, added_edit) VALUES (?, ?, ?)",
                        (min(a, b), max(a, b), self.edit))
        affected = sorted(set(roots.values()))
        members = [sv for (sv,) in self.db.execute(
            f"SELECT id FROM supervoxels WHERE root_id IN ({', '.join('?' * len(affected))})", affected)]
        self._rewrite(affected, [sorted(members)])
        self.db.execute("COMMIT")

    def split_off(self, source: int, sink: int) -> list[tuple[int, int]]:
        """The old split: read the neuron's members and edges, cut, rewrite every piece; the cut pairs."""
        from db.mincut import components

        self.edit += 1
        self.db.execute("BEGIN IMMEDIATE")
        (root,) = self.db.execute("SELECT root_id FROM supervoxels WHERE id = ?", (source,)).fetchone()
        members = [sv for (sv,) in self.db.execute("SELECT id FROM supervoxels WHERE root_id = ?", (root,))]
        edges = []
        for start in range(0, len(members), 10_000):
            part = members[start:start + 10_000]
            edges.extend(self.db.execute(
                f"SELECT id, sv_a, sv_b FROM agglomeration_edges WHERE sv_a IN ({', '.join('?' * len(part))}) "
                "AND removed_edit IS NULL", part))
        rows = [(i, a, b, 64.0, None) for i, a, b in edges]
        cut_rows = previous_minimum_cut(rows, [source], [sink])
        cut = {i for i, _, _ in cut_rows}
        self.db.executemany("UPDATE agglomeration_edges SET removed_edit = ? WHERE id = ?", ((self.edit, i) for i in cut))
        groups = components(members, [(a, b) for i, a, b in edges if i not in cut])
        self._rewrite([root], groups)
        self.db.execute("COMMIT")
        return [(a, b) for _, a, b in cut_rows]


def previous_minimum_cut(rows: list[tuple], sources: list[int], sinks: list[int]) -> list[tuple[int, int, int]]:
    """The minimum cut as the previous store computed it (rows of Python tuples), for the baseline."""
    nodes = sorted({sv for _, a, b, _, _ in rows for sv in (a, b)} | set(sources) | set(sinks))
    index = {sv: i for i, sv in enumerate(nodes)}
    source, sink = len(nodes), len(nodes) + 1
    capacity = np.maximum(np.array([area * (1.0 - (score or 0.0)) for _, _, _, area, score in rows]), 1e-3)
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
    residual = (graph - maximum_flow(graph, source, sink).flow).tocsr()
    residual.data[residual.data < 0] = 0
    residual.eliminate_zeros()
    reached = np.zeros(len(nodes) + 2, dtype=bool)
    reached[breadth_first_order(residual, source, directed=True, return_predecessors=False)] = True
    return sorted({(row[0], row[1], row[2]) for row, i, j in zip(rows, a, b) if reached[i] != reached[j]})


def lattice_edges(side: int) -> np.ndarray:
    ids = np.arange(1, side ** 3 + 1, dtype=np.int64).reshape(side, side, side)
    pairs = [np.stack([ids[:-1].ravel(), ids[1:].ravel()], 1), np.stack([ids[:, :-1].ravel(), ids[:, 1:].ravel()], 1),
             np.stack([ids[:, :, :-1].ravel(), ids[:, :, 1:].ravel()], 1)]
    return np.concatenate(pairs)


def baseline_at(old: PreviousRepresentation, path: list[int], size: int, samples: int) -> dict[str, list]:
    old.make_neuron(path[:size])
    out: dict[str, list] = {"merge": [], "split": []}
    for i in range(samples):
        out["merge"].append(timed(lambda: old.merge(path[size - 1 + i], path[size + i]))[1])
    end = size + samples
    piece = min(300, size // 3)
    for i in range(max(1, samples // 2)):
        cut, elapsed = timed(lambda: old.split_off(path[end - 1], path[end - 1 - piece]))
        out["split"].append(elapsed)
        for a, b in cut:  # join back (untimed)
            old.merge(a, b)
    # leave the lattice as it was: the neuron's supervoxels back to roots of their own is not needed,
    # each size builds its neuron anew from path[0]
    return out


def run_sweep(store: S.Store, side: int, directory: Path) -> None:
    rng = random.Random(0)
    path = snake(side)
    rows: dict[int, dict[str, list]] = {}
    done = 1
    for size in SIZES:
        if size + SAMPLES + 1 > len(path):
            break
        grow(store, path, done, size)
        done = size
        rows[size] = measure_size(store, path, size, rng)
    print("\nstore with components (this code); wall p50 / p99 [CPU p50 / p99], "
          f"{SAMPLES} edits each, graph of {side ** 3:,} supervoxels")
    keys = list(next(iter(rows.values())))
    for key in keys:
        print(f"  {key:13s} " + "  ".join(f"{size:>7,}: {summary(rows[size][key])}" for size in rows))
    edges = lattice_edges(side)
    old = PreviousRepresentation(directory / "previous.sqlite", side ** 3, edges)
    print("\nbaseline: the previous representation (same graph size), wall p50 / p99 [CPU]")
    baseline: dict[int, dict[str, list]] = {}
    for size in rows:
        samples = 10 if size <= 10_000 else 3
        baseline[size] = baseline_at(old, path, size, samples)
        print(f"  {size:>7,}: merge {summary(baseline[size]['merge'])}   split {summary(baseline[size]['split'])}")
    print("\nratios (previous / components, p50 wall; targets at every size: merge p99 <= 20 ms, split and undo "
          "p99 <= 200 ms, roots of 1,000 as of a past edit <= 50 ms)")
    for size in rows:
        ours_merge = np.median([w for w, _ in rows[size]["merge"]])
        ours_split = np.median([w for w, _ in rows[size]["split"]])
        base_merge = np.median([w for w, _ in baseline[size]["merge"]])
        base_split = np.median([w for w, _ in baseline[size]["split"]])
        p99 = {key: np.percentile([w for w, _ in rows[size][key]], 99) * 1000 for key in rows[size]}
        verdict = all((p99["merge"] <= 20, p99["split"] <= 200, p99["undo merge"] <= 200, p99["undo split"] <= 200,
                       p99["roots past"] <= 50))
        cold = rows[size]["cold cut"][0][0] * 1000
        print(f"  {size:>7,}: merge {base_merge / ours_merge:7.1f}x   split {base_split / ours_split:6.1f}x   "
              f"targets {'met' if verdict else 'NOT met'} (first cold cut {cold:.0f} ms)")
