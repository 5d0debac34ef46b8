"""Blockwise prediction, synaptic sites as connected components, and partner assignment.

Flow: the image is read block by block at the model's working resolution (each block with
a context margin), predicted in batches, and the block centres assembled into a site
probability map and a polarity map (uint8 each). Sites are the connected components of
the thresholded map; each gets position_nm (probability-weighted centroid), size (working
voxels) and score (mean probability). Partners come from the segmentation around it,
ordered pre/post by the polarity map when the model predicts one.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import cc3d
import numpy as np
import torch
from scipy import ndimage
from tqdm import tqdm

from synapses.data import Region, normalize_image
from synapses.model import SynapseModel, SynapseUNet
from volumes.errors import InputError
from volumes.geometry import Box
from volumes.io import Volume

PARTNER_SEARCH_NM = 250.0
CONTACT_RADIUS_NM = 120.0  # where the two partners must touch, around the site
SIDE_RADIUS_NM = 60.0  # each partner's voxels this near the site give its polarity and its point


@dataclass
class Prediction:
    """Maps at working resolution, 0..255: site probability and presynaptic-side probability (polarity)."""

    probability: np.ndarray
    polarity: np.ndarray
    counters: dict[str, float] = field(default_factory=dict)


@dataclass
class Site:
    """One detected synaptic site; ids are 0 until partners are assigned."""

    position_nm: np.ndarray
    size: int
    score: float
    pre_segment: int = 0
    post_segment: int = 0
    directed: bool = False
    pre_position_nm: np.ndarray | None = None
    post_position_nm: np.ndarray | None = None


def block_layout(network: SynapseUNet, shape: Sequence[int], block_shape: Sequence[int] | None = None) -> tuple[tuple, tuple]:
    """Output block and context margin (working voxels), both multiples of the network's pooling."""
    pooling = network.config.total_pooling
    if block_shape is None:
        block_shape = (32, 128, 128)
    block = tuple(max(p, int(np.ceil(min(b, s) / p)) * p) for b, s, p in zip(block_shape, shape, pooling))
    margin = tuple(p * max(1, int(np.ceil(4 / p))) for p in pooling)
    return block, margin


def predict_blocks(
    network: SynapseUNet,
    read_box: Callable[[Box], np.ndarray],
    shape: Sequence[int],
    block_shape: Sequence[int] | None = None,
    batch_size: int = 4,
    device: str = "cpu",
    progress: bool = False,
) -> Prediction:
    """Predict a whole volume through `read_box` (a working-voxel box inside `shape` -> normalized float32)."""
    shape = tuple(int(s) for s in shape)
    block, margin = block_layout(network, shape, block_shape)
    probability = np.zeros(shape, dtype=np.uint8)
    polarity = np.zeros(shape, dtype=np.uint8)
    # Every block reads the same shape (block + both margins), so blocks batch; reads past the edge are mirrored.
    blocks = Box.from_shape(shape).blocks(block, margin, clip=False)
    counters = {"blocks": len(blocks), "batches": 0, "read_s": 0.0, "network_s": 0.0}
    network.eval()
    bar = tqdm(total=len(blocks), desc="predicting synapses", unit="block", disable=not progress)
    for first in range(0, len(blocks), batch_size):
        batch = blocks[first:first + batch_size]
        started = time.perf_counter()
        inputs = np.stack([_read_padded(read_box, item.read, shape) for item in batch])
        counters["read_s"] += time.perf_counter() - started
        started = time.perf_counter()
        with torch.inference_mode():  # probabilities as bytes on the device: a quarter of the transfer
            logits = network(torch.from_numpy(inputs[:, None]).to(device)).float()
            output = torch.sigmoid(logits).mul_(255.0).round_().to(torch.uint8).cpu().numpy()
        counters["network_s"] += time.perf_counter() - started
        counters["batches"] += 1
        for item, result in zip(batch, output):
            inner = item.write_within_read()
            probability[item.write.slices()] = result[0][inner]
            polarity[item.write.slices()] = result[1][inner]
        bar.update(len(batch))
    bar.close()
    return Prediction(probability, polarity, counters)


def _read_padded(read_box, wanted: Box, shape: Sequence[int]) -> np.ndarray:
    """The `wanted` box of the volume, mirrored where it leaves the volume."""
    inside = wanted.intersect(Box.from_shape(shape))
    data = read_box(inside)
    pad = list(zip(inside.start - wanted.start, wanted.stop - inside.stop))
    if any(p for pair in pad for p in pair):
        data = np.pad(data, pad, mode="symmetric")
    return data.astype(np.float32, copy=False)


def region_reader(region: Region, sample_blocks: int = 12) -> Callable[[Box], np.ndarray]:
    """Read working-resolution boxes of a (lazy) region, normalized with statistics of a few sample blocks."""
    shape = region.working_shape
    samples = []
    rng = np.random.default_rng(0)
    sample_shape = tuple(min(s, t) for s, t in zip(shape, (16, 128, 128)))
    for _ in range(sample_blocks):
        start = [int(rng.integers(0, s - t + 1)) for s, t in zip(shape, sample_shape)]
        samples.append(region.read_working(Box.from_shape(sample_shape, start)).ravel())
    values = np.concatenate(samples)
    mean, std = float(values.mean()), float(values.std())
    std = std if std > 1e-6 else 1.0
    return lambda box: (region.read_working(box) - mean) / std


def array_reader(image: np.ndarray) -> Callable[[Box], np.ndarray]:
    normalized = normalize_image(image)
    return lambda box: normalized[box.slices()]


def extract_sites(
    prediction: Prediction,
    region: Region,
    threshold: float,
    min_size_voxels: int,
) -> list[Site]:
    """Connected components of probability >= threshold, at least min_size_voxels large."""
    mask = prediction.probability >= int(np.ceil(threshold * 255))
    if not mask.any():
        return []
    components = cc3d.connected_components(mask, connectivity=26)
    statistics = cc3d.statistics(components)
    sites = []
    for label, (size, box) in enumerate(zip(statistics["voxel_counts"], statistics["bounding_boxes"])):
        if label == 0 or size < min_size_voxels:
            continue
        inside = components[box] == label
        weights = prediction.probability[box][inside].astype(np.float64)
        voxels = np.argwhere(inside) + np.array([b.start for b in box])
        centroid = (weights[:, None] * voxels).sum(axis=0) / weights.sum()
        sites.append(Site(region.working_voxel_to_nm(centroid), int(size), float(weights.mean() / 255.0)))
    return sites


def assign_partners(sites: list[Site], segmentation: Volume,
                    polarity_at: Callable[[np.ndarray], np.ndarray] | None = None) -> tuple[list[Site], dict[str, int]]:
    """Pre and post segment of each site; drops autapses and sites without two segments.

    The two segments are those with the most contact across the cleft near the site.
    `polarity_at` (positions nm (N, 3) -> presynaptic-side probability) orders them: pre is
    the segment whose voxels near the site have the higher mean polarity (directed=True).
    Without it the pair is unordered (smaller id first, directed=False). The pre and post
    points are the centroids of each segment's voxels near the site.
    """
    kept, dropped = [], {"background": 0, "autapse": 0}
    resolution = np.asarray(segmentation.resolution_nm)
    offset = np.asarray(segmentation.offset_nm)
    for site in sites:
        center = (site.position_nm - offset) / resolution
        reach = np.ceil(PARTNER_SEARCH_NM / resolution).astype(int)
        box = Box(tuple(np.floor(center).astype(int) - reach), tuple(np.floor(center).astype(int) + reach + 1))
        box = box.intersect(segmentation.box)
        if box.is_empty:
            dropped["background"] += 1
            continue
        labels = segmentation.read(box)
        local_center = center - np.asarray(box.start)
        pair = _pair_with_most_contact(labels, local_center, resolution)
        if pair is None:
            dropped["background"] += 1
            continue
        if pair[0] == pair[1]:
            dropped["autapse"] += 1
            continue
        near_points = [(_points_near(labels, local_center, resolution, label) + np.asarray(box.start)) * resolution + offset
                       for label in pair]
        if polarity_at is not None:
            scores = [float(polarity_at(points).mean()) if len(points) else 0.0 for points in near_points]
            if scores[1] > scores[0]:
                pair, near_points = (pair[1], pair[0]), near_points[::-1]
            site.directed = True
        site.pre_segment, site.post_segment = int(pair[0]), int(pair[1])
        site.pre_position_nm, site.post_position_nm = (points.mean(axis=0) if len(points) else site.position_nm.copy()
                                                       for points in near_points)
        kept.append(site)
    return kept, dropped


def _points_near(labels, center, resolution, label) -> np.ndarray:
    """Voxel centres (local voxel units) of `label` within SIDE_RADIUS_NM of the centre (the nearest few if none)."""
    voxels = np.argwhere(labels == label) + 0.5
    distance = np.sqrt((((voxels - center) * resolution) ** 2).sum(axis=1))
    if len(voxels) == 0 or (distance <= SIDE_RADIUS_NM).any():
        return voxels[distance <= SIDE_RADIUS_NM]
    return voxels[np.argsort(distance)[:8]]


def polarity_sampler(prediction: Prediction, region: Region) -> Callable[[np.ndarray], np.ndarray]:
    """Positions (nm) -> presynaptic-side probability from the working-resolution polarity map."""
    shape = np.asarray(prediction.polarity.shape)

    def polarity_at(points_nm: np.ndarray) -> np.ndarray:
        voxels = np.clip(np.rint(region.nm_to_working_voxel(points_nm)).astype(int), 0, shape - 1)
        return prediction.polarity[tuple(voxels.T)] / 255.0

    return polarity_at


def _pair_with_most_contact(labels, center, resolution) -> tuple[int, int] | None:
    """The two nonzero labels sharing the most faces within CONTACT_RADIUS_NM of the centre, smaller id first.

    Unlabelled voxels (membranes left out by the segmentation) first take their nearest label,
    so segments facing each other across a gap count as touching.
    """
    grids = np.ogrid[tuple(slice(0, s) for s in labels.shape)]
    near = sum(((g + 0.5 - c) * r) ** 2 for g, c, r in zip(grids, center, resolution)) <= CONTACT_RADIUS_NM**2
    if not labels[near].any():
        return None
    if not labels.all():
        _, nearest = ndimage.distance_transform_edt(labels == 0, sampling=resolution, return_indices=True)
        labels = labels[tuple(nearest)]
    pairs = []
    for axis in range(3):
        lower = [slice(None)] * 3
        upper = [slice(None)] * 3
        lower[axis], upper[axis] = slice(0, -1), slice(1, None)
        a, b = labels[tuple(lower)], labels[tuple(upper)]
        touching = (a != b) & (a != 0) & (b != 0) & near[tuple(lower)]
        pairs.append(np.stack([np.minimum(a[touching], b[touching]), np.maximum(a[touching], b[touching])], axis=1))
    pairs = np.concatenate(pairs)
    if len(pairs) == 0:
        values, counts = np.unique(labels[near & (labels != 0)], return_counts=True)
        if len(values) == 0:
            return None
        only = int(values[np.argmax(counts)])
        return only, only  # one segment only: reported as an autapse
    unique, counts = np.unique(pairs, axis=0, return_counts=True)
    first, second = unique[np.argmax(counts)]
    return int(first), int(second)


def check_same_shape(image: Volume, segmentation: Volume) -> None:
    if image.shape != segmentation.shape:
        raise InputError(f"the segmentation has shape {segmentation.shape} but the image {image.shape}; they must cover the same voxels")


@dataclass
class DetectionResult:
    """Sites as detected (`all_sites`), those with two partner segments (`sites`), and why others were dropped."""

    all_sites: list[Site]
    sites: list[Site]
    dropped: dict[str, int]
    region: Region
    counters: dict[str, float]


def detect(model: SynapseModel, image: Volume, segmentation: Volume | None = None, z_range: tuple[int, int] | None = None,
           block_shape: Sequence[int] | None = None, batch_size: int = 4, device: str = "cpu",
           threshold: float | None = None, min_size_voxels: int | None = None, progress: bool = False) -> DetectionResult:
    """Predict over the image (blockwise, any size), extract sites, and assign partners when a segmentation is given."""
    from synapses.data import working_scale

    if segmentation is not None:
        check_same_shape(image, segmentation)
    region = Region(image, z_range or (0, image.shape[0]), working_scale(image.resolution_nm, model.resolution_nm))
    if any(s < 1 for s in region.working_shape):
        raise InputError(f"{image.spec}: shape {image.shape} is smaller than one voxel at the model's resolution {model.resolution_nm} nm")
    model.network.to(device)
    prediction = predict_blocks(model.network, region_reader(region), region.working_shape, block_shape, batch_size, device, progress)
    threshold = model.threshold if threshold is None else threshold
    min_size_voxels = model.min_size_voxels if min_size_voxels is None else min_size_voxels
    all_sites = extract_sites(prediction, region, threshold, min_size_voxels)
    sites, dropped = list(all_sites), {}
    if segmentation is not None:
        polarity_at = polarity_sampler(prediction, region) if model.has_polarity else None
        sites, dropped = assign_partners([copy_site(s) for s in all_sites], segmentation, polarity_at)
    return DetectionResult(all_sites, sites, dropped, region, prediction.counters)


def copy_site(site: Site) -> Site:
    return Site(site.position_nm.copy(), site.size, site.score)
