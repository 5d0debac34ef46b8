"""Synapse detection on a workspace: the image and segmentation layers in, an annotation layer and the store's synapses out.

`connectome synapses detect` and the demo both call `detect_in_workspace`; the command only parses
its arguments and prints the summary.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from volumes.errors import InputError
from volumes.workspace import Workspace


@dataclass
class WorkspaceDetection:
    """What a detection run found and wrote."""

    sites_found: int
    sites_with_partners: int
    dropped: dict[str, int]
    layer_path: Path
    resampling_note: str | None = None  # how the image was brought to the model's resolution
    store_message: str | None = None  # what the store now holds (None with add_to_store=False)

    def summary(self) -> list[str]:
        dropped = ", ".join(f"{count} {why}" for why, count in self.dropped.items() if count) or "none"
        lines = [f"{self.sites_found} synaptic sites detected; {self.sites_with_partners} with pre and post segments "
                 f"(dropped: {dropped})", f"wrote annotation layer {self.layer_path}"]
        return [line for line in (self.resampling_note, *lines, self.store_message) if line]


def detect_in_workspace(workspace: Workspace, image_layer: str, segmentation_layer: str, model_path: str | Path,
                        out_layer: str | None = None, threshold: float | None = None, min_size_voxels: int | None = None,
                        block_shape: tuple[int, int, int] | None = None, batch_size: int = 4, device: str = "auto",
                        add_to_store: bool = True, progress: bool = True) -> WorkspaceDetection:
    """Detect synapses, write them as a precomputed annotation layer and (by default) make them the store's synapses."""
    from synapses.data import describe_scale, working_scale
    from synapses.detection import detect
    from synapses.export import store_rows, write_annotation_layer
    from synapses.model import load_model
    from synapses.training import choose_device
    from volumes.io import open_volume

    workspace.require_layer(image_layer)
    workspace.require_layer(segmentation_layer)
    out_path = workspace.layer_path(out_layer or f"{segmentation_layer}_synapses")
    chosen = choose_device(device)
    model = load_model(model_path, chosen)
    image = open_volume(workspace.layer_url(image_layer))
    segmentation = open_volume(workspace.layer_url(segmentation_layer))
    scale = working_scale(image.resolution_nm, model.resolution_nm)
    resampling_note = None
    if scale != (1.0, 1.0, 1.0):
        resampling_note = (f"note: the model works at {model.resolution_nm} nm; the image ({image.resolution_nm} nm) "
                           f"is {describe_scale(scale)}")
    result = detect(model, image, segmentation, block_shape=block_shape, batch_size=batch_size, device=chosen,
                    threshold=threshold, min_size_voxels=min_size_voxels, progress=progress)
    extent_nm = [s * r for s, r in zip(image.shape, image.resolution_nm)]
    write_annotation_layer(out_path, result.sites, result.region.working_resolution_nm, extent_nm)
    store_message = _add_to_store(workspace, store_rows(result.sites)) if add_to_store else None
    return WorkspaceDetection(sites_found=len(result.all_sites), sites_with_partners=len(result.sites),
                              dropped=dict(result.dropped), layer_path=out_path, resampling_note=resampling_note,
                              store_message=store_message)


def _add_to_store(workspace: Workspace, rows: list[dict]) -> str:
    """Make these the workspace store's synapses (db.store), replacing an earlier detection's; the layer is already written."""
    from db import store

    with store.open_store(workspace, create=False) as opened:
        try:
            added = store.add_synapses(opened, rows, replace=True)
        except InputError as exc:
            raise InputError(f"the annotation layer was written, but the store refused the synapses: {exc} "
                             "(build the supervoxel graph from this segmentation first, or pass --no-store)") from None
    return f"replaced the store's synapses with {added} synapses ({opened.url})"
