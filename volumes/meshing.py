"""Mesh every supervoxel of a segmentation layer into Neuroglancer's legacy precomputed mesh format.

Meshes are per supervoxel on purpose: a merged neuron is drawn as the union of its
supervoxels' meshes (Neuroglancer follows the layer's equivalences), so an edit
never needs a re-mesh.

Layout written inside the layer directory (what Neuroglancer's precomputed source reads):

    <layer>/info               gains "mesh": "mesh"
    <layer>/mesh/info          {"@type": "neuroglancer_legacy_mesh"}
    <layer>/mesh/<id>:0        manifest {"fragments": ["<id>:0:<chunk>", ...]}
    <layer>/mesh/<id>:0:<chunk> one fragment per chunk the supervoxel touches

The volume is meshed in chunks (one voxel of overlap, so surfaces meet at chunk
borders); finished chunks are remembered in mesh.partial/ so an interrupted run resumes.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import zmesh
from tqdm import tqdm

from volumes.atomic import atomic_path
from volumes.errors import InputError
from volumes.geometry import Block, Box
from volumes.workspace import read_layer_info
from volumes.workspace import Workspace

MESH_DIR = "mesh"
DEFAULT_CHUNK_SHAPE = (256, 256, 256)


def mesh_is_complete(layer_path: Path) -> bool:
    """True once every manifest has been written and the layer info points at the meshes."""
    info = read_layer_info(layer_path)
    return info.get("mesh") == MESH_DIR and (layer_path / MESH_DIR / "info").is_file()


def mesh_segmentation(
    workspace: Workspace,
    layer_name: str,
    chunk_shape: tuple[int, int, int] = DEFAULT_CHUNK_SHAPE,
    simplification_factor: int = 100,
    max_simplification_error_nm: float = 40.0,
    overwrite: bool = False,
    progress: bool = True,
) -> int:
    """Mesh every nonzero supervoxel of `layer_name`; returns the number of supervoxels meshed.

    Re-running on a finished layer does nothing unless `overwrite` is set.
    """
    from volumes.io import open_volume

    layer_path = workspace.require_layer(layer_name)
    info = read_layer_info(layer_path)
    if info.get("type") != "segmentation":
        raise InputError(f"layer {layer_name!r} is a {info.get('type')} layer, not a segmentation")
    if mesh_is_complete(layer_path) and not overwrite:
        return _count_manifests(layer_path / MESH_DIR)

    volume = open_volume(workspace.layer_url(layer_name))
    resolution_nm = np.asarray(volume.resolution_nm, dtype=np.float64)
    offset_nm = np.asarray(volume.offset_nm, dtype=np.float64)
    partial_dir = layer_path / "mesh.partial"
    if overwrite and partial_dir.exists():
        shutil.rmtree(partial_dir)
    fragments_dir = partial_dir / "fragments"
    fragments_dir.mkdir(parents=True, exist_ok=True)

    mesher = zmesh.Mesher(tuple(resolution_nm[::-1]))  # zmesh works in x, y, z
    # one voxel of context towards the upper neighbours, so surfaces meet at chunk borders
    chunks = Box.from_shape(volume.shape).blocks(chunk_shape, 0, 1)
    # The bar counts voxels, advanced supervoxel by supervoxel inside each chunk: a small volume is
    # one chunk, and a bar over chunks sat at 0/1 for the whole run.
    bar = tqdm(total=int(np.prod(volume.shape)), unit="voxel", unit_scale=True, desc=f"meshing {layer_name}",
               disable=not progress, dynamic_ncols=True)
    meshed = 0
    for index, chunk in enumerate(chunks):
        done_marker = partial_dir / f"{_chunk_name(chunk.write)}.done"
        bar.set_postfix_str(f"chunk {index + 1}/{len(chunks)}", refresh=True)
        if done_marker.exists():
            bar.update(chunk.write.size)
            continue
        meshed += _mesh_chunk(volume, chunk, mesher, resolution_nm, offset_nm, simplification_factor,
                              max_simplification_error_nm, fragments_dir, bar)
        done_marker.touch()
    bar.close()

    return _publish_meshes(layer_path, info, partial_dir)


def _mesh_chunk(volume, chunk: Block, mesher, resolution_nm, offset_nm, simplification_factor, max_error_nm,
                fragments_dir: Path, bar: tqdm) -> int:
    """Mesh one chunk (grown by one voxel towards its upper neighbours) into fragment files; returns how many.

    `bar` advances by the chunk's voxels, a share after each supervoxel's mesh.
    """
    padded = chunk.read
    chunk_voxels = chunk.write.size
    labels_zyx = np.asarray(volume.read(padded))
    if not labels_zyx.any():
        bar.update(chunk_voxels)
        return 0
    mesher.mesh(np.ascontiguousarray(labels_zyx).T)  # a transposed C array is x, y, z Fortran order
    chunk_origin_nm = (np.asarray(padded.start, dtype=np.float64) * resolution_nm + offset_nm)[::-1]
    name = _chunk_name(chunk.write)
    ids = list(mesher.ids())
    advanced, written = 0, 0
    for number, segment_id in enumerate(ids, start=1):
        share = chunk_voxels * number // len(ids)
        bar.update(share - advanced)
        advanced = share
        # voxel_centered: Neuroglancer draws voxel i over [i, i+1) * resolution, so its surface sits on those faces
        mesh = mesher.get(segment_id, normals=False, reduction_factor=simplification_factor, max_error=max_error_nm, voxel_centered=True)
        if len(mesh.faces) == 0:
            continue
        mesh.vertices = (mesh.vertices + chunk_origin_nm).astype(np.float32)
        _write_atomically(fragments_dir / f"{int(segment_id)}:0:{name}", mesh.to_precomputed())
        written += 1
    mesher.clear()
    return written


def _publish_meshes(layer_path: Path, info: dict, partial_dir: Path) -> int:
    """Move fragments into mesh/, write one manifest per supervoxel, then point the layer info at them."""
    mesh_dir = layer_path / MESH_DIR
    mesh_dir.mkdir(exist_ok=True)
    fragments_by_id: dict[str, list[str]] = {}
    for fragment in sorted((partial_dir / "fragments").iterdir()):
        os.replace(fragment, mesh_dir / fragment.name)
    for fragment in sorted(mesh_dir.iterdir()):
        parts = fragment.name.split(":")
        if len(parts) == 3:
            fragments_by_id.setdefault(parts[0], []).append(fragment.name)
    for segment_id, fragments in fragments_by_id.items():
        _write_atomically(mesh_dir / f"{segment_id}:0", json.dumps({"fragments": fragments}).encode())
    _write_atomically(mesh_dir / "info", json.dumps({"@type": "neuroglancer_legacy_mesh"}).encode())
    info["mesh"] = MESH_DIR
    _write_atomically(layer_path / "info", json.dumps(info).encode())
    shutil.rmtree(partial_dir)
    return len(fragments_by_id)


def _count_manifests(mesh_dir: Path) -> int:
    return sum(1 for p in mesh_dir.iterdir() if p.name.endswith(":0"))


def _chunk_name(chunk: Box) -> str:
    return "_".join(f"{a}-{b}" for a, b in zip(chunk.start, chunk.stop))


def _write_atomically(path: Path, data: bytes) -> None:
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)
