"""The store's synapses as Neuroglancer precomputed annotation sources (server/synapse_source.py).

Decoded here by the format's own description (Neuroglancer's annotations.md), not by our encoder."""
from __future__ import annotations

import struct

import numpy as np
import requests

from test_server_api import auth, served, built  # noqa: F401  (fixtures)


def decode_many(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Multiple-annotation encoding of ellipsoids with a float32 and a uint32 property: centres, radii, scores, ids."""
    (count,) = struct.unpack_from("<Q", data, 0)
    record = 6 * 4 + 4 + 4
    assert len(data) == 8 + count * (record + 8)
    body = np.frombuffer(data, dtype=np.uint8, count=count * record, offset=8).reshape(count, record)
    floats = body[:, :28].copy().view("<f4")
    ids = np.frombuffer(data, dtype="<u8", count=count, offset=8 + count * record)
    return floats[:, :3], floats[:, 3:6], floats[:, 6], ids


def synthetic_columns(count: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    clustered = rng.normal([2000, 6000, 6000], [300, 500, 500], (count // 2, 3))  # a dense cluster (z, y, x nm)
    spread = rng.uniform([0, 0, 0], [4000, 12000, 12000], (count - count // 2, 3))
    centres = np.clip(np.concatenate([clustered, spread]), 0, [3999, 11999, 11999])
    return {"id": np.arange(100, 100 + count, dtype=np.int64), "ctr": centres, "pre": centres - 5, "post": centres + 5,
            "pre_sv": rng.integers(1, 500, count), "post_sv": rng.integers(1, 500, count),
            "score": rng.random(count), "size": rng.integers(1, 1000, count).astype(np.float64)}


def test_spatial_index_follows_the_formats_recipe():
    from server.synapse_source import SPATIAL_LIMIT, SynapseIndex

    columns = synthetic_columns(60_000)
    index = SynapseIndex(columns, 40.0, (np.zeros(3), np.array([12000.0, 12000.0, 4000.0])))
    info = index.info("pre")
    extent = np.asarray(info["upper_bound"]) - np.asarray(info["lower_bound"])
    seen: list[np.ndarray] = []
    previous = None
    for level, spec in enumerate(info["spatial"]):
        chunk, grid = np.asarray(spec["chunk_size"]), np.asarray(spec["grid_shape"])
        np.testing.assert_allclose(chunk * grid, extent)
        if previous is not None:  # each side equal to or half the coarser level's, never finer than the longest / 2
            assert all(np.isclose(c, p) or np.isclose(c, p / 2) for c, p in zip(chunk, previous))
        previous = chunk
        for x, y, z in np.ndindex(*grid):
            data = index.encode_many("pre", index.cell("pre", level, (x, y, z)))
            centres, _, _, ids = decode_many(data)
            if level < len(info["spatial"]) - 1:
                assert len(ids) <= SPATIAL_LIMIT * 1.2  # a random share: the limit on average
            low = np.asarray(info["lower_bound"]) + chunk * [x, y, z]
            assert np.all(centres >= low - 1e-3) and np.all(centres <= low + chunk + 1e-3)
            seen.append(ids)
    ids = np.concatenate(seen)
    assert len(ids) == len(np.unique(ids)) == len(columns["id"]), "every synapse in exactly one cell of one level"
    assert len(info["spatial"]) > 2  # the cluster needs finer levels than the spread


def test_related_and_by_id_lookups_match_the_columns():
    from server.synapse_source import SynapseIndex

    columns = synthetic_columns(5_000, seed=1)
    index = SynapseIndex(columns, 40.0, (np.zeros(3), np.array([12000.0, 12000.0, 4000.0])))
    for supervoxel in (1, 17, 250):
        _, _, _, ids = decode_many(index.encode_many("post", index.related("post_segment", np.array([supervoxel]))))
        assert sorted(ids.tolist()) == sorted(columns["id"][columns["post_sv"] == supervoxel].tolist())
    both = index.related("pre_segment", np.array([3, 4]))
    assert sorted(index.ids[both].tolist()) == sorted(columns["id"][np.isin(columns["pre_sv"], [3, 4])].tolist())
    row = 1234
    single = index.by_id("post", int(columns["id"][row]))
    centre = struct.unpack_from("<3f", single, 0)
    np.testing.assert_allclose(centre, columns["post"][row][::-1], atol=1e-2)  # x, y, z nm
    (pre_count,) = struct.unpack_from("<I", single, 32)
    pre, = struct.unpack_from("<Q", single, 36)
    (post_count,) = struct.unpack_from("<I", single, 44)
    post, = struct.unpack_from("<Q", single, 48)
    assert (pre_count, pre, post_count, post) == (1, columns["pre_sv"][row], 1, columns["post_sv"][row])
    assert len(single) == 56
    assert index.by_id("post", 99) is None


def test_served_synapses_follow_the_store(served):
    """Over HTTP: the viewer-role login reads them; a neuron id answers its supervoxels' synapses, also after a merge;
    nothing per synapse is in a viewer's state."""
    from db import store
    from server.auth import Caller
    from server.neuron_graph import viewer_segment_id

    server, tokens, supervoxels = served
    base = f"{server.url}/synapses"
    assert requests.get(f"{base}/pre/info").status_code == 401
    info = requests.get(f"{base}/pre/info", headers=auth(tokens["vic"]))
    assert info.status_code == 200 and info.json()["annotation_type"] == "ELLIPSOID"
    assert [r["id"] for r in info.json()["relationships"]] == ["pre_segment", "post_segment"]
    table = store.synapse_table(server.store)
    for _, synapse in table.iterrows():
        pre = int(synapse["pre_pt_supervoxel_id"])
        answer = requests.get(f"{base}/pre/pre_segment/{pre}", headers=auth(tokens["vic"]))
        centres, _, _, ids = decode_many(answer.content)
        assert int(synapse["id"]) in ids.tolist()
        row = ids.tolist().index(int(synapse["id"]))
        np.testing.assert_allclose(centres[row], np.asarray(synapse["pre_pt_position"])[::-1], atol=1e-2)
    a = supervoxels[0]
    mine = set(table.id[(table.pre_pt_supervoxel_id == a) | (table.post_pt_supervoxel_id == a)].tolist())
    partner = next(sv for sv in set(table.pre_pt_supervoxel_id) | set(table.post_pt_supervoxel_id) if sv != a)
    merged = store.merge(server.store, a, int(partner), user="ana")
    try:
        neuron = viewer_segment_id(merged.resulting_roots[0])
        expected = set(table.id[table.pre_pt_supervoxel_id.isin([a, partner])].tolist())
        _, _, _, ids = decode_many(requests.get(f"{base}/post/pre_segment/{neuron}", headers=auth(tokens["vic"])).content)
        assert set(ids.tolist()) == expected and mine & expected
    finally:
        store.undo(server.store, merged.edit_id, user="ana")
    assert decode_many(requests.get(f"{base}/pre/pre_segment/987654321", headers=auth(tokens["vic"])).content)[3].size == 0
    for bad in ("by_id/abc", "spatial0/0_0", "spatial99/0_0_0", "nothing/1", "pre_segment/0"):
        assert requests.get(f"{base}/pre/{bad}", headers=auth(tokens["vic"])).status_code == 404, bad
    state = server.viewer_for(Caller("vic", "viewer")).viewer.state.to_json()
    synapse_layers = [layer for layer in state["layers"] if layer["type"] == "annotation"]
    assert [layer["source"][0]["url"].rsplit("/", 1)[1] for layer in synapse_layers] == ["pre", "post"]
    assert all("annotations" not in layer for layer in synapse_layers)
