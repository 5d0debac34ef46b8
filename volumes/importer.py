"""`connectome import`: any supported volume into a workspace as a precomputed layer."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from volumes.errors import InputError
from volumes.io import open_volume
from volumes.precomputed import check_label_dtype, write_layer
from volumes.workspace import Workspace


def import_volume(workspace: Workspace, source: str, name: str, labels: bool = False,
                  resolution_nm: Sequence[float] | None = None, overwrite: bool = False,
                  progress: bool = True) -> Path:
    """Import `source` as layer `name`; the voxel size comes from the source or `resolution_nm`."""
    path = workspace.layer_path(name)
    if path.exists() and not overwrite:
        raise InputError(f"layer {name!r} already exists in {workspace.root}; pass --overwrite to replace it")
    volume = open_volume(source, resolution_nm)
    if not volume.has_resolution:
        raise InputError(f"{source} does not record its voxel size; give it as --resolution z,y,x (nm)")
    if labels:
        check_label_dtype(volume.dtype)
    return write_layer(path, volume, volume.resolution_nm, layer_type="segmentation" if labels else "image",
                       overwrite=overwrite, voxel_offset=volume.voxel_offset, progress=progress)
