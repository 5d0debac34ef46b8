"""Write Neuroglancer precomputed layers (multi-resolution pyramids) through cloud-volume.

A layer is written into a temporary sibling directory and renamed into place
at the end, so an interrupted or failed write never leaves a half-written layer.
Images are downsampled by averaging, labels by the mode (never averaged).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from tqdm import tqdm

from volumes.errors import InputError
from volumes.geometry import Box

CHUNK_XYZ = (64, 64, 64)
LABEL_INPUT_DTYPES = (np.uint8, np.uint16, np.uint32, np.uint64, np.int8, np.int16, np.int32, np.int64)
MIN_TOP_LEVEL_VOXELS = 32


def pyramid_factors(shape_zyx: Sequence[int], resolution_nm: Sequence[float]) -> list[tuple[int, int, int]]:
    """Per-level downsampling factors (z, y, x), each relative to the level below.

    An axis is halved while its voxel size is under twice the finest one, so
    anisotropic data (e.g. 50 x 4.6 x 4.6 nm) is first made near-isotropic in
    x and y; levels stop once the volume fits in about one chunk.
    """
    shape = np.asarray(shape_zyx, dtype=np.float64)
    resolution = np.asarray(resolution_nm, dtype=np.float64)
    factors: list[tuple[int, int, int]] = []
    while True:
        factor = np.where((resolution < 2 * resolution.min() - 1e-9) & (shape > MIN_TOP_LEVEL_VOXELS), 2, 1)
        if factor.max() == 1 or shape.max() <= CHUNK_XYZ[0]:
            return factors
        factors.append(tuple(int(f) for f in factor))
        shape = np.ceil(shape / factor)
        resolution = resolution * factor


def downsample(block: np.ndarray, factor: Sequence[int], labels: bool) -> np.ndarray:
    """One pyramid step of a z, y, x block: mode for labels, mean for images (tinybrain does both)."""
    import tinybrain

    if tuple(factor) == (1, 1, 1):
        return block
    factor_xyz = tuple(int(f) for f in reversed(factor))
    # tinybrain takes a writable buffer: a read-only source (an .npy memmap, say) is copied first.
    data_xyz = np.require(block.transpose(2, 1, 0), requirements=["F_CONTIGUOUS", "WRITEABLE"])
    if labels:
        result = tinybrain.downsample_segmentation(data_xyz, factor=factor_xyz, num_mips=1)[0]
    else:
        result = tinybrain.downsample_with_averaging(data_xyz, factor=factor_xyz, num_mips=1)[0]
    return np.ascontiguousarray(np.asarray(result).transpose(2, 1, 0))


def layer_info(shape_zyx, resolution_nm, layer_type: str, data_type: str, voxel_offset_zyx=(0, 0, 0)) -> dict:
    """The precomputed `info` with every pyramid level, built by cloud-volume."""
    from cloudvolume import CloudVolume

    encoding = "compressed_segmentation" if layer_type == "segmentation" else "raw"
    info = CloudVolume.create_new_info(
        num_channels=1,
        layer_type=layer_type,
        data_type=data_type,
        encoding=encoding,
        resolution=[float(r) for r in reversed(resolution_nm)],
        voxel_offset=[int(o) for o in reversed(voxel_offset_zyx)],
        volume_size=[int(s) for s in reversed(shape_zyx)],
        chunk_size=list(CHUNK_XYZ),
        compressed_segmentation_block_size=(8, 8, 8) if layer_type == "segmentation" else None,
    )
    shape = np.asarray(shape_zyx)
    offset = np.asarray(voxel_offset_zyx)
    resolution = np.asarray(resolution_nm, dtype=np.float64)
    for factor in pyramid_factors(shape_zyx, resolution_nm):
        factor = np.asarray(factor)
        shape = np.ceil(shape / factor).astype(int)
        offset = offset // factor
        resolution = resolution * factor
        scale = dict(info["scales"][0])
        scale.update(
            key="_".join(f"{r:g}" for r in reversed(resolution)),
            resolution=[float(r) for r in reversed(resolution)],
            size=[int(s) for s in reversed(shape)],
            voxel_offset=[int(o) for o in reversed(offset)],
        )
        info["scales"].append(scale)
    return info


def check_label_dtype(dtype) -> None:
    if np.dtype(dtype).kind == "f":
        raise InputError(f"labels must be integers, got {np.dtype(dtype)} (floating-point labels are ambiguous; convert them first)")
    if np.dtype(dtype).type not in LABEL_INPUT_DTYPES:
        raise InputError(f"labels must be an integer type (uint8/16/32/64, int32), got {np.dtype(dtype)}")


def write_layer(path: str | os.PathLike, source, resolution_nm: Sequence[float] | None = None,
                layer_type: str = "image", overwrite: bool = False, voxel_offset: Sequence[int] = (0, 0, 0),
                progress: bool = True) -> Path:
    """Write `source` (a NumPy z, y, x array or a volumes.io.Volume) as a precomputed layer at `path`.

    Segmentation is stored as uint64 (FlyEM body ids exceed 2^32). The data
    streams through in z slabs, so a volume never needs to fit in memory whole.
    """
    from volumes.io import ArrayVolume, Volume

    path = Path(path)
    if layer_type not in ("image", "segmentation"):
        raise InputError(f"layer type must be 'image' or 'segmentation', got {layer_type!r}")
    if isinstance(source, Volume):
        volume = source
        resolution_nm = resolution_nm or volume.resolution_nm
    else:
        volume = ArrayVolume("array", np.asarray(source), resolution_nm)
    if resolution_nm is None:
        raise InputError("the voxel size is unknown; give it as --resolution z,y,x (nm)")
    labels = layer_type == "segmentation"
    if labels:
        check_label_dtype(volume.dtype)
        data_type = "uint64"
    else:
        if volume.dtype.kind not in "uif":
            raise InputError(f"cannot store image data of type {volume.dtype}")
        data_type = volume.dtype.name
    if (path / "info").exists() and not overwrite:
        raise InputError(f"layer {path.name!r} already exists in {path.parent}; pass --overwrite to replace it")
    info = layer_info(volume.shape, resolution_nm, layer_type, data_type, voxel_offset)
    with _staging_directory(path) as staging:
        _write_pyramid(staging, info, volume, labels, progress, name=path.name)
        _replace_directory(staging, path)
    return path


def _write_pyramid(directory: Path, info: dict, volume, labels: bool, progress: bool, name: str) -> None:
    from cloudvolume import CloudVolume

    url = "precomputed://file://" + str(directory)
    levels = [CloudVolume(url, mip=mip, info=info, progress=False, fill_missing=False, non_aligned_writes=True,
                          compress="gzip", delete_black_uploads=False, cache=False)
              for mip in range(len(info["scales"]))]
    levels[0].commit_info()
    factors = pyramid_factors(volume.shape, [s for s in reversed(info["scales"][0]["resolution"])])
    slab_depth = CHUNK_XYZ[2] * int(np.prod([f[0] for f in factors]))
    dtype = np.dtype(info["data_type"])
    slabs = list(Box.from_shape(volume.shape).chunks((slab_depth, volume.shape[1], volume.shape[2])))
    for slab in tqdm(slabs, desc=f"writing {name}", unit="slab", disable=not progress):
        block = volume.read(slab)
        if block.dtype != dtype:
            block = block.astype(dtype)
        z_start = slab.start[0]
        for level, cv in enumerate(levels):
            if level > 0:
                block = downsample(block, factors[level - 1], labels)
                z_start //= factors[level - 1][0]
            offset = cv.voxel_offset
            z = z_start + offset[2]
            cv[offset[0]:offset[0] + block.shape[2], offset[1]:offset[1] + block.shape[1], z:z + block.shape[0]] = \
                block.transpose(2, 1, 0)[..., np.newaxis]


@contextlib.contextmanager
def _staging_directory(final: Path) -> Iterator[Path]:
    """A hidden sibling directory, removed whatever happens unless it was renamed into place."""
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.parent / f".staging-{final.name}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _replace_directory(staging: Path, final: Path) -> None:
    """Move the finished layer into place; an old layer is moved aside first and deleted after."""
    trash = None
    if final.exists():
        trash = final.parent / f".trash-{final.name}-{uuid.uuid4().hex[:8]}"
        os.rename(final, trash)
    os.rename(staging, final)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)
