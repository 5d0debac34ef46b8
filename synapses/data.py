"""Images and synapse ground truth, brought to the detector's working resolution.

Ground truth comes in two kinds:

* a mask or instance volume (any format `volumes.io.open_volume` opens, e.g. a PNG stack
  of per-section masks): the sites are its 3-D connected components, no pre/post polarity;
* a CREMI-style HDF5 file given without a dataset key (`file.h5`): its
  `/annotations` pre/post partner points; a site is the midpoint of a pair, the training
  target a ball around it (or the file's drawn clefts, when it has /volumes/labels/clefts),
  and the polarity target 1 on the pre side, 0 on the post side of the plane through the
  site across the pre-post line (within POLARITY_RADIUS_NM), ignored elsewhere.

Positions (`*_nm`) are z, y, x nanometres in the frame of the whole source volume
(section cropping is undone), voxel centres.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cc3d
import numpy as np
import tinybrain

from volumes.errors import InputError, RefusedError
from volumes.geometry import Box
from volumes.io import Volume, open_volume

SITE_BALL_RADIUS_NM = 60.0
POLARITY_RADIUS_NM = 150.0
POLARITY_GAP_NM = 10.0  # voxels this close to the plane are ignored: either side is plausible


@dataclass
class Region:
    """The part of a source volume in use: its z range (sections) and the xy downsampling to the working resolution."""

    volume: Volume
    z_range: tuple[int, int]
    factors: tuple[int, int, int]

    @property
    def source_box(self) -> Box:
        """The source voxels used: whole working voxels only."""
        shape = self.volume.shape
        usable = [(self.z_range[1] - self.z_range[0]) // self.factors[0] * self.factors[0],
                  shape[1] // self.factors[1] * self.factors[1], shape[2] // self.factors[2] * self.factors[2]]
        return Box((self.z_range[0], 0, 0), (self.z_range[0] + usable[0], usable[1], usable[2]))

    @property
    def working_shape(self) -> tuple[int, int, int]:
        return tuple(s // f for s, f in zip(self.source_box.shape, self.factors))

    @property
    def working_resolution_nm(self) -> tuple[float, float, float]:
        return tuple(r * f for r, f in zip(self.volume.resolution_nm, self.factors))

    @property
    def origin_nm(self) -> np.ndarray:
        """Where working voxel (0, 0, 0)'s corner lies in the source volume's frame, nm."""
        return np.asarray(self.volume.offset_nm) + np.asarray(self.source_box.start) * np.asarray(self.volume.resolution_nm)

    def working_voxel_to_nm(self, voxels_zyx: np.ndarray) -> np.ndarray:
        """Working voxel indices (fractional allowed) to their centres in nm."""
        return self.origin_nm + (np.asarray(voxels_zyx, dtype=np.float64) + 0.5) * np.asarray(self.working_resolution_nm)

    def nm_to_working_voxel(self, position_nm: np.ndarray) -> np.ndarray:
        return (np.asarray(position_nm, dtype=np.float64) - self.origin_nm) / np.asarray(self.working_resolution_nm) - 0.5

    def read_working(self, box: Box | None = None) -> np.ndarray:
        """Read a box given in working voxels, averaged down from the source (float32)."""
        box = box or Box.from_shape(self.working_shape)
        source = Box(tuple(s * f + o for s, f, o in zip(box.start, self.factors, self.source_box.start)),
                     tuple(s * f + o for s, f, o in zip(box.stop, self.factors, self.source_box.start)))
        return downsample_mean(self.volume.read(source).astype(np.float32), self.factors)


def parse_sections(text: str | None, depth: int, what: str = "--sections") -> tuple[int, int]:
    """'A:B' (half-open, like Python slices; either end may be left out) to a z range inside [0, depth)."""
    if not text:
        return 0, depth
    parts = str(text).split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        start = int(parts[0]) if parts[0].strip() else 0
        stop = int(parts[1]) if parts[1].strip() else depth
    except ValueError:
        raise InputError(f"{what} must be A:B (sections A up to but not including B), got {text!r}") from None
    if not 0 <= start < stop <= depth:
        raise InputError(f"{what} {text!r} is empty or outside the volume's {depth} sections")
    return start, stop


def working_factors(source_resolution_nm: Sequence[float], working_resolution_nm: Sequence[float]) -> tuple[int, int, int]:
    """Integer downsampling factors from the source to the working resolution, or refuse clearly."""
    ratios = np.asarray(working_resolution_nm, dtype=float) / np.asarray(source_resolution_nm, dtype=float)
    factors = np.rint(ratios)
    if np.any(factors < 1) or np.any(np.abs(ratios - factors) > 0.02 * factors):
        raise RefusedError(
            f"the model works at {tuple(working_resolution_nm)} nm but the image is {tuple(source_resolution_nm)} nm; "
            "it can only average the image down by whole factors: train a model at this image's resolution"
        )
    return tuple(int(f) for f in factors)


def _whole_blocks(array: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """`array` without the partial blocks at its far edges (a working voxel needs all its source voxels)."""
    z, y, x = (s // f for s, f in zip(array.shape, factors))
    return np.ascontiguousarray(array[: z * factors[0], : y * factors[1], : x * factors[2]])


def downsample_mean(array: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """Average `factors` blocks into one working voxel (tinybrain, as the image pyramids are made)."""
    if all(f == 1 for f in factors):
        return array
    return tinybrain.downsample_with_averaging(_whole_blocks(array, factors), tuple(int(f) for f in factors))[0]


def downsample_any(mask: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """A working voxel is set when any of its source voxels is (thin clefts survive)."""
    if all(f == 1 for f in factors):
        return mask
    blocks = _whole_blocks(mask, factors).astype(np.uint8)
    return tinybrain.downsample_with_max_pooling(blocks, tuple(int(f) for f in factors))[0].astype(bool)


def open_image(spec: str, resolution_nm: Sequence[float] | None) -> Volume:
    volume = open_volume(spec, resolution_nm=resolution_nm)
    if resolution_nm is None and not volume.has_resolution:
        raise InputError(f"{spec}: the image does not record its voxel size; give --resolution z,y,x (nm)")
    return volume


@dataclass
class GroundTruth:
    """Synapse truth over a Region: training targets at working resolution, and sites for evaluation."""

    site_mask: np.ndarray  # bool, working shape
    polarity: np.ndarray | None  # float32, working shape: 1 pre side, 0 post side, -1 ignored
    sites_nm: np.ndarray  # (K, 3) site centres
    pre_nm: np.ndarray | None = None  # (K, 3) when partners are known
    post_nm: np.ndarray | None = None
    partner_ids: np.ndarray | None = None  # (K, 2) pre, post neuron ids when the file records them


def is_annotation_file(spec: str) -> bool:
    path = Path(spec)
    return path.suffix.lower() in (".h5", ".hdf5", ".hdf") and path.is_file()


def load_ground_truth(spec: str, region: Region, resolution_nm: Sequence[float] | None) -> GroundTruth:
    """Ground truth for `region` from a mask/instance volume or a CREMI annotation file."""
    if is_annotation_file(spec):
        return _truth_from_annotations(spec, region)
    return _truth_from_mask(spec, region, resolution_nm)


def _truth_from_mask(spec: str, region: Region, resolution_nm) -> GroundTruth:
    volume = open_volume(spec, resolution_nm=resolution_nm or region.volume.resolution_nm)
    if volume.shape != region.volume.shape:
        raise InputError(f"{spec}: synapse ground truth has shape {volume.shape}, the image {region.volume.shape}")
    labels = np.ascontiguousarray(volume.read(region.source_box))
    if not labels.flags.writeable:  # memory-mapped sources
        labels = labels.copy()
    components = cc3d.connected_components(labels, connectivity=26)
    statistics = cc3d.statistics(components)
    centroids = np.asarray(statistics["centroids"][1:], dtype=np.float64).reshape(-1, 3)
    source_resolution = np.asarray(region.volume.resolution_nm)
    sites_nm = region.origin_nm + (centroids + 0.5) * source_resolution
    return GroundTruth(site_mask=downsample_any(components > 0, region.factors), polarity=None, sites_nm=sites_nm)


def _truth_from_annotations(spec: str, region: Region) -> GroundTruth:
    from volumes.synth import read_cremi_synapses

    pairs = read_cremi_synapses(spec)
    pre_nm, post_nm = pairs["pre_nm"], pairs["post_nm"]
    sites_nm = (pre_nm + post_nm) / 2.0
    low = region.origin_nm
    high = low + np.asarray(region.working_shape) * np.asarray(region.working_resolution_nm)
    inside = np.all((sites_nm >= low) & (sites_nm < high), axis=1)
    shape = region.working_shape
    site_mask = np.zeros(shape, dtype=bool)
    polarity = np.full(shape, -1.0, dtype=np.float32)
    resolution = np.asarray(region.working_resolution_nm)
    for site, pre, post in zip(sites_nm[inside], pre_nm[inside], post_nm[inside]):
        vector = pre - post
        unit = vector / max(np.linalg.norm(vector), 1e-9)
        center = region.nm_to_working_voxel(site)
        field = _distance_field(center, resolution, shape, POLARITY_RADIUS_NM)
        if field is None:
            continue
        box, squared, along = field[0], field[1], _along(field[0], center, resolution, unit)
        site_mask[box][squared <= SITE_BALL_RADIUS_NM**2] = True
        near = squared <= POLARITY_RADIUS_NM**2
        polarity[box][near & (along > POLARITY_GAP_NM)] = 1.0
        polarity[box][near & (along < -POLARITY_GAP_NM)] = 0.0
    clefts = _cleft_mask(spec, region)
    if clefts is not None:  # the drawn clefts are a sharper target than balls
        site_mask = clefts
    partner_ids = pairs["neuron_ids"][inside] if pairs["neuron_ids"] is not None else None
    return GroundTruth(site_mask, polarity, sites_nm[inside], pre_nm[inside], post_nm[inside], partner_ids)


def _cleft_mask(spec: str, region: Region) -> np.ndarray | None:
    """The file's /volumes/labels/clefts (CREMI; background 0 or 0xFFFFFFFFFFFFFFFF) at working resolution, if present."""
    import h5py

    with h5py.File(spec, "r") as f:
        if "volumes/labels/clefts" not in f or f["volumes/labels/clefts"].shape != region.volume.shape:
            return None
    clefts = open_volume(f"{spec}:volumes/labels/clefts").read(region.source_box)
    mask = (clefts != 0) & (clefts != np.iinfo(np.uint64).max)
    return downsample_any(mask, region.factors)


def _distance_field(center_vox: np.ndarray, resolution: np.ndarray, shape, radius_nm: float):
    """(slices, squared nm distances of voxel centres to center) over the box reaching radius_nm."""
    half = np.ceil(radius_nm / resolution).astype(int) + 1
    low = np.maximum(np.floor(center_vox).astype(int) - half, 0)
    high = np.minimum(np.floor(center_vox).astype(int) + half + 1, shape)
    if np.any(high <= low):
        return None
    grids = np.ogrid[low[0]:high[0], low[1]:high[1], low[2]:high[2]]
    squared = sum(((g - c) * r) ** 2 for g, c, r in zip(grids, center_vox, resolution))
    return tuple(slice(a, b) for a, b in zip(low, high)), squared


def _along(box, center_vox: np.ndarray, resolution: np.ndarray, unit: np.ndarray) -> np.ndarray:
    """Signed distance (nm) of each voxel centre in box from the plane through center normal to unit."""
    grids = np.ogrid[tuple(box)]
    return sum((g - c) * r * u for g, c, r, u in zip(grids, center_vox, resolution, unit))


def normalize_image(image: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per volume: contrast differs between datasets, shape does not."""
    image = image.astype(np.float32)
    std = float(image.std())
    return (image - float(image.mean())) / (std if std > 1e-6 else 1.0)
