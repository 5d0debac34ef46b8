"""One supervoxel's surface as Neuroglancer's multi-resolution mesh (`neuroglancer_multilod_draco`).

What Neuroglancer's reader expects (src/datasource/precomputed/meshes.md and backend.ts):

* levels of detail (lods) 0..n-1, lod 0 finest; lod L is cut into octree nodes, axis-aligned
  cells of `cell_nm * 2**L` on a grid starting at `grid_origin_nm`; the viewer picks, per node,
  the coarsest lod whose `lod_scale` is below what one screen pixel spans there, so a neuron far
  away costs a few hundred triangles and one close up its full surface;
* each node is one Draco mesh whose vertex positions are integers in [0, 2**16) across the node's
  cell (the viewer skips Draco's own dequantisation and reads those integers);
* a node at lod L > 0 must not have triangles crossing the 2x2x2 grid of its children (the
  viewer splits it there to draw only the children it lacks), every node of lod L-1 needs its
  parent at lod L (the octree is walked from the top), and nodes are listed in z-curve order
  (x the lowest bit);
* the manifest lists, per lod, node positions and the byte size of each node's mesh; in a
  sharded layer the nodes' meshes lie in the shard just before the manifest.

All positions here are x, y, z nanometres (mesh space), as Neuroglancer's meshes are.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

import DracoPy
import numpy as np
import zmesh

QUANTIZATION_BITS = 16
_QUANT_MAX = (1 << QUANTIZATION_BITS) - 1
# the viewer splits a node's mesh among its 8 children at this quantised value (neuroglancer_draco.cc)
_PARTITION_POINT = _QUANT_MAX // 2 + 1
MAX_LODS = 6
# Each coarser lod aims at a quarter of the triangles (a surface's area per node quadruples).
TRIANGLE_REDUCTION_PER_LOD = 4
MIN_TRIANGLES = 12  # below this a coarser level saves nothing worth a request


@dataclass(frozen=True)
class MeshGrid:
    """The lod-0 octree grid shared by every supervoxel of a layer (x, y, z nm)."""

    origin_nm: tuple[float, float, float]
    cell_nm: tuple[float, float, float]
    resolution_nm: tuple[float, float, float]  # the finest voxel size, for the lods' error bounds


@dataclass
class EncodedMesh:
    """The bytes Neuroglancer reads for one supervoxel: its nodes' meshes, then the manifest describing them."""

    fragments: bytes
    manifest: bytes


def levels_of_detail(mesh: zmesh.Mesh, grid: MeshGrid) -> list[zmesh.Mesh]:
    """lod 0 is the mesh itself; each coarser lod is simplified from it to a quarter of the triangles.

    zmesh's fast quadric simplification (not `Mesher.simplify`, whose edge collapse left NaN
    vertices in re-simplified FIB-25 meshes). Levels stop when the whole surface fits in one node,
    when MAX_LODS is reached, or when simplification no longer removes triangles.
    """
    lods = [mesh]
    cell_nm = np.asarray(grid.cell_nm)
    first = np.floor((mesh.vertices.min(axis=0) - grid.origin_nm) / cell_nm)
    last = np.floor((mesh.vertices.max(axis=0) - grid.origin_nm) / cell_nm)
    spread = int(np.max(last - first))
    wanted = 1 + (int(np.ceil(np.log2(spread + 1))) if spread > 0 else 0)
    for lod in range(1, min(wanted + 1, MAX_LODS)):
        target = len(mesh.faces) // TRIANGLE_REDUCTION_PER_LOD ** lod
        if target < MIN_TRIANGLES:
            break
        simplified = zmesh.simplify_fqmr(mesh, target_count=target)
        if len(simplified.faces) == 0 or len(simplified.faces) >= len(lods[-1].faces) or not np.isfinite(simplified.vertices).all():
            break
        lods.append(zmesh.Mesh(simplified.vertices.astype(np.float32), simplified.faces, None))
    return lods


def encode_multilod(mesh: zmesh.Mesh, grid: MeshGrid) -> EncodedMesh:
    """The fragment data and manifest of one supervoxel's mesh, ready to store under its id."""
    cell_nm = np.asarray(grid.cell_nm, dtype=np.float64)
    origin_nm = np.asarray(grid.origin_nm, dtype=np.float64)
    lods = levels_of_detail(mesh, grid)
    nodes_per_lod: list[dict[tuple[int, int, int], bytes]] = []
    for lod, lod_mesh in enumerate(lods):
        nodes = _octree_nodes(lod_mesh, lod, origin_nm, cell_nm)
        if nodes_per_lod:  # every finer node needs its parent here, even an empty one
            for child in nodes_per_lod[-1]:
                nodes.setdefault(tuple(c >> 1 for c in child), b"")
        nodes_per_lod.append(nodes)
    return EncodedMesh(*_pack(nodes_per_lod, origin_nm, cell_nm, grid.resolution_nm))


def _octree_nodes(mesh: zmesh.Mesh, lod: int, origin_nm: np.ndarray, cell_nm: np.ndarray) -> dict[tuple[int, int, int], bytes]:
    """Cut one lod's mesh into its nodes (cut at the children's grid above lod 0) and Draco-encode each."""
    node_nm = cell_nm * 2 ** lod
    cut_nm = node_nm if lod == 0 else node_nm / 2
    pieces: dict[tuple[int, int, int], list[zmesh.Mesh]] = {}
    for cell, piece in zmesh.chunk_mesh(mesh, tuple(cut_nm), tuple(origin_nm)).items():
        if len(piece.faces) == 0:
            continue
        node = cell if lod == 0 else tuple(c >> 1 for c in cell)
        pieces.setdefault(tuple(int(c) for c in node), []).append(piece)
    encoded = {node: _encode_node(zmesh.Mesh.concatenate(*parts) if len(parts) > 1 else parts[0],
                                  origin_nm + np.asarray(node) * node_nm, node_nm, lod > 0)
               for node, parts in pieces.items()}
    return {node: data for node, data in encoded.items() if data}


def _encode_node(mesh: zmesh.Mesh, node_origin_nm: np.ndarray, node_nm: np.ndarray, partitioned: bool) -> bytes:
    """Draco bytes whose positions are the node-relative integers the viewer reads as they are."""
    relative = (mesh.vertices.astype(np.float64) - node_origin_nm) / node_nm
    quantized = np.clip(np.floor(relative * _QUANT_MAX + 0.5), 0, _QUANT_MAX)
    if partitioned:  # a vertex on the children's border must land exactly on the viewer's split value
        quantized[np.abs(relative - 0.5) < 1e-6] = _PARTITION_POINT
    faces = mesh.faces.astype(np.uint32)
    corners = quantized[faces]  # slivers cut off at a node's border can collapse to a line or a point
    kept = faces[np.any(corners[:, 0] != corners[:, 1], axis=1) & np.any(corners[:, 1] != corners[:, 2], axis=1)
                 & np.any(corners[:, 0] != corners[:, 2], axis=1)]
    if len(kept) == 0:
        return b""
    # Draco quantisation over [0, 2**16 - 1] with 16 bits has a step of exactly 1: the integers stay as they are
    return DracoPy.encode(quantized, kept, quantization_bits=QUANTIZATION_BITS,
                          quantization_range=float(_QUANT_MAX), quantization_origin=(0.0, 0.0, 0.0),
                          compression_level=7)


def _zorder_key(node: tuple[int, int, int]) -> int:
    """Interleave x (lowest bit), y, z: the z-curve order the viewer's octree expects."""
    key = 0
    for bit in range(21):
        for axis in range(3):
            key |= ((node[axis] >> bit) & 1) << (3 * bit + axis)
    return key


def _pack(nodes_per_lod: list[dict], origin_nm: np.ndarray, cell_nm: np.ndarray,
          resolution_nm: tuple[float, float, float]) -> tuple[bytes, bytes]:
    """Concatenate the nodes' meshes lod by lod in z-curve order, and write the manifest describing them."""
    num_lods = len(nodes_per_lod)
    lod_scales = [float(max(resolution_nm)) * 2 ** lod for lod in range(num_lods)]
    parts = [struct.pack("<3f", *cell_nm), struct.pack("<3f", *origin_nm), struct.pack("<I", num_lods),
             struct.pack(f"<{num_lods}f", *lod_scales), np.zeros(3 * num_lods, "<f4").tobytes(),
             struct.pack(f"<{num_lods}I", *(len(n) for n in nodes_per_lod))]
    fragments = []
    for nodes in nodes_per_lod:
        order = sorted(nodes, key=_zorder_key)
        positions = np.asarray(order, dtype="<u4").reshape(-1, 3).T  # [3, n]: all x, then y, then z
        parts.append(np.ascontiguousarray(positions).tobytes())
        parts.append(np.asarray([len(nodes[n]) for n in order], dtype="<u4").tobytes())
        fragments.extend(nodes[n] for n in order)
    return b"".join(fragments), b"".join(parts)


def mesh_info(sharding: dict) -> dict:
    """The mesh directory's info: vertices are stored in nm, so the transform is the identity."""
    return {"@type": "neuroglancer_multilod_draco", "vertex_quantization_bits": QUANTIZATION_BITS,
            "transform": [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0], "lod_scale_multiplier": 1.0,
            "sharding": sharding}
