"""Mesh every supervoxel of a segmentation layer for Neuroglancer, chunk by chunk and resumable.

Meshes are per supervoxel on purpose: a merged neuron is drawn as the union of its
supervoxels' meshes (the viewer follows the neuron's supervoxels), so a merge or split never
needs a re-mesh and the new neuron is on screen as soon as the viewer knows its supervoxels.

Two output formats, both read by Neuroglancer's precomputed source through `"mesh": "mesh"` in
the layer's info:

* `multires` (the default): `neuroglancer_multilod_draco`, sharded (volumes/multilod_mesh.py):
  several levels of detail per supervoxel, so a far view draws few triangles; all supervoxels
  in 2**shard_bits shard files (one for a few thousand supervoxels), however large the volume.
* `legacy`: `neuroglancer_legacy_mesh`, one manifest per supervoxel and one fragment file per
  supervoxel per chunk (about 200,000 files for a 750³ volume), for tools that read only that.

The run has three resumable stages in `<layer>/mesh.partial/`:

1. chunks: each chunk (one voxel of overlap towards its upper neighbours, so surfaces meet at
   chunk borders) is meshed into one `.npz` of its supervoxels' pieces; a finished chunk's file
   is its done-marker.
2. spill (multires): the pieces are sorted into one file per shard in one pass over the chunks
   (memory: one chunk), redone whole if interrupted.
3. shards (multires): each shard's supervoxels are joined across chunks, given their levels of
   detail and written as one shard file (memory: one shard's meshes); a written shard is done.

Publishing swaps the finished `mesh/` in, then points the layer info at it.
"""
from __future__ import annotations

import json
import math
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import zmesh
from tqdm import tqdm

from volumes.atomic import atomic_path, write_json_atomically
from volumes.errors import InputError
from volumes.geometry import Block, Box
from volumes.multilod_mesh import MeshGrid, encode_multilod, mesh_info
from volumes.workspace import Workspace, read_layer_info

MESH_DIR = "mesh"
FORMATS = ("multires", "legacy")
DEFAULT_CHUNK_SHAPE = (256, 256, 256)
DEFAULT_NODE_VOXELS = 32  # edge of a lod-0 octree node, in voxels
SUMMARY_FILE = "meshed.json"  # what the run wrote, for reruns and `connectome mesh`'s report
SHARD_TARGET_BYTES = 256 << 20  # pieces per shard held at once in stage 3


def mesh_is_complete(layer_path: Path, mesh_format: str | None = None) -> bool:
    """True once a finished mesh directory (of `mesh_format`, when given) is what the layer info points at."""
    info = read_layer_info(layer_path)
    summary_path = layer_path / MESH_DIR / SUMMARY_FILE
    if info.get("mesh") != MESH_DIR or not (layer_path / MESH_DIR / "info").is_file():
        return False
    if mesh_format is None:
        return True
    return summary_path.is_file() and json.loads(summary_path.read_text()).get("format") == mesh_format


def mesh_segmentation(
    workspace: Workspace,
    layer_name: str,
    chunk_shape: tuple[int, int, int] = DEFAULT_CHUNK_SHAPE,
    mesh_format: str = "multires",
    node_voxels: int = DEFAULT_NODE_VOXELS,
    simplification_factor: int = 100,
    max_simplification_error_nm: float = 40.0,
    overwrite: bool = False,
    progress: bool = True,
) -> int:
    """Mesh every nonzero supervoxel of `layer_name`; returns the number of supervoxels meshed.

    Re-running on a finished layer of the same format does nothing unless `overwrite` is set.
    """
    from volumes.io import open_volume

    if mesh_format not in FORMATS:
        raise InputError(f"mesh format must be one of {', '.join(FORMATS)}, not {mesh_format!r}")
    layer_path = workspace.require_layer(layer_name)
    info = read_layer_info(layer_path)
    if info.get("type") != "segmentation":
        raise InputError(f"layer {layer_name!r} is a {info.get('type')} layer, not a segmentation")
    if mesh_is_complete(layer_path, mesh_format) and not overwrite:
        return int(json.loads((layer_path / MESH_DIR / SUMMARY_FILE).read_text())["supervoxels"])

    volume = open_volume(workspace.layer_url(layer_name))
    resolution_nm = np.asarray(volume.resolution_nm, dtype=np.float64)
    offset_nm = np.asarray(volume.offset_nm, dtype=np.float64)
    partial_dir = layer_path / "mesh.partial"
    settings = {"format": mesh_format, "chunk_shape": list(chunk_shape), "node_voxels": node_voxels,
                "simplification_factor": simplification_factor, "max_error_nm": max_simplification_error_nm}
    _start_partial(partial_dir, settings, overwrite)

    mesher = zmesh.Mesher(tuple(resolution_nm[::-1]))  # zmesh works in x, y, z
    chunks = Box.from_shape(volume.shape).blocks(chunk_shape, 0, 1)
    _mesh_chunks(volume, chunks, partial_dir / "chunks", mesher, resolution_nm, offset_nm,
                 simplification_factor, max_simplification_error_nm, layer_name, progress)
    new_dir = partial_dir / "mesh"
    if mesh_format == "legacy":
        count = _write_legacy(partial_dir / "chunks", new_dir)
    else:
        grid = MeshGrid(tuple(offset_nm[::-1]), tuple(resolution_nm[::-1] * node_voxels), tuple(resolution_nm[::-1]))
        count = _write_multires(partial_dir, new_dir, grid, progress)
    write_json_atomically(new_dir / SUMMARY_FILE, {**settings, "supervoxels": count})
    _publish(layer_path, info, partial_dir, new_dir)
    return count


def _start_partial(partial_dir: Path, settings: dict, overwrite: bool) -> None:
    """Keep an interrupted run's work when it was made with the same settings; otherwise start clean."""
    settings_path = partial_dir / "settings.json"
    if partial_dir.exists() and (overwrite or not settings_path.is_file()
                                 or json.loads(settings_path.read_text()) != settings):
        shutil.rmtree(partial_dir)
    (partial_dir / "chunks").mkdir(parents=True, exist_ok=True)
    write_json_atomically(settings_path, settings)


def _mesh_chunks(volume, chunks: list[Block], chunks_dir: Path, mesher, resolution_nm, offset_nm,
                 simplification_factor: int, max_error_nm: float, layer_name: str, progress: bool) -> None:
    """Stage 1. The bar counts voxels, advanced supervoxel by supervoxel inside each chunk (a bar over
    chunks sat at 0/1 for the whole run of a small volume)."""
    bar = tqdm(total=int(sum(c.write.size for c in chunks)), unit="voxel", unit_scale=True,
               desc=f"meshing {layer_name}", disable=not progress, dynamic_ncols=True)
    for index, chunk in enumerate(chunks):
        path = chunks_dir / f"{_chunk_name(chunk.write)}.npz"
        bar.set_postfix_str(f"chunk {index + 1}/{len(chunks)}", refresh=True)
        if path.exists():
            bar.update(chunk.write.size)
            continue
        pieces = _mesh_chunk(volume, chunk, mesher, resolution_nm, offset_nm, simplification_factor, max_error_nm, bar)
        with atomic_path(path) as temporary:
            np.savez(temporary, **pieces)
    bar.close()


def _mesh_chunk(volume, chunk: Block, mesher, resolution_nm, offset_nm, simplification_factor, max_error_nm,
                bar: tqdm) -> dict[str, np.ndarray]:
    """Mesh one chunk (grown by one voxel towards its upper neighbours): its supervoxels' pieces, in nm."""
    padded = chunk.read
    chunk_voxels = chunk.write.size
    labels_zyx = np.asarray(volume.read(padded))
    ids_out, vertex_counts, face_counts, vertices_out, faces_out = [], [], [], [], []
    if labels_zyx.any():
        mesher.mesh(np.ascontiguousarray(labels_zyx).T)  # a transposed C array is x, y, z Fortran order
        chunk_origin_nm = (np.asarray(padded.start, dtype=np.float64) * resolution_nm + offset_nm)[::-1]
        ids = sorted(int(i) for i in mesher.ids())
        advanced = 0
        for number, segment_id in enumerate(ids, start=1):
            share = chunk_voxels * number // len(ids)
            bar.update(share - advanced)
            advanced = share
            # voxel_centered: Neuroglancer draws voxel i over [i, i+1) * resolution, so its surface sits on those faces
            mesh = mesher.get(segment_id, normals=False, reduction_factor=simplification_factor,
                              max_error=max_error_nm, voxel_centered=True)
            if len(mesh.faces) == 0:
                continue
            ids_out.append(segment_id)
            vertex_counts.append(len(mesh.vertices))
            face_counts.append(len(mesh.faces))
            vertices_out.append((mesh.vertices + chunk_origin_nm).astype(np.float32))
            faces_out.append(mesh.faces.astype(np.uint32))
        mesher.clear()
        bar.update(chunk_voxels - advanced)
    else:
        bar.update(chunk_voxels)
    return {"ids": np.asarray(ids_out, dtype=np.uint64), "vertex_counts": np.asarray(vertex_counts, dtype=np.int64),
            "face_counts": np.asarray(face_counts, dtype=np.int64),
            "vertices": np.concatenate(vertices_out) if vertices_out else np.zeros((0, 3), np.float32),
            "faces": np.concatenate(faces_out) if faces_out else np.zeros((0, 3), np.uint32)}


def _pieces(arrays) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(supervoxel, vertices nm, faces) of each piece in one chunk's arrays.

    Each array is read from the .npz once: every `arrays[name]` decompresses a fresh copy, and a
    slice of it would keep that whole copy alive.
    """
    ids, vertices, faces = arrays["ids"], arrays["vertices"], arrays["faces"]
    vertex_ends, face_ends = np.cumsum(arrays["vertex_counts"]), np.cumsum(arrays["face_counts"])
    return [(int(segment_id), piece_vertices, piece_faces) for segment_id, piece_vertices, piece_faces
            in zip(ids, np.split(vertices, vertex_ends[:-1]), np.split(faces, face_ends[:-1]))]


def _write_legacy(chunks_dir: Path, mesh_dir: Path) -> int:
    """One fragment file per supervoxel per chunk, and one manifest per supervoxel listing its fragments."""
    mesh_dir.mkdir(parents=True, exist_ok=True)
    fragments_by_id: dict[int, list[str]] = {}
    for chunk_file in sorted(chunks_dir.glob("*.npz")):
        chunk_name = chunk_file.name[:-len(".npz")]
        with np.load(chunk_file) as arrays:
            for segment_id, vertices, faces in _pieces(arrays):
                name = f"{segment_id}:0:{chunk_name}"
                _write_atomically(mesh_dir / name, zmesh.Mesh(vertices, faces, None).to_precomputed())
                fragments_by_id.setdefault(segment_id, []).append(name)
    for segment_id, fragments in fragments_by_id.items():
        _write_atomically(mesh_dir / f"{segment_id}:0", json.dumps({"fragments": sorted(fragments)}).encode())
    _write_atomically(mesh_dir / "info", json.dumps({"@type": "neuroglancer_legacy_mesh"}).encode())
    return len(fragments_by_id)


def _write_multires(partial_dir: Path, mesh_dir: Path, grid: MeshGrid, progress: bool) -> int:
    """Stages 2 and 3: every supervoxel's levels of detail, sharded by Neuroglancer's hashed sharding."""
    from cloudvolume.datasource.precomputed.sharding import (ShardingSpecification, compute_shard_params_for_hashed,
                                                             synthesize_shard_file)

    chunk_files = sorted((partial_dir / "chunks").glob("*.npz"))
    ids = np.unique(np.concatenate([np.load(f)["ids"] for f in chunk_files] or [np.zeros(0, np.uint64)]))
    piece_bytes = sum(f.stat().st_size for f in chunk_files)
    shard_bits, minishard_bits, preshift_bits = compute_shard_params_for_hashed(
        len(ids), min_shards=max(1, math.ceil(piece_bytes / SHARD_TARGET_BYTES)))
    spec = ShardingSpecification("neuroglancer_uint64_sharded_v1", preshift_bits=preshift_bits,
                                 hash="murmurhash3_x86_128", minishard_bits=minishard_bits, shard_bits=shard_bits,
                                 minishard_index_encoding="gzip", data_encoding="raw")
    shard_of = {int(i): spec.compute_shard_location(int(i)).shard_number for i in ids}
    spill_dir = _spill_by_shard(partial_dir, chunk_files, shard_of)

    shards_dir = partial_dir / "shards"
    shards_dir.mkdir(exist_ok=True)
    bar = tqdm(total=len(ids), unit="supervoxel", desc="levels of detail", disable=not progress, dynamic_ncols=True)
    members = Counter(shard_of.values())
    for shard in sorted(members):
        target = shards_dir / f"{shard}.shard"
        if target.exists():
            bar.update(members[shard])
            continue
        data, manifest_sizes = {}, {}
        for segment_id, mesh in _joined_meshes(spill_dir / f"{shard}.spill"):
            encoded = encode_multilod(mesh, grid)
            data[segment_id] = encoded.fragments + encoded.manifest  # fragments just before the manifest
            manifest_sizes[segment_id] = len(encoded.manifest)
            bar.update(1)
        _write_atomically(target, synthesize_shard_file(spec, data, data_offset=manifest_sizes))
    bar.close()

    mesh_dir.mkdir(parents=True, exist_ok=True)
    for shard_file in shards_dir.iterdir():
        os.replace(shard_file, mesh_dir / shard_file.name)
    write_json_atomically(mesh_dir / "info", mesh_info(spec.to_dict()), indent=None, default=int)
    return len(ids)


def _spill_by_shard(partial_dir: Path, chunk_files: list[Path], shard_of: dict[int, str]) -> Path:
    """Stage 2: each chunk's pieces appended to its shard's spill file, one pass, one chunk in memory."""
    spill_dir = partial_dir / "spill"
    if (spill_dir / "done").exists():
        return spill_dir
    if spill_dir.exists():  # an interrupted pass may have half-appended: redo it whole
        shutil.rmtree(spill_dir)
    spill_dir.mkdir()
    for chunk_file in chunk_files:
        with np.load(chunk_file) as arrays:
            by_shard: dict[str, list] = {}
            for piece in _pieces(arrays):
                by_shard.setdefault(shard_of[piece[0]], []).append(piece)
        for shard, pieces in by_shard.items():
            with open(spill_dir / f"{shard}.spill", "ab") as spill:
                for segment_id, vertices, faces in pieces:
                    np.save(spill, np.asarray([segment_id], dtype=np.uint64))
                    np.save(spill, vertices)
                    np.save(spill, faces)
    (spill_dir / "done").touch()
    return spill_dir


def _joined_meshes(spill_path: Path):
    """(supervoxel, its whole mesh) for each supervoxel in one shard's spill, pieces welded at chunk borders."""
    pieces: dict[int, list[zmesh.Mesh]] = {}
    if spill_path.exists():
        end = spill_path.stat().st_size
        with open(spill_path, "rb") as spill:
            while spill.tell() < end:
                (segment_id,), vertices, faces = np.load(spill), np.load(spill), np.load(spill)
                pieces.setdefault(int(segment_id), []).append(zmesh.Mesh(vertices, faces, None))
    for segment_id in sorted(pieces):
        parts = pieces.pop(segment_id)
        mesh = zmesh.Mesh.concatenate(*parts) if len(parts) > 1 else parts[0]
        yield segment_id, mesh.consolidate() if len(parts) > 1 else mesh


def _publish(layer_path: Path, info: dict, partial_dir: Path, new_dir: Path) -> None:
    """Swap the finished meshes in for any old ones, then point the layer info at them."""
    mesh_dir = layer_path / MESH_DIR
    old_dir = layer_path / "mesh.old"
    if old_dir.exists():
        shutil.rmtree(old_dir)
    if mesh_dir.exists():
        os.replace(mesh_dir, old_dir)
    os.replace(new_dir, mesh_dir)
    info["mesh"] = MESH_DIR
    write_json_atomically(layer_path / "info", info, indent=None)
    shutil.rmtree(partial_dir)
    if old_dir.exists():
        shutil.rmtree(old_dir)


def _chunk_name(chunk: Box) -> str:
    return "_".join(f"{a}-{b}" for a, b in zip(chunk.start, chunk.stop))


def _write_atomically(path: Path, data: bytes) -> None:
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)
