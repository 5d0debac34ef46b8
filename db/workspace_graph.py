"""A workspace's segmentation layer into the store: supervoxels, adjacency graph, and the layer's record.

`connectome graph build` and the demo both call `build_workspace_graph`.
"""
from __future__ import annotations

from db import store
from volumes.errors import InputError
from volumes.workspace import Workspace


def build_workspace_graph(workspace: Workspace, segmentation_layer: str, boundary_layer: str | None = None) -> dict[str, int]:
    """Load the layer's supervoxels and their contacts (scored by `boundary_layer` when given); returns the counts."""
    from volumes.io import open_volume

    workspace.require_layer(segmentation_layer)
    segmentation = open_volume(workspace.layer_url(segmentation_layer))
    boundary = None
    if boundary_layer:
        workspace.require_layer(boundary_layer)
        boundary_volume = open_volume(workspace.layer_url(boundary_layer))
        if boundary_volume.shape != segmentation.shape:
            raise InputError(f"layer {boundary_layer!r} has shape {boundary_volume.shape}, "
                             f"the segmentation {segmentation.shape}")
        boundary = boundary_volume.read()
    with store.open_store(workspace) as opened:
        counts = store.build_graph(opened, segmentation.read(), segmentation.resolution_nm, boundary,
                                   segmentation.offset_nm)
        store.add_layer(opened, segmentation_layer, workspace.layer_url(segmentation_layer), "segmentation",
                        segmentation.resolution_nm)
    return counts
