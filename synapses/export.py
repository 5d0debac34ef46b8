"""Detected synapses out to Neuroglancer (contact spheres) and to the store.

The annotation layer is Neuroglancer's precomputed annotation format, written with the
neuroglancer package's own `AnnotationWriter`: one ellipsoid per site (a sphere of the
site's volume, at least 30 nm across), properties `score` and `size`, and relationships
`pre_segment` / `post_segment`, so selecting a segment in Neuroglancer lists its synapses.
Coordinates are x, y, z in nm (scale 1 nm). The layer is written to a temporary
directory and renamed into place.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from synapses.detection import Site

MIN_SPHERE_RADIUS_NM = 30.0


def write_annotation_layer(path: str | Path, sites: list[Site], working_resolution_nm: Sequence[float],
                           extent_nm: Sequence[float]) -> Path:
    """Write the sites as a precomputed ellipsoid annotation layer at `path` (replacing it)."""
    import neuroglancer
    from neuroglancer.write_annotations import AnnotationWriter

    coordinate_space = neuroglancer.CoordinateSpace(names=["x", "y", "z"], units="nm", scales=[1, 1, 1])
    writer = AnnotationWriter(
        coordinate_space=coordinate_space,
        annotation_type="ellipsoid",
        relationships=["pre_segment", "post_segment"],
        properties=[
            neuroglancer.AnnotationPropertySpec(id="score", type="float32", description="mean site probability"),
            neuroglancer.AnnotationPropertySpec(id="size", type="uint32", description="site voxels at the detector's resolution"),
        ],
    )
    voxel_volume = float(np.prod(working_resolution_nm))
    lower = np.zeros(3)
    upper = np.asarray(extent_nm, dtype=np.float64)[::-1].copy()
    for number, site in enumerate(sites, start=1):
        radius = max(MIN_SPHERE_RADIUS_NM, (3.0 * site.size * voxel_volume / (4.0 * np.pi)) ** (1.0 / 3.0))
        center_xyz = np.asarray(site.position_nm, dtype=np.float64)[::-1]
        writer.add_ellipsoid(center_xyz, [radius] * 3, id=number, score=float(site.score), size=int(site.size),
                             pre_segment=[site.pre_segment] if site.pre_segment else [],
                             post_segment=[site.post_segment] if site.post_segment else [])
        lower = np.minimum(lower, center_xyz - radius)
        upper = np.maximum(upper, center_xyz + radius)
    # The writer's own bounds take the radii for a corner; the layer's true extent is set here.
    writer.lower_bound, writer.upper_bound = lower.astype(np.float32), upper.astype(np.float32)
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    writer.write(temporary)
    _require_positive_limit(temporary / "info")
    if path.exists():
        retired = path.with_name(f".{path.name}.old-{os.getpid()}")
        os.replace(path, retired)
        os.replace(temporary, path)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(temporary, path)
    return path


def _require_positive_limit(info_path: Path) -> None:
    """The format wants a positive spatial `limit`; the writer puts 0 for an empty layer."""
    info = json.loads(info_path.read_text())
    for level in info["spatial"]:
        level["limit"] = max(1, int(level["limit"]))
    info_path.write_text(json.dumps(info))


def store_rows(sites: list[Site]) -> list[dict[str, Any]]:
    """One row per site in the form `db.store.add_synapses` takes (positions z, y, x nm)."""
    rows = []
    for site in sites:
        rows.append({
            "position_nm": [float(v) for v in site.position_nm],
            "pre_position_nm": [float(v) for v in (site.pre_position_nm if site.pre_position_nm is not None else site.position_nm)],
            "post_position_nm": [float(v) for v in (site.post_position_nm if site.post_position_nm is not None else site.position_nm)],
            "pre_supervoxel_id": int(site.pre_segment),
            "post_supervoxel_id": int(site.post_segment),
            "score": float(site.score),
            "size": int(site.size),
        })
    return rows
