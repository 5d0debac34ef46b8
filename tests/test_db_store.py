"""The proofreading store: graph build, merge/split/undo/redo, time travel, users and refusals, on SQLite and PostgreSQL."""
from __future__ import annotations

import time
from datetime import timedelta, timezone

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import select, text

from db import mincut, store as S
from db.connection import read_session
from db.graph import region_graph
from db.models import Base, User
from store_testing import fresh_database_url
from volumes.errors import InputError, RefusedError


@pytest.fixture
def store(backend, tmp_path):
    with fresh_database_url(backend, tmp_path) as url:
        with S.open_store(url) as opened:
            yield opened


def chain_labels() -> np.ndarray:
    """Six slabs along x, labels 1..6, each touching the next through a 4 x 4 voxel face; 7 off on its own."""
    labels = np.zeros((4, 4, 14), dtype=np.uint32)
    for i in range(6):
        labels[:, :, 2 * i:2 * i + 2] = i + 1
    labels[0, 0, 13] = 7
    return labels


@pytest.fixture
def chain(store):
    S.build_graph(store, chain_labels(), (40.0, 8.0, 8.0))
    S.add_user(store, "ana", "proofreader")
    S.add_user(store, "bo", "proofreader")
    S.add_user(store, "root", "admin")
    S.add_user(store, "vic", "viewer")
    return store


def snapshot(store) -> tuple:
    """Everything an edit could change, to show that a refused one changed nothing."""
    svs = list(range(1, 8))
    with read_session(store.engine) as session:
        counters = session.execute(text("SELECT name, next_value FROM counters ORDER BY name")).all()
        edges = session.execute(text("SELECT sv_a, sv_b, added_edit, removed_edit FROM agglomeration_edges ORDER BY id")).all()
    return S.latest_edit_id(store), S.roots_of(store, svs), counters, edges, len(S.history(store))


def test_synapse_rows_of_an_old_store_move_into_blocks_and_back(backend, tmp_path):
    """Revision 0002 keeps every synapse and its id; new synapses continue after them; downgrade restores rows."""
    from alembic import command
    from alembic.config import Config

    from db.connection import MIGRATIONS_DIR, make_engine, stop_checkpointer
    from db.export import positions_zyx

    with fresh_database_url(backend, tmp_path) as url:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        engine = make_engine(url)
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "0001")
            connection.execute(text("INSERT INTO datasets (id, name, created_at) VALUES (1, 'default', '2026-01-01')"))
            columns = ", ".join(["id", "dataset_id", *S.SYNAPSE_POINT_COLUMNS, "pre_supervoxel_id", "post_supervoxel_id",
                                 "score", "size"])
            for synapse_id in (5, 6, 9):  # ids with a gap, as deletions would leave them
                values = [synapse_id, 1, *[synapse_id + k / 10 for k in range(9)], 1, 2, 0.5, 10.0 * synapse_id]
                connection.execute(text(f"INSERT INTO synapses ({columns}) VALUES ({', '.join(map(repr, values))})"))
        store = S.open_store(url)  # migrates to head
        S.build_graph(store, np.array([[[1, 2]]], dtype=np.uint64), (8, 8, 8))
        table = S.synapse_table(store)
        assert table["id"].tolist() == [5, 6, 9] and table["size"].tolist() == [50.0, 60.0, 90.0]
        assert positions_zyx(table["pre_pt_position"])[0].tolist() == [5.3, 5.4, 5.5]
        S.add_synapses(store, [{"position_nm": (1, 2, 3), "pre_supervoxel_id": 2, "post_supervoxel_id": 1}])
        assert S.synapse_table(store)["id"].tolist() == [5, 6, 9, 10]
        store.close()
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "0001")
            restored = connection.execute(text("SELECT id, size FROM synapses ORDER BY id")).all()
        assert [tuple(row) for row in restored] == [(5, 50.0), (6, 60.0), (9, 90.0), (10, 0.0)]
        stop_checkpointer(engine)
        engine.dispose()


def test_migrations_create_exactly_the_models(store):
    with store.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []
    # Opening again is a no-op migration and finds the same dataset.
    again = S.open_store(store.engine.url.render_as_string(hide_password=False))
    assert again.dataset_id == store.dataset_id
    again.close()


def test_region_graph_matches_a_voxel_by_voxel_count():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 5, size=(5, 6, 7)).astype(np.uint64) * 1000
    resolution = (40.0, 8.0, 4.0)
    graph = region_graph(labels, resolution)
    expected: dict[tuple[int, int], float] = {}
    for axis in range(3):
        face = np.prod(np.delete(resolution, axis))
        a = np.moveaxis(labels, axis, 0)
        for i in range(a.shape[0] - 1):
            for u, v in zip(a[i].ravel(), a[i + 1].ravel()):
                if u and v and u != v:
                    key = (int(min(u, v)), int(max(u, v)))
                    expected[key] = expected.get(key, 0.0) + face
    got = {(int(a), int(b)): area for a, b, area in zip(graph.sv_a, graph.sv_b, graph.contact_area_nm2)}
    assert got == pytest.approx(expected)
    for sv, size, start, stop, centroid in zip(graph.ids, graph.size_voxels, graph.bbox_start, graph.bbox_stop, graph.centroid_nm):
        where = np.argwhere(labels == sv)
        assert size == len(where)
        assert start.tolist() == where.min(axis=0).tolist() and stop.tolist() == (where.max(axis=0) + 1).tolist()
        assert centroid == pytest.approx((where.mean(axis=0) + 0.5) * resolution)


def test_build_graph_on_fib25_and_agglomerate_to_ground_truth(store, fib25_h5, tmp_path):
    """Real data: merging the FlyEM oversegmentation along its ground truth gives one root per body."""
    import h5py

    with h5py.File(fib25_h5) as f:
        supervoxels = f["volumes/labels/neuroproof_oversegmentation"][:100, :100, :100]
        bodies = f["volumes/labels/neuron_ids"][:100, :100, :100]
        boundary = 255 - f["volumes/raw"][:100, :100, :100].astype(np.float32)
    counts = S.build_graph(store, supervoxels, (10, 10, 10), image=boundary)
    ids = np.unique(supervoxels)
    assert counts["supervoxels"] == len(ids)
    S.add_user(store, "ana", "proofreader")
    # Each supervoxel's body is the ground-truth label covering most of it.
    pairs = np.unique(np.stack([supervoxels.ravel(), bodies.ravel()], axis=1), axis=0, return_counts=True)
    body_of: dict[int, int] = {}
    best: dict[int, int] = {}
    for (sv, body), count in zip(pairs[0].tolist(), pairs[1].tolist()):
        if count > best.get(sv, 0):
            best[sv], body_of[sv] = count, body
    members: dict[int, list[int]] = {}
    for sv, body in body_of.items():
        members.setdefault(body, []).append(sv)
    for svs in members.values():
        for other in svs[1:]:
            S.merge(store, svs[0], other, user="ana")
    roots = S.roots_of(store, ids.tolist())
    assert len(set(roots.values())) == len(members)
    for svs in members.values():
        assert len({roots[sv] for sv in svs}) == 1
    assert sorted(map(sorted, S.equivalence_groups(store))) == sorted(sorted(s) for s in members.values() if len(s) > 1)

    # The same bodies given to the graph build as an agglomeration: one root per connected piece of each body
    # (a body's supervoxels that do not touch inside this crop were joined above by merges of untouching pairs).
    with S.open_store(f"sqlite:///{tmp_path}/agglomerated.db") as agglomerated:
        counts = S.build_graph(agglomerated, supervoxels, (10, 10, 10), image=boundary, agglomeration=body_of)
        pieces = S.equivalence_groups(agglomerated)
        assert counts["neurons"] >= len(members)
        body_groups = {frozenset(svs) for svs in members.values()}
        assert all(any(set(piece) <= group for group in body_groups) for piece in pieces)
        assert sum(len(piece) for piece in pieces) >= 0.9 * sum(len(s) for s in members.values() if len(s) > 1)


def test_merge_split_undo_redo_keep_untouched_roots(chain):
    untouched = S.root_of(chain, 6)
    merged = [S.merge(chain, a, a + 1, user="ana") for a in (1, 2, 3, 4)]
    assert len(set(S.roots_of(chain, [1, 2, 3, 4, 5]).values())) == 1
    assert S.root_of(chain, 6) == untouched
    assert merged[-1].resulting_roots == [S.root_of(chain, 1)]

    cut = S.split(chain, sources=[1], sinks=[5], user="ana")
    assert cut.operation == "split" and len(cut.removed_edges) == 1
    roots = S.roots_of(chain, [1, 2, 3, 4, 5])
    assert roots[1] != roots[5] and set(roots.values()) == set(cut.resulting_roots)
    assert S.root_of(chain, 6) == untouched

    undone = S.undo(chain, cut.edit_id, user="ana")
    assert undone.operation == "undo" and len(set(S.roots_of(chain, [1, 2, 3, 4, 5]).values())) == 1
    redone = S.redo(chain, cut.edit_id, user="ana")
    assert S.roots_of(chain, [1, 5])[1] != S.roots_of(chain, [1, 5])[5]
    records = S.history(chain)
    assert [r.operation for r in records] == ["merge"] * 4 + ["split", "undo", "redo"]
    assert records[-1].parent_id == cut.edit_id and not records[4].undone
    assert S.latest_edit_id(chain) == redone.edit_id
    # Root ids are never reused.
    every_root = [r for record in records for r in record.affected_roots + record.resulting_roots]
    assert len(set(r for record in records for r in record.resulting_roots)) == sum(len(r.resulting_roots) for r in records)
    assert all(r >= 10**12 for r in every_root)


def test_edits_applied_together_commit_once_and_fail_alone(chain):
    """Group commit: each edit sees the ones before it; a refused one is rolled back alone."""
    before_refusal = None

    def refused_after_writing(session):
        nonlocal before_refusal
        before_refusal = S.merge(chain, 5, 6, user="bo", session=session)  # written, then undone by the savepoint
        raise RefusedError("changed my mind")

    outcomes = S.apply_edits(chain, [
        lambda session: S.merge(chain, 1, 2, user="ana", session=session),
        lambda session: S.merge(chain, 1, 2, user="ana", session=session),  # already one neuron: sees the first
        refused_after_writing,
        lambda session: S.merge(chain, 2, 3, user="bo", session=session),
        lambda session: S.undo(chain, S.latest_edit_id(chain, session=session), user="bo", session=session),
    ])
    first, again, refused, second, undone = outcomes
    assert isinstance(again, RefusedError) and "already in one neuron" in str(again)
    assert isinstance(refused, RefusedError) and before_refusal is not None
    assert undone.operation == "undo" and undone.affected_roots == second.resulting_roots
    records = S.history(chain)
    assert [(r.id, r.operation, r.user) for r in records] == [
        (first.edit_id, "merge", "ana"), (second.edit_id, "merge", "bo"), (undone.edit_id, "undo", "bo")]
    assert second.edit_id == first.edit_id + 1  # the rolled-back edit's id was handed back
    roots = S.roots_of(chain, [1, 2, 3, 5, 6])
    assert roots[1] == roots[2] != roots[3] and len(set(roots.values())) == 4  # {1, 2} {3} {5} {6}


def test_split_cuts_the_weakest_contact():
    """Two blobs joined by a one-voxel bridge: the min cut takes the bridge, not the big faces."""
    labels = np.zeros((6, 6, 12), dtype=np.uint32)
    labels[:, :, 0:4] = 1
    labels[:, :, 4:5] = 2
    labels[2, 2, 5] = 3  # the bridge
    labels[:, :, 6:8] = 4
    labels[:, :, 8:12] = 5
    graph = region_graph(labels, (8, 8, 8))
    areas = {(int(a), int(b)): area for a, b, area in zip(graph.sv_a, graph.sv_b, graph.contact_area_nm2)}
    assert areas[(2, 3)] == areas[(3, 4)] == 64.0 and areas[(1, 2)] == 36 * 64.0


@pytest.fixture
def bridge(store):
    labels = np.zeros((6, 6, 12), dtype=np.uint32)
    labels[:, :, 0:4] = 1
    labels[:, :, 4:5] = 2
    labels[2, 2, 5] = 3
    labels[:, :, 6:8] = 4
    labels[:, :, 8:12] = 5
    S.build_graph(store, labels, (8, 8, 8))
    S.add_user(store, "ana", "proofreader")
    for a, b in ((1, 2), (2, 3), (3, 4), (4, 5)):
        S.merge(store, a, b, user="ana")
    return store


def test_split_preview_then_commit(bridge):
    before = S.latest_edit_id(bridge)
    preview = S.split(bridge, sources=[1], sinks=[5], user="ana", preview=True)
    assert preview.edit_id is None and S.latest_edit_id(bridge) == before
    assert preview.removed_edges in ([(2, 3)], [(3, 4)])  # one small bridge face, never a big face
    assert sorted(map(len, preview.groups)) == [2, 3]
    committed = S.split(bridge, sources=[1], sinks=[5], user="ana")
    assert committed.removed_edges == preview.removed_edges and committed.groups == preview.groups
    roots = S.roots_of(bridge, [1, 2, 3, 4, 5])
    assert [sorted(g) for g in committed.groups] == [sorted(sv for sv in roots if roots[sv] == r) for r in committed.resulting_roots]


def test_time_travel_by_edit_and_by_time(chain):
    first = S.merge(chain, 1, 2, user="ana")
    time.sleep(0.05)
    moment = S.history(chain)[-1].time
    time.sleep(0.05)
    second = S.merge(chain, 2, 3, user="ana")
    assert S.roots_of(chain, [1, 2, 3], at=0) == {sv: r for sv, r in zip([1, 2, 3], first.affected_roots + [S.roots_of(chain, [3], at=0)[3]])}
    after_first = S.roots_of(chain, [1, 2, 3], at=first.edit_id)
    assert after_first[1] == after_first[2] == first.resulting_roots[0] != after_first[3]
    assert S.roots_of(chain, [1, 2, 3], at=moment.isoformat()) == after_first
    elsewhere = moment.astimezone(timezone(timedelta(hours=-5)))  # the same instant, written in another zone
    assert S.roots_of(chain, [1, 2, 3], at=elsewhere.isoformat()) == after_first
    assert S.roots_of(chain, [1, 2, 3], at=str(second.edit_id)) == S.roots_of(chain, [1, 2, 3])
    assert S.roots_of(chain, [1], at="2000-01-01T00:00:00Z") == S.roots_of(chain, [1], at=0)
    assert S.equivalence_groups(chain, at=first.edit_id) == [[1, 2]]
    assert S.equivalence_groups(chain) == [[1, 2, 3]]
    with pytest.raises(InputError, match="no edit 99"):
        S.roots_of(chain, [1], at=99)
    with pytest.raises(InputError, match="invalid --at"):
        S.roots_of(chain, [1], at="yesterday")


def test_lineage_links_roots_through_edits(chain):
    first = S.merge(chain, 1, 2, user="ana")
    second = S.merge(chain, 2, 3, user="ana")
    cut = S.split(chain, sources=[1], sinks=[3], user="ana")
    family = S.lineage(chain, first.resulting_roots[0])
    assert family["created_edit"] == first.edit_id and family["retired_edit"] == second.edit_id
    assert [step["edit"] for step in family["ancestors"]] == [first.edit_id]
    assert [step["edit"] for step in family["descendants"]] == [second.edit_id, cut.edit_id]
    assert S.supervoxels_of(chain, second.resulting_roots[0]) == [1, 2, 3]
    assert S.supervoxels_of(chain, first.resulting_roots[0]) == [1, 2]


def test_stale_view_is_refused_with_a_conflict(chain):
    seen = S.roots_of(chain, [1, 2, 3])
    S.merge(chain, 2, 3, user="bo")  # someone else changes the neuron of 2 meanwhile
    before = snapshot(chain)
    with pytest.raises(S.ConflictError, match="supervoxel 2 now belongs to neuron"):
        S.merge(chain, 1, 2, user="ana", seen_roots=[seen[1], seen[2]])
    assert snapshot(chain) == before
    fresh = S.roots_of(chain, [1, 2])
    assert S.merge(chain, 1, 2, user="ana", seen_roots=fresh.values()).edit_id == before[0] + 1


def test_undo_refused_when_a_later_edit_depends_on_it(chain):
    merged = S.merge(chain, 1, 2, user="ana")
    S.merge(chain, 2, 3, user="ana")
    S.split(chain, sources=[1], sinks=[2], user="ana")  # removes the 1-2 link the merge added
    before = snapshot(chain)
    with pytest.raises(S.ConflictError, match=f"cannot undo edit {merged.edit_id}"):
        S.undo(chain, merged.edit_id, user="ana")
    assert snapshot(chain) == before


def test_undo_permissions(chain):
    merged = S.merge(chain, 1, 2, user="ana")
    with pytest.raises(RefusedError, match="only their own"):
        S.undo(chain, merged.edit_id, user="bo")
    assert S.undo(chain, merged.edit_id, user="root").operation == "undo"


def test_tokens_are_stored_hashed(chain):
    token = S.add_user(chain, "eve", "viewer")
    assert S.user_for_token(chain, token).name == "eve"
    with read_session(chain.engine) as session:
        stored = session.scalar(select(User.token_sha256).where(User.name == "eve"))
    assert token not in stored and len(stored) == 64
    with pytest.raises(RefusedError, match="unknown or revoked token"):
        S.user_for_token(chain, token + "x")
    with pytest.raises(RefusedError, match="already exists"):
        S.add_user(chain, "eve", "admin")
    with pytest.raises(InputError, match="role must be"):
        S.add_user(chain, "fay", "owner")


BAD_EDITS = [
    ("unknown supervoxel", lambda s: S.merge(s, 1, 999, user="ana"), InputError, "unknown supervoxel 999"),
    ("supervoxel id not a number", lambda s: S.merge(s, 1, "x", user="ana"), InputError, "invalid supervoxel id"),
    ("merge a neuron with itself", lambda s: S.merge(s, 1, 2, user="ana"), RefusedError, "already in one neuron"),
    ("split with a supervoxel in both sets", lambda s: S.split(s, [1, 2], [2], user="ana"), InputError, "both a source and a sink"),
    ("split across neurons", lambda s: S.split(s, [1], [5], user="ana"), RefusedError, "must be in one neuron"),
    ("split without sinks", lambda s: S.split(s, [1], [], user="ana"), InputError, "at least one source and one sink"),
    ("undo of an unknown edit", lambda s: S.undo(s, 42, user="ana"), InputError, "no edit 42"),
    ("undo of an already undone edit", lambda s: S.undo(s, 2, user="ana"), RefusedError, "already undone"),
    ("redo of an edit never undone", lambda s: S.redo(s, 1, user="ana"), RefusedError, "nothing to redo"),
    ("undo of an undo", lambda s: S.undo(s, 3, user="ana"), InputError, "itself an undo"),
    ("viewer writing", lambda s: S.merge(s, 4, 5, user=S.user_for_token(s, s.viewer_token)), RefusedError, "viewer role"),
    ("unknown user", lambda s: S.merge(s, 4, 5, user="nobody"), InputError, "unknown user"),
]


@pytest.mark.parametrize("case, call, error, message", BAD_EDITS, ids=[case[0] for case in BAD_EDITS])
def test_bad_input_is_refused_and_changes_nothing(chain, case, call, error, message):
    chain.viewer_token = S.add_user(chain, "viewer2", "viewer")
    S.merge(chain, 1, 2, user="ana")  # edit 1
    S.merge(chain, 2, 3, user="ana")  # edit 2
    S.undo(chain, 2, user="ana")  # edit 3
    before = snapshot(chain)
    with pytest.raises(error, match=message) as raised:
        call(chain)
    assert "\n" not in str(raised.value)
    assert snapshot(chain) == before


def test_merge_points_reads_the_segmentation_layer(chain, tmp_path):
    path = tmp_path / "labels.npy"
    np.save(path, chain_labels())
    S.add_layer(chain, "seg", str(path), "segmentation", (40, 8, 8))
    result = S.merge_points(chain, (20.0, 4.0, 4.0), (20.0, 4.0, 20.0), user="ana")
    assert result.added_edges == [(1, 2)]
    with pytest.raises(InputError, match="background"):
        S.supervoxel_at(chain, (20.0, 4.0, 100.0))


def test_minimum_cut_costs_what_networkx_finds():
    """The scipy max-flow cut has the same capacity as networkx's reference implementation."""
    import networkx as nx

    rng = np.random.default_rng(5)
    for trial in range(20):
        nodes = 30
        pairs = {(int(a), int(b)) for a, b in rng.integers(1, nodes + 1, size=(70, 2)) if a < b}
        rows = [(i, a, b, float(rng.uniform(10, 1000)), float(rng.uniform(0, 1))) for i, (a, b) in enumerate(sorted(pairs))]
        graph = nx.Graph()
        for _, a, b, area, score in rows:
            graph.add_edge(a, b, capacity=area * (1 - score))
        component = max(nx.connected_components(graph), key=len)
        source, sink = sorted(component)[0], sorted(component)[-1]
        reference, _ = nx.minimum_cut(graph, source, sink)
        inside = [r for r in rows if r[1] in component]
        nodes = np.array(sorted(component))
        a = np.searchsorted(nodes, [r[1] for r in inside])
        b = np.searchsorted(nodes, [r[2] for r in inside])
        capacity = mincut.edge_capacities(np.array([r[3] for r in inside]), np.array([r[4] for r in inside]))
        mask = mincut.minimum_cut(len(nodes), a, b, capacity, np.searchsorted(nodes, [source]),
                                  np.searchsorted(nodes, [sink]))
        cut = [(r[1], r[2]) for r, removed in zip(inside, mask) if removed]
        capacity_of = {(a, b): area * (1 - score) for _, a, b, area, score in rows}
        assert sum(capacity_of[pair] for pair in cut) == pytest.approx(reference, rel=1e-4)
        remaining = nx.Graph([(a, b) for _, a, b, _, _ in rows if (a, b) not in set(cut)])
        remaining.add_nodes_from(component)
        assert not nx.has_path(remaining, source, sink)


def test_sqlite_wal_is_checkpointed_in_the_background_until_close(tmp_path):
    """Edits never pay for a checkpoint: a thread copies the WAL into the database file."""
    import sqlite3

    from db.connection import checkpointer_for

    path = tmp_path / "store.db"
    proofreading = S.open_store(f"sqlite:///{path}")
    S.add_user(proofreading, "alice", "admin")

    def users_in_database_file() -> list[str]:
        """Read the main file alone (immutable: no WAL), as a crash right now would leave it."""
        connection = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
        try:
            return [name for (name,) in connection.execute("SELECT name FROM users")]
        except sqlite3.OperationalError:  # not even the schema has been copied over yet
            return []
        finally:
            connection.close()

    deadline = time.monotonic() + 10
    while users_in_database_file() != ["alice"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert users_in_database_file() == ["alice"]
    checkpointer = checkpointer_for(proofreading.engine)
    assert checkpointer is not None and checkpointer.running
    proofreading.close()
    time.sleep(1.0)  # the thread wakes every 0.5 s and sees it was stopped
    assert not checkpointer.running and checkpointer_for(proofreading.engine) is None


def test_small_graph_components_agree_with_scipy(monkeypatch):
    """Edits on a few edges take a Python union-find; it must group exactly as the scipy path does."""
    rng = np.random.default_rng(5)
    for size in (1, 2, 7, 40, 200):
        nodes = [int(v) for v in rng.choice(10**9, size=size, replace=False)]
        pairs = [(nodes[i], nodes[j]) for i, j in rng.integers(0, size, size=(int(size * 0.7), 2))]
        fast = mincut.components(nodes, pairs)
        monkeypatch.setattr(mincut, "SMALL_GRAPH_EDGES", 0)
        assert fast == mincut.components(nodes, pairs), size
        monkeypatch.setattr(mincut, "SMALL_GRAPH_EDGES", 256)
        assert sorted(v for group in fast for v in group) == sorted(nodes)


def test_graph_built_with_an_agglomeration_starts_with_its_neurons(store):
    """An agglomeration made elsewhere (supervoxel -> group) becomes the neurons of edit 0: one root per connected
    group (a group whose supervoxels do not touch is one neuron per piece), linked wherever its supervoxels touch,
    so it splits, undoes and time-travels like neurons built by merges."""
    from store_testing import check_partition

    labels = chain_labels()  # 1-2-3-4-5-6 in a row, 7 alone
    counts = S.build_graph(store, labels, (40.0, 8.0, 8.0), agglomeration={1: 10, 2: 10, 3: 10, 5: 20, 6: 20, 7: 20})
    assert counts["neurons"] == 4  # {1, 2, 3}, {4}, {5, 6}, {7} (7 does not touch 5 or 6)
    roots = S.roots_of(store, range(1, 8))
    assert roots[1] == roots[2] == roots[3] and roots[5] == roots[6]
    assert len({roots[1], roots[4], roots[5], roots[7]}) == 4
    assert S.roots_of(store, range(1, 8), at=0) == roots
    check_partition(store)

    S.add_user(store, "ana", "proofreader")
    cut = S.split(store, [1], [3], user="ana")
    assert len(cut.resulting_roots) == 2 and S.root_of(store, 1) != S.root_of(store, 3)
    merged = S.merge(store, 3, 4, user="ana")
    assert S.root_of(store, 4) == S.root_of(store, 3)
    check_partition(store)
    S.undo(store, merged.edit_id, user="ana")
    S.undo(store, cut.edit_id, user="ana")
    assert S.roots_of(store, range(1, 8)) != roots  # new versions, never the old ids again
    assert {frozenset(g) for g in S.equivalence_groups(store)} == {frozenset({1, 2, 3}), frozenset({5, 6})}
    assert S.roots_of(store, range(1, 8), at=0) == roots
    check_partition(store)
