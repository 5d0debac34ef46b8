"""`connectome mesh`: per-supervoxel meshes of a FIB-25 crop, multi-resolution (sharded) or legacy, chunked and resumable.

The multi-resolution files are read back with cloud-volume's own reader (an implementation of the
format that is not ours) and checked against what Neuroglancer's reader requires of them.
"""
from __future__ import annotations

import json
import struct

import DracoPy
import h5py
import numpy as np
import pytest

CROP = (slice(100, 164),) * 3
RESOLUTION_NM = np.array([10.0, 10.0, 10.0])
OFFSET_VOXELS = (100, 100, 100)


def make_workspace(root, labels):
    from volumes.precomputed import write_layer
    from volumes.workspace import Workspace

    workspace = Workspace.init(root)
    write_layer(workspace.layer_path("segmentation"), labels, tuple(RESOLUTION_NM), "segmentation",
                voxel_offset=OFFSET_VOXELS, progress=False)
    return workspace


@pytest.fixture(scope="module")
def labels(fib25_h5):
    with h5py.File(fib25_h5, "r") as f:
        return f["volumes/labels/neuroproof_oversegmentation"][CROP]


@pytest.fixture(scope="module")
def meshed(tmp_path_factory, labels):
    from volumes.meshing import mesh_segmentation

    workspace = make_workspace(tmp_path_factory.mktemp("mesh") / "ws", labels)
    count = mesh_segmentation(workspace, "segmentation", chunk_shape=(32, 32, 32), progress=False)
    return workspace, count


@pytest.fixture(scope="module")
def legacy(tmp_path_factory, labels):
    from volumes.meshing import mesh_segmentation

    workspace = make_workspace(tmp_path_factory.mktemp("legacy") / "ws", labels)
    count = mesh_segmentation(workspace, "segmentation", chunk_shape=(32, 32, 32), mesh_format="legacy", progress=False)
    return workspace, count


def largest_supervoxels(labels, n: int) -> list[int]:
    ids, counts = np.unique(labels[labels > 0], return_counts=True)
    return [int(i) for i in ids[np.argsort(-counts)][:n]]


def supervoxel_box_nm(labels, supervoxel: int) -> tuple[np.ndarray, np.ndarray]:
    voxels = np.argwhere(labels == supervoxel)
    offset_nm = np.asarray(OFFSET_VOXELS) * RESOLUTION_NM
    low_nm = (voxels.min(axis=0) * RESOLUTION_NM + offset_nm)[::-1]  # x, y, z like the mesh
    high_nm = ((voxels.max(axis=0) + 1) * RESOLUTION_NM + offset_nm)[::-1]
    return low_nm, high_nm


def mesh_nodes(layer_path, supervoxel: int) -> tuple[object, str, list[tuple[int, tuple[int, int, int], int, bytes]]]:
    """(manifest, shard file name, [(lod, node, start byte in the shard, Draco bytes)]) of one supervoxel,
    found by the sharded format's rules: its fragments lie in the shard just before its manifest."""
    from cloudvolume import CloudVolume
    from cloudvolume.datasource.precomputed.sharding import ShardingSpecification

    manifest = CloudVolume("precomputed://file://" + str(layer_path)).mesh.get_manifest(supervoxel)
    mesh_dir = layer_path / "mesh"
    spec = ShardingSpecification.from_dict(json.loads((mesh_dir / "info").read_text())["sharding"])
    shard_name = f"{spec.compute_shard_location(supervoxel).shard_number}.shard"
    shard = (mesh_dir / shard_name).read_bytes()
    position = int(manifest.shard_offset) - int(sum(int(np.sum(o)) for o in manifest.fragment_offsets))
    nodes = []
    for lod, (positions, offsets) in enumerate(zip(manifest.fragment_positions, manifest.fragment_offsets)):
        for node, size in zip(np.asarray(positions).reshape(-1, 3), np.asarray(offsets)):
            nodes.append((lod, tuple(int(c) for c in node), position, shard[position:position + int(size)]))
            position += int(size)
    return manifest, shard_name, nodes


def read_multires(workspace, supervoxel: int):
    """(manifest, per lod [(node, Draco bytes)]) of one supervoxel of the workspace's segmentation."""
    manifest, _, nodes = mesh_nodes(workspace.layer_path("segmentation"), supervoxel)
    per_lod = [[(node, data) for lod, node, _, data in nodes if lod == level] for level in range(len(manifest.lod_scales))]
    return manifest, per_lod


def test_multires_meshes_are_sharded_and_read_back_by_cloud_volume(meshed, labels):
    workspace, count = meshed
    layer = workspace.layer_path("segmentation")
    ids = set(int(i) for i in np.unique(labels)) - {0}
    assert count == len(ids)
    assert json.loads((layer / "info").read_text())["mesh"] == "mesh"
    info = json.loads((layer / "mesh" / "info").read_text())
    assert info["@type"] == "neuroglancer_multilod_draco" and info["vertex_quantization_bits"] == 16
    assert info["sharding"]["@type"] == "neuroglancer_uint64_sharded_v1"
    names = sorted(p.name for p in (layer / "mesh").iterdir())
    shards = [n for n in names if n.endswith(".shard")]
    assert len(shards) == 2 ** info["sharding"]["shard_bits"] and set(names) - set(shards) == {"info", "meshed.json"}
    assert not (layer / "mesh.partial").exists()

    from cloudvolume import CloudVolume

    cloud_volume = CloudVolume(workspace.layer_url("segmentation"))
    for supervoxel in largest_supervoxels(labels, 5):
        low_nm, high_nm = supervoxel_box_nm(labels, supervoxel)
        mesh = cloud_volume.mesh.get(supervoxel, lod=0)[supervoxel]
        margin_nm = 2 * RESOLUTION_NM
        assert np.all(mesh.vertices >= low_nm - margin_nm) and np.all(mesh.vertices <= high_nm + margin_nm), supervoxel
        assert np.all(np.ptp(mesh.vertices, axis=0) >= (high_nm - low_nm) * 0.5)
        assert len(mesh.faces) > 0 and mesh.faces.max() < len(mesh.vertices)


def test_coarser_levels_have_fewer_triangles_and_follow_neuroglancers_octree_rules(meshed, labels):
    workspace, _ = meshed
    for supervoxel in largest_supervoxels(labels, 5):
        manifest, per_lod = read_multires(workspace, supervoxel)
        assert len(per_lod) >= 2, f"supervoxel {supervoxel} spans several nodes but has one level of detail"
        triangles = [sum(len(DracoPy.decode(data).faces) for _, data in nodes if data) for nodes in per_lod]
        assert all(coarse < fine for fine, coarse in zip(triangles, triangles[1:])), triangles
        assert list(np.asarray(manifest.lod_scales)) == sorted(manifest.lod_scales)
        for lod, nodes in enumerate(per_lod):
            keys = [_zorder(node) for node, _ in nodes]
            assert keys == sorted(keys), f"lod {lod} nodes not in z-curve order"
            if lod:
                parents = {node for node, _ in nodes}
                assert {tuple(c >> 1 for c in child) for child, _ in per_lod[lod - 1]} <= parents
            for _, data in nodes:
                if not data:
                    continue
                points = DracoPy.decode(data).points
                assert points.min() >= 0 and points.max() <= 65535 and np.all(points == np.round(points))
                if lod:  # no triangle crosses the node's 2x2x2 split at 32768 (what the viewer's decoder cuts by)
                    faces = DracoPy.decode(data).faces
                    corners = points[faces]  # [triangles, 3 vertices, xyz]
                    low, high = (corners <= 32768).all(axis=1), (corners >= 32768).all(axis=1)
                    assert np.all(low | high)


def _zorder(node) -> int:
    return sum(((node[axis] >> bit) & 1) << (3 * bit + axis) for bit in range(16) for axis in range(3))


def test_legacy_format_writes_a_manifest_per_supervoxel(legacy, labels):
    workspace, count = legacy
    mesh_dir = workspace.layer_path("segmentation") / "mesh"
    ids = set(int(i) for i in np.unique(labels)) - {0}
    assert count == len(ids)
    assert json.loads((mesh_dir / "info").read_text()) == {"@type": "neuroglancer_legacy_mesh"}
    assert {int(p.name.split(":")[0]) for p in mesh_dir.iterdir() if p.name.endswith(":0")} == ids
    for supervoxel in largest_supervoxels(labels, 3):
        fragments = json.loads((mesh_dir / f"{supervoxel}:0").read_text())["fragments"]
        vertices = []
        for name in fragments:
            data = (mesh_dir / name).read_bytes()
            (vertex_count,) = struct.unpack("<I", data[:4])
            vertices.append(np.frombuffer(data, dtype="<f4", count=3 * vertex_count, offset=4).reshape(-1, 3))
        low_nm, high_nm = supervoxel_box_nm(labels, supervoxel)
        vertices = np.concatenate(vertices)
        assert np.all(vertices >= low_nm - 2 * RESOLUTION_NM) and np.all(vertices <= high_nm + 2 * RESOLUTION_NM)
        if np.ptp(np.argwhere(labels == supervoxel), axis=0).max() > 40:  # spans chunk borders
            assert len(fragments) > 1


def test_far_fewer_files_than_legacy(meshed, legacy):
    multires_files = list((meshed[0].layer_path("segmentation") / "mesh").iterdir())
    legacy_files = list((legacy[0].layer_path("segmentation") / "mesh").iterdir())
    assert len(multires_files) == 3 and len(legacy_files) > 150  # info, summary, one shard; 184 files for legacy


def test_an_interrupted_run_resumes_to_the_same_files(tmp_path, labels, meshed, monkeypatch):
    """Stopped in stage 1 (chunks) and again in stage 3 (shards), then resumed: byte-identical to one run."""
    import volumes.meshing as meshing

    workspace = make_workspace(tmp_path / "ws", labels)
    monkeypatch.setattr(meshing, "SHARD_TARGET_BYTES", 20_000)  # several shards, so stage 3 can stop between them
    reference = make_workspace(tmp_path / "reference", labels)
    meshing.mesh_segmentation(reference, "segmentation", chunk_shape=(32, 32, 32), progress=False)

    real_mesh_chunk, real_encode = meshing._mesh_chunk, meshing.encode_multilod
    calls = {"chunks": 0, "encoded": 0}

    def failing_chunk(*args, **kwargs):
        calls["chunks"] += 1
        if calls["chunks"] == 4:
            raise KeyboardInterrupt
        return real_mesh_chunk(*args, **kwargs)

    def failing_encode(*args, **kwargs):
        calls["encoded"] += 1
        if calls["encoded"] == 40:
            raise KeyboardInterrupt
        return real_encode(*args, **kwargs)

    monkeypatch.setattr(meshing, "_mesh_chunk", failing_chunk)
    with pytest.raises(KeyboardInterrupt):
        meshing.mesh_segmentation(workspace, "segmentation", chunk_shape=(32, 32, 32), progress=False)
    partial = workspace.layer_path("segmentation") / "mesh.partial"
    assert len(list((partial / "chunks").glob("*.npz"))) == 3
    monkeypatch.setattr(meshing, "_mesh_chunk", real_mesh_chunk)
    monkeypatch.setattr(meshing, "encode_multilod", failing_encode)
    with pytest.raises(KeyboardInterrupt):
        meshing.mesh_segmentation(workspace, "segmentation", chunk_shape=(32, 32, 32), progress=False)
    assert len(list((partial / "chunks").glob("*.npz"))) == 8 and list((partial / "shards").glob("*.shard"))
    monkeypatch.setattr(meshing, "encode_multilod", real_encode)
    meshing.mesh_segmentation(workspace, "segmentation", chunk_shape=(32, 32, 32), progress=False)

    got = {p.name: p.read_bytes() for p in (workspace.layer_path("segmentation") / "mesh").iterdir()}
    want = {p.name: p.read_bytes() for p in (reference.layer_path("segmentation") / "mesh").iterdir()}
    assert len([n for n in want if n.endswith(".shard")]) > 1
    assert got == want


def test_rerun_reuses_finished_meshes_and_cli_refuses_an_image_layer(meshed, capsys):
    from cli.main import main
    from volumes.precomputed import write_layer

    workspace, count = meshed
    shard = next((workspace.layer_path("segmentation") / "mesh").glob("*.shard"))
    before = shard.stat().st_mtime_ns
    assert main(["mesh", "--workspace", str(workspace.root), "--segmentation", "segmentation", "--no-progress"]) == 0
    assert f"meshes of {count} supervoxels" in capsys.readouterr().out
    assert shard.stat().st_mtime_ns == before
    write_layer(workspace.layer_path("image"), np.zeros((8, 8, 8), np.uint8), tuple(RESOLUTION_NM), "image", progress=False)
    assert main(["mesh", "--workspace", str(workspace.root), "--segmentation", "image"]) == 2
    assert "not a segmentation" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:
        main(["mesh", "--workspace", str(workspace.root), "--format", "obj"])
    assert refused.value.code == 2 and "invalid choice: 'obj'" in capsys.readouterr().err
    assert main(["mesh", "--workspace", str(workspace.root), "--chunk-shape", "0,64,64"]) == 2
    assert "--chunk-shape" in capsys.readouterr().err


def test_byte_ranges_the_data_route_answers():
    """Neuroglancer reads shard files by HTTP range; a range outside the file is refused (416), not clipped to nothing."""
    from server.data_files import parse_byte_range

    assert parse_byte_range("bytes=0-99", 1000) == (0, 100)
    assert parse_byte_range("bytes=900-", 1000) == (900, 1000)
    assert parse_byte_range("bytes=-100", 1000) == (900, 1000)
    assert parse_byte_range("bytes=990-2000", 1000) == (990, 1000)
    for refused in ("bytes=1000-1010", "bytes=-", "bytes=5-1", "items=0-1", "bytes=0-1,5-6"):
        assert parse_byte_range(refused, 1000) is None, refused


def test_a_node_keeps_only_triangles_that_survive_quantisation():
    """A sliver cut off at a node's border can collapse to a line once positions are integers; Draco refuses a mesh
    of such triangles, so they are dropped, and a node left with none is empty."""
    import zmesh

    from volumes.multilod_mesh import _encode_node

    node_nm = np.array([320.0, 320.0, 320.0])
    vertices = np.array([[0, 0, 0], [320, 0, 0], [0, 320, 0], [5, 5, 5], [5, 5, 5.000001], [5.000001, 5, 5]], np.float32)
    faces = np.array([[0, 1, 2], [3, 4, 5]], np.uint32)
    decoded = DracoPy.decode(_encode_node(zmesh.Mesh(vertices, faces, None), np.zeros(3), node_nm, False))
    assert len(decoded.faces) == 1 and decoded.points.max() == 65535
    assert _encode_node(zmesh.Mesh(vertices, faces[1:], None), np.zeros(3), node_nm, False) == b""
