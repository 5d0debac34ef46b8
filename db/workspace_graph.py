"""A workspace's segmentation layer into the store: supervoxels, adjacency graph, and the layer's record.

`connectome graph build` and the demo both call `build_workspace_graph`.
"""
from __future__ import annotations

import numpy as np

from db import store
from volumes.errors import InputError
from volumes.workspace import Workspace


def build_workspace_graph(workspace: Workspace, segmentation_layer: str, boundary_layer: str | None = None,
                          agglomeration_layer: str | None = None) -> dict[str, int]:
    """Load the layer's supervoxels and their contacts (scored by `boundary_layer` when given), starting as the
    neurons of `agglomeration_layer` when given; returns the counts."""
    from volumes.io import open_volume

    workspace.require_layer(segmentation_layer)
    segmentation = open_volume(workspace.layer_url(segmentation_layer))
    labels = segmentation.read()
    boundary = _same_shape_layer(workspace, boundary_layer, segmentation.shape)
    agglomeration = _same_shape_layer(workspace, agglomeration_layer, segmentation.shape)
    groups = majority_groups(labels, agglomeration) if agglomeration is not None else None
    del agglomeration
    with store.open_store(workspace) as opened:
        counts = store.build_graph(opened, labels, segmentation.resolution_nm, boundary, segmentation.offset_nm,
                                   agglomeration=groups)
        store.add_layer(opened, segmentation_layer, workspace.layer_url(segmentation_layer), "segmentation",
                        segmentation.resolution_nm)
    return counts


def _same_shape_layer(workspace: Workspace, name: str | None, shape) -> np.ndarray | None:
    from volumes.io import open_volume

    if not name:
        return None
    workspace.require_layer(name)
    volume = open_volume(workspace.layer_url(name))
    if volume.shape != shape:
        raise InputError(f"layer {name!r} has shape {volume.shape}, the segmentation {shape}")
    return volume.read()


def majority_groups(supervoxels: np.ndarray, agglomeration: np.ndarray) -> dict[int, int]:
    """Each supervoxel's agglomeration segment: the nonzero label covering most of its voxels (ties: the lower)."""
    sv = np.asarray(supervoxels).ravel().astype(np.uint64)
    segment = np.asarray(agglomeration).ravel().astype(np.uint64)
    both = (sv != 0) & (segment != 0)
    pairs, counts = np.unique(np.stack([sv[both], segment[both]], axis=1), axis=0, return_counts=True)
    order = np.lexsort((pairs[:, 1], -counts, pairs[:, 0]))  # by supervoxel, then most voxels, then lower label
    pairs = pairs[order]
    first = np.ones(len(pairs), dtype=bool)
    first[1:] = pairs[1:, 0] != pairs[:-1, 0]
    return dict(zip(pairs[first, 0].tolist(), pairs[first, 1].tolist()))
