"""The region adjacency graph of a segmentation: supervoxel statistics and contacts (cc3d), boundary scores (numpy).

A contact is a voxel face between two different non-zero labels; its area is the product of the
two resolutions in the face's plane. The boundary score of a contact is the mean of a boundary
map (rescaled to [0, 1]) over the voxels on both sides of its faces.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cc3d
import fastremap
import numpy as np

from volumes.errors import InputError

MAX_SUPERVOXEL_ID = 2**63 - 1  # stored as signed 64-bit


@dataclass
class RegionGraph:
    """Column arrays, one entry per supervoxel (ids ...) and per adjacency (sv_a < sv_b ...)."""

    ids: np.ndarray
    size_voxels: np.ndarray
    bbox_start: np.ndarray  # (n, 3) z, y, x voxels, inclusive
    bbox_stop: np.ndarray  # (n, 3) exclusive
    centroid_nm: np.ndarray  # (n, 3) z, y, x
    sv_a: np.ndarray
    sv_b: np.ndarray
    contact_area_nm2: np.ndarray
    boundary_score: np.ndarray | None


def region_graph(labels_zyx: np.ndarray, resolution_nm: Sequence[float], image: np.ndarray | None = None,
                 offset_nm: Sequence[float] = (0.0, 0.0, 0.0)) -> RegionGraph:
    """Supervoxel sizes, boxes and centroids, and the contact area (and boundary score) of each touching pair."""
    labels = _check_labels(labels_zyx)
    resolution = np.asarray(resolution_nm, dtype=np.float64)
    if resolution.shape != (3,) or np.any(resolution <= 0):
        raise InputError(f"resolution_nm must be three positive numbers (z, y, x), got {resolution_nm!r}")
    if image is not None and image.shape != labels.shape:
        raise InputError(f"boundary map shape {image.shape} differs from the labels' {labels.shape}")
    # Renumber to 1..n so every per-label statistic is one np.bincount.
    compact, mapping = fastremap.renumber(labels, in_place=False, preserve_zero=True)
    compact = compact.astype(np.uint32, copy=False)
    ids_by_index = np.zeros(len(mapping) + 1, dtype=np.int64)
    for original, index in mapping.items():
        ids_by_index[index] = original
    count = int(compact.max())
    ids = ids_by_index[1:count + 1]
    stats = _supervoxel_stats(compact, count, resolution, np.asarray(offset_nm, dtype=np.float64))
    index_a, index_b, area, score = _contacts(compact, count, resolution, image)
    # Renumbering does not keep the order of ids: put the smaller original id first, sort the pairs.
    first, second = ids_by_index[index_a], ids_by_index[index_b]
    sv_a, sv_b = np.minimum(first, second), np.maximum(first, second)
    order = np.lexsort((sv_b, sv_a))
    return RegionGraph(ids=ids, sv_a=sv_a[order], sv_b=sv_b[order], contact_area_nm2=area[order],
                       boundary_score=None if score is None else score[order], **stats)


def _check_labels(labels_zyx: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels_zyx)
    if labels.ndim != 3 or not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"labels must be a 3-d integer array (z, y, x), got {labels.ndim}-d {labels.dtype}")
    if labels.size and (labels.min() < 0 or int(labels.max()) > MAX_SUPERVOXEL_ID):
        raise InputError("supervoxel ids must be between 1 and 2**63-1 (0 is background)")
    if not labels.any():
        raise InputError("the segmentation has no supervoxels (all voxels are 0)")
    return labels


def _supervoxel_stats(compact: np.ndarray, count: int, resolution: np.ndarray, offset_nm: np.ndarray) -> dict:
    """Sizes, boxes (voxels) and centroids (nm, voxel centres) of labels 1..count, from cc3d.statistics in one pass."""
    stats = cc3d.statistics(compact)
    sizes = np.asarray(stats["voxel_counts"][1:count + 1], dtype=np.int64)
    boxes = stats["bounding_boxes"][1:count + 1]
    start = np.array([[s.start for s in box] for box in boxes], dtype=np.int64).reshape(count, 3)
    stop = np.array([[s.stop for s in box] for box in boxes], dtype=np.int64).reshape(count, 3)
    centroid = (np.asarray(stats["centroids"][1:count + 1], dtype=np.float64) + 0.5) * resolution + offset_nm
    return {"size_voxels": sizes, "bbox_start": start, "bbox_stop": stop, "centroid_nm": centroid}


def _contacts(compact: np.ndarray, count: int, resolution: np.ndarray, image: np.ndarray | None):
    """Pairs (compact indices, a < b), summed face area (cc3d.contacts) and mean boundary score per pair."""
    touching = cc3d.contacts(compact, connectivity=6, surface_area=True, anisotropy=tuple(float(r) for r in resolution))
    pairs = np.array(sorted(touching), dtype=np.int64).reshape(-1, 2)
    area = np.array([touching[(int(a), int(b))] for a, b in pairs], dtype=np.float64)
    score = None if image is None else _boundary_scores(compact, count, image, pairs[:, 0] * (count + 1) + pairs[:, 1])
    return pairs[:, 0], pairs[:, 1], area, score


def _boundary_scores(compact: np.ndarray, count: int, image: np.ndarray, pair_keys: np.ndarray) -> np.ndarray:
    """Mean of the boundary map (rescaled to [0, 1]) over the voxels on both sides of each pair's faces."""
    boundary = np.asarray(image, dtype=np.float32)
    low, high = float(boundary.min()), float(boundary.max())
    boundary = (boundary - low) / (high - low) if high > low else np.zeros_like(boundary)
    keys, scores = [], []
    for axis in range(3):
        before = [slice(None)] * 3
        after = [slice(None)] * 3
        before[axis] = slice(None, -1)
        after[axis] = slice(1, None)
        a = compact[tuple(before)]
        b = compact[tuple(after)]
        faces = (a != b) & (a != 0) & (b != 0)
        keys.append(np.minimum(a[faces], b[faces]).astype(np.int64) * (count + 1)
                    + np.maximum(a[faces], b[faces]).astype(np.int64))
        scores.append((boundary[tuple(before)][faces] + boundary[tuple(after)][faces]) / 2.0)
    index = np.searchsorted(pair_keys, np.concatenate(keys))  # every face's pair is one of cc3d's
    faces_per_pair = np.bincount(index, minlength=len(pair_keys))
    return np.bincount(index, weights=np.concatenate(scores), minlength=len(pair_keys)) / faces_per_pair
