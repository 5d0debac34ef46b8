"""A served workspace built from `connectome synth`'s volume, for server tests that must run on a clean clone.

Each synthetic neuron is cut into z slabs, so its pieces are adjacent supervoxels that a merge
can join and a split can separate; two synapses link the largest pieces.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

SHAPE = (48, 64, 64)
RESOLUTION_NM = (8.0, 8.0, 8.0)
SLAB = 16  # voxels of z per supervoxel


def build_synth_workspace(root: Path, seed: int = 3, shape: tuple[int, int, int] = SHAPE,
                          piece_zyx: tuple[int, int, int] = (SLAB, 0, 0)):
    """(workspace, tokens by user name, supervoxel ids largest first); users ana, ben (proofreaders), boss, vic.

    Each neuron is cut into pieces on a grid of `piece_zyx` voxels (0: no cut along that axis).
    """
    from volumes.precomputed import write_layer
    from volumes.synth import synthesize
    from volumes.workspace import Workspace

    volume = synthesize(shape, seed, RESOLUTION_NM, synapses_per_cubic_um=0.0)
    neurons = volume["neuron_ids"].astype(np.uint64)
    cell = np.zeros(shape, dtype=np.uint64)
    for axis, size in enumerate(piece_zyx):
        if size:
            index = (np.arange(shape[axis]) // size).astype(np.uint64)
            cells_along = np.uint64(-(-shape[axis] // size))
            cell = cell * cells_along + index.reshape([-1 if a == axis else 1 for a in range(3)])
    labels = np.where(neurons > 0, neurons * np.uint64(10 if cell.max() < 9 else 1000) + cell + 1, 0).astype(np.uint64)
    workspace = Workspace.init(root)
    write_layer(workspace.layer_path("image"), volume["raw"], RESOLUTION_NM, "image", progress=False)
    write_layer(workspace.layer_path("segmentation"), labels, RESOLUTION_NM, "segmentation", progress=False)
    tokens, largest = populate_store(workspace, labels, RESOLUTION_NM)
    return workspace, tokens, largest


def populate_store(workspace, labels: np.ndarray, resolution_nm) -> tuple[dict[str, str], list[int]]:
    """The served test workspace's store: the 'segmentation' layer's graph, two synapses between the largest
    supervoxels and four users; returns (tokens by user name, supervoxel ids largest first)."""
    from db import store

    ids, counts = np.unique(labels[labels > 0], return_counts=True)
    largest = [int(i) for i in ids[np.argsort(-counts)]]
    tokens = {}
    with store.open_store(workspace) as proofreading_store:
        store.add_layer(proofreading_store, "segmentation", workspace.layer_url("segmentation"), "segmentation", resolution_nm)
        store.build_graph(proofreading_store, labels, resolution_nm)
        for name, role in (("ana", "proofreader"), ("ben", "proofreader"), ("boss", "admin"), ("vic", "viewer")):
            tokens[name] = store.add_user(proofreading_store, name, role)
        synapses = []
        for pre, post in ((largest[0], largest[1]), (largest[2], largest[0])):
            position_nm = (np.argwhere(labels == pre).mean(axis=0) * np.asarray(resolution_nm)).tolist()
            synapses.append({"position_nm": position_nm, "pre_supervoxel_id": pre, "post_supervoxel_id": post})
        store.add_synapses(proofreading_store, synapses)
    return tokens, largest


def adjacent_pair(proofreading_store, supervoxels: list[int]) -> tuple[int, int]:
    """Two supervoxels that touch (so a merge of them is an ordinary edit), from the largest down."""
    from sqlalchemy import select

    from db.connection import read_session
    from db.models import Adjacency

    wanted = set(supervoxels[:40])
    with read_session(proofreading_store.engine) as session:
        pairs = session.execute(select(Adjacency.sv_a, Adjacency.sv_b).order_by(Adjacency.contact_area_nm2.desc())).all()
    for a, b in pairs:
        if a in wanted and b in wanted:
            return int(a), int(b)
    raise AssertionError("no adjacent supervoxels in the synthetic workspace")
