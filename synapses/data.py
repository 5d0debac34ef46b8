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
from typing import Callable, Sequence

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
    """The part of a source volume in use: its z range (sections) and its scale to the working resolution.

    `scale` is working voxel size / source voxel size per axis (z, y, x). Whole factors (1, 4, 4)
    average blocks of source voxels (tinybrain, exactly as before); any other ratio, up or down to
    MAX_RESAMPLING, resamples: working voxel centres are sampled (trilinear) from the source after a
    Gaussian anti-aliasing blur of sigma (ratio - 1) / 2 source voxels where it shrinks (scikit-image's rule).
    """

    volume: Volume
    z_range: tuple[int, int]
    scale: tuple[float, float, float]

    @property
    def factors(self) -> tuple[int, int, int] | None:
        """The scale as whole averaging factors, or None when it is not one."""
        return integer_factors(self.scale)

    @property
    def source_box(self) -> Box:
        """The source voxels used: whole working voxels only."""
        shape = self.volume.shape
        depth = self.z_range[1] - self.z_range[0]
        factors = self.factors
        if factors is None:
            return Box((self.z_range[0], 0, 0), (self.z_range[1], shape[1], shape[2]))
        usable = [depth // factors[0] * factors[0], shape[1] // factors[1] * factors[1], shape[2] // factors[2] * factors[2]]
        return Box((self.z_range[0], 0, 0), (self.z_range[0] + usable[0], usable[1], usable[2]))

    @property
    def working_shape(self) -> tuple[int, int, int]:
        return tuple(max(1, int(np.floor(s / f + 1e-9))) for s, f in zip(self.source_box.shape, self.scale))

    @property
    def working_resolution_nm(self) -> tuple[float, float, float]:
        return tuple(round(float(r * f), 6) for r, f in zip(self.volume.resolution_nm, self.scale))

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
        """Read a box given in working voxels, averaged down or resampled from the source (float32)."""
        box = box or Box.from_shape(self.working_shape)
        factors = self.factors
        if factors is not None:
            source = Box(box.start * factors + self.source_box.start, box.stop * factors + self.source_box.start)
            return downsample_mean(self.volume.read(source).astype(np.float32), factors)
        return self._resample(box, lambda source: self.volume.read(source).astype(np.float32), order=1, blur=True)

    def mask_to_working(self, mask: np.ndarray) -> np.ndarray:
        """A source mask of `source_box` at working resolution: set where any source voxel under it is."""
        factors = self.factors
        if factors is not None:
            return downsample_any(mask, factors)
        from scipy import ndimage

        footprint = tuple(max(1, int(np.ceil(s))) for s in self.scale)
        grown = ndimage.maximum_filter(mask.astype(np.uint8), size=footprint) if max(footprint) > 1 else mask
        def read(source: Box) -> np.ndarray:
            return grown[source.slices(relative_to=self.source_box.start)]

        return self._resample(Box.from_shape(self.working_shape), read, order=0, blur=False) > 0

    def _resample(self, box: Box, read: Callable[[Box], np.ndarray], order: int, blur: bool) -> np.ndarray:
        """Working voxels of `box` sampled from the source at their centres (source_box frame)."""
        from scipy import ndimage

        scale = np.asarray(self.scale, dtype=np.float64)
        sigma = np.maximum(0.0, (scale - 1.0) / 2.0) if blur else np.zeros(3)
        margin = np.ceil(3.0 * sigma).astype(int) + 2
        centres = [(np.arange(a, b) + 0.5) * s - 0.5 for a, b, s in zip(box.start, box.stop, scale)]
        low = np.array([int(np.floor(c[0])) for c in centres]) - margin
        high = np.array([int(np.ceil(c[-1])) + 1 for c in centres]) + margin
        limit = np.asarray(self.source_box.shape)
        low, high = np.clip(low, 0, limit), np.clip(high, 0, limit)
        source = Box(self.source_box.start + low, self.source_box.start + high)
        data = np.asarray(read(source), dtype=np.float32)
        if np.any(sigma > 0):
            data = ndimage.gaussian_filter(data, sigma, mode="nearest")
        grid = np.meshgrid(*[c - lo for c, lo in zip(centres, low)], indexing="ij")
        return ndimage.map_coordinates(data, grid, order=order, mode="nearest").astype(np.float32)


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


MAX_RESAMPLING = 8.0  # beyond this either way the model would see another kind of image


def working_scale(source_resolution_nm: Sequence[float], working_resolution_nm: Sequence[float]) -> tuple[float, float, float]:
    """Working / source voxel size per axis (any ratio within MAX_RESAMPLING either way), or refuse with the reason."""
    ratios = np.asarray(working_resolution_nm, dtype=float) / np.asarray(source_resolution_nm, dtype=float)
    if np.any(ratios > MAX_RESAMPLING) or np.any(ratios < 1 / MAX_RESAMPLING):
        raise RefusedError(
            f"the model works at {tuple(working_resolution_nm)} nm but the image is {tuple(source_resolution_nm)} nm: "
            f"a ratio of {', '.join(f'{r:.3g}x' for r in ratios)} is beyond the {MAX_RESAMPLING:g}x either way that "
            "resampling can bridge; train a model nearer this image's resolution")
    factors = integer_factors(ratios)
    return tuple(float(f) for f in factors) if factors is not None else tuple(float(r) for r in ratios)


def integer_factors(scale: Sequence[float]) -> tuple[int, int, int] | None:
    """Whole averaging factors when every ratio is within 2% of a whole number >= 1, else None."""
    ratios = np.asarray(scale, dtype=float)
    factors = np.rint(ratios)
    if np.any(factors < 1) or np.any(np.abs(ratios - factors) > 0.02 * factors):
        return None
    return tuple(int(f) for f in factors)


def describe_scale(scale: Sequence[float]) -> str:
    factors = integer_factors(scale)
    if factors is not None:
        return f"averaged down by {factors}"
    return "resampled by " + " x ".join(f"{s:.3g}" for s in scale) + " (z, y, x; anti-aliased where it shrinks)"


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
    return GroundTruth(site_mask=region.mask_to_working(components > 0), polarity=None, sites_nm=sites_nm)


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
    return region.mask_to_working(mask)


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
