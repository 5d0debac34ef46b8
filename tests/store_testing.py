"""Helpers for the store's tests and benchmarks: throwaway databases (SQLite or PostgreSQL), small
known graphs, the partition invariant, and the random writer of the concurrency test.

PostgreSQL: $CONNECTOME_TEST_POSTGRES_URL names a database; each fresh store lives in its own
schema (chosen through the connection's search_path), dropped afterwards.
"""
from __future__ import annotations

import os
import random
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import networkx as nx
import numpy as np
from sqlalchemy import create_engine, select, text

from db import store as S
from db.connection import read_session
from db.models import Adjacency, AgglomerationEdge, Component, ComponentMember, Root, Supervoxel
from volumes.errors import RefusedError

POSTGRES_URL_VARIABLE = "CONNECTOME_TEST_POSTGRES_URL"
BACKENDS = ("sqlite", "postgresql")


def postgres_url() -> str | None:
    return os.environ.get(POSTGRES_URL_VARIABLE) or None


@contextmanager
def fresh_database_url(backend: str, directory: Path) -> Iterator[str]:
    """A URL of an empty database: a new SQLite file in `directory` or a new PostgreSQL schema."""
    if backend == "sqlite":
        yield f"sqlite:///{directory / f'store-{secrets.token_hex(4)}.db'}"
        return
    base = postgres_url()
    if base is None:
        raise RuntimeError(f"{POSTGRES_URL_VARIABLE} is not set")
    schema = f"test_{secrets.token_hex(6)}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    separator = "&" if "?" in base else "?"
    try:
        yield f"{base}{separator}options={quote(f'-csearch_path={schema}')}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def grid_labels(blocks_zyx: tuple[int, int, int], block_voxels: int = 2) -> np.ndarray:
    """Cubic supervoxels on a grid, ids 1..n, each touching its 6 neighbours: a small, fully known graph."""
    count = int(np.prod(blocks_zyx))
    ids = np.arange(1, count + 1, dtype=np.uint32).reshape(blocks_zyx)
    return np.kron(ids, np.ones((block_voxels,) * 3, dtype=np.uint32))


def check_partition(store: S.Store) -> None:
    """Assert that the current roots are exactly the connected components of the active agglomeration edges."""
    with read_session(store.engine) as session:
        svs = session.execute(select(Supervoxel.id, Component.root_id).join(
            Component, Component.id == Supervoxel.component_id).where(Supervoxel.dataset_id == store.dataset_id)).all()
        _check_components(session, store)
        edges = session.execute(select(AgglomerationEdge.sv_a, AgglomerationEdge.sv_b).where(
            AgglomerationEdge.dataset_id == store.dataset_id, AgglomerationEdge.removed_edit.is_(None))).all()
    active_pairs = [(a, b) for a, b in edges]
    assert len(set(active_pairs)) == len(active_pairs), "a pair has two active edges"
    # Computed independently of the store's own component code.
    graph = nx.Graph()
    graph.add_nodes_from(sv for sv, _ in svs)
    graph.add_edges_from(active_pairs)
    components = [list(c) for c in nx.connected_components(graph)]
    root_of = dict(svs)
    assert sorted(map(sorted, components)) == sorted(map(sorted, _groups(root_of).values()))


def _check_components(session, store: S.Store) -> None:
    """The representation agrees with itself: open membership intervals are the current components,
    each live component's size and root match its members, and every root's size is its set's."""
    dataset = store.dataset_id
    current = dict(session.execute(select(Supervoxel.id, Supervoxel.component_id)
                                   .where(Supervoxel.dataset_id == dataset)).all())
    open_rows = session.execute(select(ComponentMember.sv_id, ComponentMember.component_id).where(
        ComponentMember.dataset_id == dataset, ComponentMember.ended_edit.is_(None))).all()
    assert len(open_rows) == len(current) and dict(open_rows) == current
    sizes: dict[int, int] = {}
    for component in current.values():
        sizes[component] = sizes.get(component, 0) + 1
    live = {c: (root, size) for c, root, size in session.execute(select(
        Component.id, Component.root_id, Component.size_supervoxels).where(Component.dataset_id == dataset)).all()}
    assert set(live) == set(sizes) and all(live[c][1] == sizes[c] for c in sizes)
    for component, (root, size) in live.items():
        row = session.get(Root, root)
        assert row.retired_edit is None and row.component_id == component and row.size_supervoxels == size


def _groups(root_of: dict[int, int]) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = {}
    for sv, root in root_of.items():
        groups.setdefault(root, []).append(sv)
    return groups


def random_edit_worker(url: str, user: str, seed: int, edits: int, pause_s: float = 0.002) -> list[tuple]:
    """One writer of the concurrency test: random merges, splits, undos and redos, each based on a
    view it read a moment before (so other writers can make it stale).

    Returns (operation, outcome, edit id or error class, message) per attempt; outcome is "ok" or
    "refused". Any other exception escapes and fails the test.
    """
    rng = random.Random(seed)
    outcomes = []
    mine: list[int] = []
    with S.open_store(url) as store:
        with read_session(store.engine) as session:
            adjacency = session.execute(select(Adjacency.sv_a, Adjacency.sv_b)
                                        .where(Adjacency.dataset_id == store.dataset_id)).all()
        for _ in range(edits):
            choice = rng.random()
            try:
                if choice < 0.45 or not mine:
                    operation = "merge"
                    a, b = adjacency[rng.randrange(len(adjacency))]
                    seen = S.roots_of(store, [a, b])
                    time.sleep(rng.random() * pause_s)
                    result = S.merge(store, a, b, user, seen_roots=seen.values())
                elif choice < 0.75:
                    operation = "split"
                    sv = rng.choice(adjacency)[0]
                    root = S.root_of(store, sv)
                    members = S.supervoxels_of(store, root)
                    if len(members) < 2:
                        continue
                    source, sink = rng.sample(members, 2)
                    time.sleep(rng.random() * pause_s)
                    result = S.split(store, [source], [sink], user, seen_roots=[root])
                else:
                    operation = "undo" if choice < 0.9 else "redo"
                    target = rng.choice(mine)
                    result = (S.undo if operation == "undo" else S.redo)(store, target, user)
                outcomes.append((operation, "ok", result.edit_id, ""))
                if operation in ("merge", "split"):
                    mine.append(result.edit_id)
            except RefusedError as error:
                outcomes.append((operation, "refused", type(error).__name__, str(error)))
    return outcomes
