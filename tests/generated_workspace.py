"""A generated proofreading workspace at a lab's scale, fully known: supervoxels on a lattice, neurons as blocks of them.

side³ supervoxels (cubes of BLOCK_VOXELS³ voxels at 10 nm) agglomerated into neurons of NEURON_BLOCKS supervoxels
(given to the graph build as an agglomeration), a synthetic EM image (one grey level per supervoxel, dark
borders, noise) and synapses between touching supervoxels. bench/viewer_scale_bench.py builds it at 10^6
supervoxels; tests/test_viewer_scale_browser.py at a size CI affords.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

RESOLUTION_NM = (10.0, 10.0, 10.0)
BLOCK_VOXELS = 4
NEURON_BLOCKS = (5, 2, 2)  # supervoxels per neuron along z, y, x


def supervoxel_id(side: int, z: int, y: int, x: int) -> int:
    return (z * side + y) * side + x + 1  # grid_labels' numbering


def build(root: Path, side: int, synapse_count: int, seed: int = 0) -> dict:
    """The generated workspace; returns what the measurements need (users' tokens, neurons, timings)."""
    from db import store
    from store_testing import grid_labels
    from volumes.precomputed import write_layer
    from volumes.workspace import Workspace

    rng = np.random.default_rng(seed)
    timings = {}
    started = time.perf_counter()
    workspace = Workspace.init(root)
    labels = grid_labels((side,) * 3, BLOCK_VOXELS)
    grey = rng.integers(110, 200, (side,) * 3).astype(np.int16)
    image = np.kron(grey, np.ones((BLOCK_VOXELS,) * 3, dtype=np.int16))
    border = np.zeros(labels.shape, dtype=bool)
    for axis in range(3):  # the voxel at each supervoxel's upper face is membrane-dark
        index = [slice(None)] * 3
        index[axis] = slice(BLOCK_VOXELS - 1, None, BLOCK_VOXELS)
        border[tuple(index)] = True
    image[border] = 40
    image = np.clip(image + rng.integers(-25, 26, image.shape, dtype=np.int16), 0, 255).astype(np.uint8)
    del border, grey
    write_layer(workspace.layer_path("image"), image, RESOLUTION_NM, "image", progress=False)
    del image
    write_layer(workspace.layer_path("segmentation"), labels, RESOLUTION_NM, "segmentation", progress=False)
    timings["layers_s"] = time.perf_counter() - started

    block = np.indices((side,) * 3).reshape(3, -1)  # z, y, x of each supervoxel, in id order
    group = ((block[0] // NEURON_BLOCKS[0]) * side + block[1] // NEURON_BLOCKS[1]) * side + block[2] // NEURON_BLOCKS[2]
    agglomeration = dict(zip(range(1, side ** 3 + 1), group.tolist()))
    started = time.perf_counter()
    with store.open_store(workspace) as proofreading_store:
        counts = store.build_graph(proofreading_store, labels, RESOLUTION_NM, agglomeration=agglomeration)
        timings["graph_s"] = time.perf_counter() - started
        del labels, agglomeration
        started = time.perf_counter()
        pre = rng.integers(0, side ** 3, synapse_count)
        pre_zyx = np.stack(np.unravel_index(pre, (side,) * 3), axis=1)
        axis = rng.integers(0, 3, synapse_count)
        post_zyx = pre_zyx.copy()
        post_zyx[np.arange(synapse_count), axis] += np.where(pre_zyx[np.arange(synapse_count), axis] < side - 1, 1, -1)
        post = np.ravel_multi_index(post_zyx.T, (side,) * 3)
        edge_nm = BLOCK_VOXELS * RESOLUTION_NM[0]
        centre_nm = (pre_zyx + post_zyx + 1) * edge_nm / 2 + rng.uniform(-5, 5, (synapse_count, 3))
        import pandas as pd

        table = pd.DataFrame({"position_z_nm": centre_nm[:, 0], "position_y_nm": centre_nm[:, 1],
                              "position_x_nm": centre_nm[:, 2], "pre_supervoxel_id": pre + 1, "post_supervoxel_id": post + 1})
        store.add_synapses(proofreading_store, table)
        timings["synapses_s"] = time.perf_counter() - started
        tokens = {name: store.add_user(proofreading_store, name, "proofreader") for name in ("alice", "bob")}
    return {"workspace": workspace, "counts": counts, "tokens": tokens, "timings": timings}
