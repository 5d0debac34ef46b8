"""`connectome mesh`: per-supervoxel legacy precomputed meshes of a FIB-25 crop, chunked and resumable."""
from __future__ import annotations

import json
import struct

import h5py
import numpy as np
import pytest

CROP = (slice(100, 164),) * 3
RESOLUTION_NM = np.array([10.0, 10.0, 10.0])


@pytest.fixture(scope="module")
def meshed(tmp_path_factory, fib25_h5):
    from volumes.meshing import mesh_segmentation
    from volumes.precomputed import write_layer
    from volumes.workspace import Workspace

    workspace = Workspace.init(tmp_path_factory.mktemp("mesh") / "ws")
    with h5py.File(fib25_h5, "r") as f:
        labels = f["volumes/labels/neuroproof_oversegmentation"][CROP]
        image = f["volumes/raw"][CROP]
    write_layer(workspace.layer_path("segmentation"), labels, tuple(RESOLUTION_NM), "segmentation", voxel_offset=(100, 100, 100), progress=False)
    write_layer(workspace.layer_path("image"), image, tuple(RESOLUTION_NM), "image", progress=False)
    count = mesh_segmentation(workspace, "segmentation", chunk_shape=(32, 32, 32), progress=False)
    return workspace, labels, count


def read_fragment(path) -> tuple[np.ndarray, np.ndarray]:
    data = path.read_bytes()
    (vertex_count,) = struct.unpack("<I", data[:4])
    vertices = np.frombuffer(data, dtype="<f4", count=3 * vertex_count, offset=4).reshape(-1, 3)
    triangles = np.frombuffer(data, dtype="<u4", offset=4 + 12 * vertex_count).reshape(-1, 3)
    return vertices, triangles


def test_every_supervoxel_gets_a_manifest_neuroglancer_can_read(meshed):
    workspace, labels, count = meshed
    layer = workspace.layer_path("segmentation")
    ids = set(int(i) for i in np.unique(labels)) - {0}
    assert count == len(ids)
    assert json.loads((layer / "info").read_text())["mesh"] == "mesh"
    assert json.loads((layer / "mesh" / "info").read_text()) == {"@type": "neuroglancer_legacy_mesh"}
    manifests = {int(p.name.split(":")[0]) for p in (layer / "mesh").iterdir() if p.name.endswith(":0")}
    assert manifests == ids
    assert not (layer / "mesh.partial").exists()


def test_meshes_sit_where_the_supervoxels_are_in_nanometres(meshed):
    workspace, labels, _ = meshed
    mesh_dir = workspace.layer_path("segmentation") / "mesh"
    ids, counts = np.unique(labels[labels > 0], return_counts=True)
    offset_nm = np.array([100, 100, 100]) * RESOLUTION_NM
    for supervoxel in ids[np.argsort(-counts)][:5]:
        fragments = json.loads((mesh_dir / f"{supervoxel}:0").read_text())["fragments"]
        vertices = np.concatenate([read_fragment(mesh_dir / name)[0] for name in fragments])
        voxels = np.argwhere(labels == supervoxel)
        low_nm = (voxels.min(axis=0) * RESOLUTION_NM + offset_nm)[::-1]  # x, y, z like the mesh
        high_nm = ((voxels.max(axis=0) + 1) * RESOLUTION_NM + offset_nm)[::-1]
        margin_nm = 2 * RESOLUTION_NM
        assert np.all(vertices >= low_nm - margin_nm) and np.all(vertices <= high_nm + margin_nm), supervoxel
        assert np.all(vertices.max(axis=0) - vertices.min(axis=0) >= (high_nm - low_nm) * 0.5)
        if np.ptp(voxels, axis=0).max() > 40:  # spans chunk borders: one fragment per chunk it touches
            assert len(fragments) > 1


def test_fragments_are_valid_triangle_meshes(meshed):
    workspace, _, _ = meshed
    mesh_dir = workspace.layer_path("segmentation") / "mesh"
    fragments = [p for p in mesh_dir.iterdir() if p.name.count(":") == 2]
    assert fragments
    for path in fragments[:200]:
        vertices, triangles = read_fragment(path)
        assert len(triangles) > 0 and triangles.max() < len(vertices)
        assert np.isfinite(vertices).all()


def test_rerun_reuses_finished_meshes_and_cli_refuses_an_image_layer(meshed, capsys):
    from cli.main import main

    workspace, _, count = meshed
    manifest = next((workspace.layer_path("segmentation") / "mesh").glob("*:0"))
    before = manifest.stat().st_mtime_ns
    assert main(["mesh", "--workspace", str(workspace.root), "--segmentation", "segmentation", "--no-progress"]) == 0
    assert f"meshes of {count} supervoxels" in capsys.readouterr().out
    assert manifest.stat().st_mtime_ns == before
    assert main(["mesh", "--workspace", str(workspace.root), "--segmentation", "image"]) == 2
    assert "not a segmentation" in capsys.readouterr().err
