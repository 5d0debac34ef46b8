"""Connectivity export: synapse, edge and neuron tables as DataFrames and as CSV, Parquet and neuPrint files."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import require

from db import store as S, synapse_store
from db.export import export_connectivity, positions_zyx
from store_testing import BACKENDS, fresh_database_url, grid_labels, postgres_url
from volumes.errors import InputError

BIG_SUPERVOXEL = 2**40 + 7  # ids beyond 2^32 (and beyond float32) must survive exactly


@pytest.fixture(params=BACKENDS)
def wired(request, tmp_path):
    """A 2x2x3 grid (plus one 2^40-sized id) with random synapses and two merges."""
    if request.param == "postgresql":
        require(postgres_url() is not None, "CONNECTOME_TEST_POSTGRES_URL is not set")
    labels = grid_labels((2, 2, 3)).astype(np.uint64)
    labels[labels == 12] = BIG_SUPERVOXEL
    with fresh_database_url(request.param, tmp_path) as url, S.open_store(url) as store:
        S.build_graph(store, labels, (40, 8, 8))
        S.add_user(store, "ana", "proofreader")
        rng = np.random.default_rng(0)
        ids = np.array(list(range(1, 12)) + [BIG_SUPERVOXEL])
        synapses = pd.DataFrame({
            "position_z_nm": rng.uniform(0, 100, 60), "position_y_nm": rng.uniform(0, 100, 60),
            "position_x_nm": rng.uniform(0, 100, 60),
            "pre_supervoxel_id": rng.choice(ids, 60), "post_supervoxel_id": rng.choice(ids, 60),
            "score": rng.uniform(0, 1, 60), "size": rng.integers(1, 50, 60).astype(float)})
        assert S.add_synapses(store, synapses) == 60
        first = S.merge(store, 1, 2, user="ana")
        S.merge(store, 2, BIG_SUPERVOXEL, user="ana")
        store.first_edit = first.edit_id
        store.synapse_rows = synapses
        yield store


def expected_tables(store: S.Store, at) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Edges and neurons recomputed by brute force from roots_of and the inserted rows."""
    rows = store.synapse_rows
    svs = sorted(set(rows["pre_supervoxel_id"]) | set(rows["post_supervoxel_id"]) | set(range(1, 12)) | {BIG_SUPERVOXEL})
    roots = S.roots_of(store, svs, at=at)
    edges: dict[tuple[int, int], list[float]] = {}
    for pre, post, size in zip(rows["pre_supervoxel_id"], rows["post_supervoxel_id"], rows["size"]):
        entry = edges.setdefault((roots[pre], roots[post]), [0, 0.0])
        entry[0] += 1
        entry[1] += size
    edge_frame = pd.DataFrame([(a, b, n, s) for (a, b), (n, s) in edges.items()],
                              columns=["pre_root_id", "post_root_id", "n_synapses", "size"])
    members: dict[int, int] = {}
    for sv in svs:
        members[roots[sv]] = members.get(roots[sv], 0) + 1
    neuron_frame = pd.DataFrame(sorted(members.items()), columns=["root_id", "n_supervoxels"])
    return edge_frame, neuron_frame


@pytest.mark.parametrize("when", ["now", "first edit", "built graph"])
def test_tables_match_a_brute_force_count(wired, when):
    at = {"now": None, "first edit": wired.first_edit, "built graph": 0}[when]
    synapses = S.synapse_table(wired, at=at)
    assert list(synapses.columns) == S.SYNAPSE_COLUMNS
    assert len(synapses) == 60
    rows = wired.synapse_rows
    assert synapses["pre_pt_supervoxel_id"].tolist() == rows["pre_supervoxel_id"].tolist()
    assert np.allclose(positions_zyx(synapses["ctr_pt_position"]), rows[["position_z_nm", "position_y_nm", "position_x_nm"]])
    roots = S.roots_of(wired, synapses["pre_pt_supervoxel_id"].tolist(), at=at)
    assert synapses["pre_pt_root_id"].tolist() == [roots[sv] for sv in synapses["pre_pt_supervoxel_id"]]

    expected_edges, expected_neurons = expected_tables(wired, at)
    edges = S.edge_table(wired, at=at)
    key = ["pre_root_id", "post_root_id"]
    merged = edges.merge(expected_edges, on=key, suffixes=("", "_expected"), how="outer", validate="one_to_one")
    assert (merged["n_synapses"] == merged["n_synapses_expected"]).all()
    assert np.allclose(merged["size"], merged["size_expected"])
    neurons = S.neuron_table(wired, at=at)
    assert neurons["root_id"].tolist() == expected_neurons["root_id"].tolist()
    assert neurons["n_supervoxels"].tolist() == expected_neurons["n_supervoxels"].tolist()
    assert neurons["voxels"].sum() == 12 * 8
    assert neurons["n_pre"].sum() == neurons["n_post"].sum() == 60


def test_root_synapses(wired):
    root = S.root_of(wired, 1)
    mine = S.synapses_of_root(wired, root)
    assert len(mine) > 0
    assert ((mine["pre_pt_root_id"] == root) | (mine["post_pt_root_id"] == root)).all()
    everything = S.synapse_table(wired)
    assert len(mine) == ((everything["pre_pt_root_id"] == root) | (everything["post_pt_root_id"] == root)).sum()


@pytest.mark.parametrize("file_format", ["csv", "parquet", "neuprint"])
def test_export_files(wired, tmp_path, file_format):
    written = export_connectivity(wired, tmp_path / "out", file_format, at=wired.first_edit)
    suffix = "parquet" if file_format == "parquet" else "csv"
    for name in ("synapses", "edges", "neurons"):
        assert written[name] == tmp_path / "out" / f"{name}.{suffix}"
    expected = S.synapse_table(wired, at=wired.first_edit)
    if file_format == "parquet":
        table = pq.read_table(written["synapses"]).to_pandas()
        assert table["pre_pt_root_id"].tolist() == expected["pre_pt_root_id"].tolist()
        assert np.allclose(np.stack(table["post_pt_position"].to_numpy()), positions_zyx(expected["post_pt_position"]))
    else:
        table = pd.read_csv(written["synapses"], dtype=str)
        assert table["pre_pt_root_id"].tolist() == [str(r) for r in expected["pre_pt_root_id"]]
        assert str(BIG_SUPERVOXEL) in set(table["pre_pt_supervoxel_id"]) | set(table["post_pt_supervoxel_id"])
        assert np.allclose(np.array([json.loads(p) for p in table["ctr_pt_position"]]), positions_zyx(expected["ctr_pt_position"]))
    if file_format == "neuprint":
        neurons = pd.read_csv(tmp_path / "out" / "Neuprint_Neurons.csv", dtype=str)
        assert list(neurons.columns[:4]) == [":ID(Body-ID)", "bodyId:long", "pre:int", "post:int"]
        connections = pd.read_csv(tmp_path / "out" / "Neuprint_Neuron_Connections.csv")
        assert connections["weight:int"].sum() == 60
        sites = pd.read_csv(tmp_path / "out" / "Neuprint_Synapses.csv")
        assert len(sites) == 120 and set(sites["type:string"]) == {"pre", "post"}
        links = pd.read_csv(tmp_path / "out" / "Neuprint_Synapse_Connections.csv")
        assert len(links) == 60
        set_links = pd.read_csv(tmp_path / "out" / "Neuprint_SynapseSet_to_SynapseSet.csv", dtype=str)
        assert all(start.endswith("_pre") and end.endswith("_post") for start, end in set_links.to_numpy())
        assert len(set_links) == len(S.edge_table(wired, at=wired.first_edit))  # one per connected pair
        meta = pd.read_csv(tmp_path / "out" / "Neuprint_Meta.csv")
        assert meta["totalPreCount:int"].tolist() == [60] and meta["lastDatabaseEdit:string"].notna().all()
    assert not list((tmp_path / "out").glob(".*tmp"))


def test_export_refuses_bad_arguments(wired, tmp_path):
    with pytest.raises(InputError, match="export format"):
        export_connectivity(wired, tmp_path, "xlsx")
    with pytest.raises(InputError, match="no edit 99"):
        export_connectivity(wired, tmp_path, "csv", at=99)


def test_add_synapses_refuses_unknown_supervoxels(wired):
    before = len(S.synapse_table(wired))
    with pytest.raises(InputError, match="unknown post-synaptic supervoxel"):
        S.add_synapses(wired, [{"position_nm": (1, 2, 3), "pre_supervoxel_id": 1, "post_supervoxel_id": 999}])
    with pytest.raises(InputError, match="position_nm"):
        S.add_synapses(wired, [{"position_nm": (1, 2), "pre_supervoxel_id": 1, "post_supervoxel_id": 2}])
    assert len(S.synapse_table(wired)) == before


@pytest.mark.parametrize("backend", BACKENDS)
def test_bulk_synapses_round_trip_exactly(backend, tmp_path, monkeypatch):
    """A load spanning several synapse blocks reads back bit for bit, in id order, answers a
    per-neuron query, and writes uint64 ids to Parquet."""
    if backend == "postgresql":
        require(postgres_url() is not None, "CONNECTOME_TEST_POSTGRES_URL is not set")
    labels = grid_labels((2, 2, 3)).astype(np.uint64)
    labels[labels == 12] = BIG_SUPERVOXEL
    monkeypatch.setattr(synapse_store, "SYNAPSE_BLOCK_ROWS", 50_000)  # several blocks, at a test's size
    count = synapse_store.SYNAPSE_BLOCK_ROWS + 17
    rng = np.random.default_rng(3)
    ids = np.array(list(range(1, 12)) + [BIG_SUPERVOXEL])
    rows = pd.DataFrame({"position_z_nm": rng.uniform(0, 1e5, count) / 3, "position_y_nm": rng.normal(0, 1e-300, count),
                         "position_x_nm": rng.uniform(-1, 1, count) * 1e200,
                         "pre_supervoxel_id": rng.choice(ids, count), "post_supervoxel_id": rng.choice(ids, count),
                         "score": rng.uniform(0, 1, count) / 7, "size": rng.uniform(0, 1e9, count)})
    with fresh_database_url(backend, tmp_path) as url, S.open_store(url) as store:
        S.build_graph(store, labels, (40, 8, 8))
        S.add_user(store, "ana", "proofreader")
        assert S.add_synapses(store, rows) == count
        S.merge(store, 1, BIG_SUPERVOXEL, user="ana")
        table = S.synapse_table(store)
        assert table["id"].is_monotonic_increasing and len(table) == count
        assert np.array_equal(positions_zyx(table["ctr_pt_position"]), rows[["position_z_nm", "position_y_nm", "position_x_nm"]])
        assert np.array_equal(table["score"], rows["score"]) and np.array_equal(table["size"], rows["size"])
        assert table["post_pt_supervoxel_id"].tolist() == rows["post_supervoxel_id"].tolist()
        assert (table["pre_pt_root_id"] == S.root_of(store, 1)).sum() == rows["pre_supervoxel_id"].isin([1, BIG_SUPERVOXEL]).sum()
        with store.engine.connect() as connection:
            assert connection.exec_driver_sql("SELECT count(*) FROM synapse_blocks").scalar_one() == 2
        of_root = S.synapses_of_root(store, S.root_of(store, 7))
        touching = (rows["pre_supervoxel_id"] == 7) | (rows["post_supervoxel_id"] == 7)
        assert of_root["id"].tolist() == table["id"][touching.to_numpy()].tolist()
        written = export_connectivity(store, tmp_path / "out", "parquet")
        schema = pq.read_schema(written["synapses"])
        assert all(schema.field(name).type == "uint64" for name in ("id", "pre_pt_root_id", "post_pt_supervoxel_id"))
        assert pq.read_table(written["synapses"]).column("pre_pt_supervoxel_id").to_pylist() == rows["pre_supervoxel_id"].tolist()


@pytest.mark.parametrize("file_format", ["csv", "parquet", "neuprint"])
def test_annotations_are_exported_with_the_neurons(wired, tmp_path, file_format):
    S.set_neuron_field(wired, BIG_SUPERVOXEL, "status", "Done", user="ana")
    S.set_neuron_field(wired, 1, "cell_type", "KC", user="ana")
    S.add_annotation(wired, "bookmark", "cleft", user="ana", position_nm=(10.0, 20.0, 30.0))
    written = export_connectivity(wired, tmp_path / "out", file_format)
    root = S.root_of(wired, 1)
    if file_format == "parquet":
        neurons = pq.read_table(written["neurons"]).to_pandas()
        notes = pq.read_table(written["annotations"]).to_pandas()
        assert pq.read_schema(written["annotations"]).field("pt_root_id").type == "uint64"
        assert notes["pt_root_id"].tolist() == [root, root, 0]
    else:
        neurons = pd.read_csv(written["neurons"], dtype=str, keep_default_na=False)
        notes = pd.read_csv(written["annotations"], dtype=str)
        assert notes["pt_root_id"].tolist() == [str(root), str(root), "0"]
        assert notes["pt_supervoxel_id"].tolist()[0] == str(BIG_SUPERVOXEL)
    mine = neurons[neurons["root_id"].astype(str) == str(root)].iloc[0]
    assert (mine["status"], mine["cell_type"]) == ("Done", "KC")
    assert notes["kind"].tolist() == ["status", "cell_type", "bookmark"]
    if file_format == "neuprint":
        body = pd.read_csv(tmp_path / "out" / "Neuprint_Neurons.csv", dtype=str, keep_default_na=False)
        row = body[body[":ID(Body-ID)"] == str(root)].iloc[0]
        assert (row["status:string"], row["type:string"]) == ("Done", "KC")
