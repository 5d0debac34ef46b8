"""Training data preparation as in google/ffn: partitions by local object size, class-balanced centres.

A voxel's partition says how much of the box of radius `lom_radius` around it
belongs to its own object (Google's `compute_partitions`): the fraction is
quantised at PARTITION_THRESHOLDS into classes 1..13; 0 is background and
EXCLUDED (255) marks voxels that cannot be a training centre (too near the
border, outside the mask, or inside `excluded_boxes`; the trainer grows a held-out
block by the patch radius so that no training patch reaches it).
Sampling a class uniformly, then a voxel of that class, equals Google's
oversampling of every class to the size of the largest (`build_coordinates`).
"""
from __future__ import annotations

from typing import Sequence

import fastremap
import numpy as np
from scipy import ndimage

from volumes.errors import InputError
from volumes.geometry import Box

PARTITION_THRESHOLDS = (0.025, 0.05, 0.075, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
EXCLUDED = 255


def remove_dust(labels: np.ndarray, min_object_voxels: int) -> np.ndarray:
    """Labels with objects of fewer than `min_object_voxels` voxels set to background."""
    if min_object_voxels <= 1:
        return labels
    ids, counts = fastremap.unique(labels, return_counts=True)
    small = [int(i) for i, c in zip(ids, counts) if c < min_object_voxels and i != 0]
    return fastremap.mask(labels, small) if small else labels


def compute_partitions(labels: np.ndarray, lom_radius: Sequence[int], min_object_voxels: int = 10000,
                       thresholds: Sequence[float] = PARTITION_THRESHOLDS, mask: np.ndarray | None = None,
                       excluded_boxes: Sequence[Box] = ()) -> np.ndarray:
    """Partition class (uint8) of every voxel; see the module docstring for the values."""
    radius = np.asarray(lom_radius, dtype=np.int64)
    shape = np.asarray(labels.shape)
    if radius.shape != (3,) or (radius < 0).any():
        raise InputError(f"lom_radius must be three non-negative sizes z,y,x, got {tuple(lom_radius)}")
    if (2 * radius + 1 > shape).any():
        raise InputError(f"partition radius {tuple(int(r) for r in radius)} is larger than the label volume "
                         f"{tuple(int(s) for s in shape)} allows (2*radius+1 must fit)")
    if mask is not None and mask.shape != labels.shape:
        raise InputError(f"mask shape {mask.shape} differs from the label shape {labels.shape}")
    labels = remove_dust(np.asarray(labels), min_object_voxels)
    valid = np.zeros(labels.shape, dtype=bool)
    valid[tuple(slice(int(r), int(s - r)) for r, s in zip(radius, shape))] = True
    if mask is not None:
        valid &= mask != 0
    for box in excluded_boxes:
        valid[box.intersect(Box.from_shape(labels.shape)).slices()] = False
    if not (valid & (labels != 0)).any():
        raise InputError("no labelled voxel (after dust removal) lies inside the mask and away from the border: nothing to train on")

    fraction = np.zeros(labels.shape, dtype=np.float32)
    renumbered, _ = fastremap.renumber(labels, preserve_zero=True, in_place=False)
    window = tuple(int(2 * r + 1) for r in radius)
    for index, object_slices in enumerate(ndimage.find_objects(renumbered), start=1):
        if object_slices is None:
            continue
        crop = tuple(slice(max(0, s.start - int(r)), min(int(n), s.stop + int(r)))
                     for s, r, n in zip(object_slices, radius, shape))
        inside = renumbered[crop] == index
        local = ndimage.uniform_filter(inside.astype(np.float32), size=window, mode="constant")
        fraction[crop][inside] = local[inside]

    partitions = np.zeros(labels.shape, dtype=np.uint8)
    foreground = labels != 0
    partitions[foreground] = np.digitize(fraction[foreground], thresholds) + 1
    partitions[~valid] = EXCLUDED
    return partitions


class TrainingCentres:
    """Draws training centres with every partition class equally likely (Google's balanced coordinates)."""

    def __init__(self, partitions: np.ndarray, rng: np.random.Generator):
        flat = partitions.ravel()
        order = np.argsort(flat, kind="stable")
        sorted_classes = flat[order]
        classes, starts, counts = np.unique(sorted_classes, return_index=True, return_counts=True)
        keep = classes != EXCLUDED
        if not keep.any():
            raise InputError("every voxel is excluded from training (border, mask or held-out box)")
        self.shape = partitions.shape
        self.order = order.astype(np.int64)
        self.classes = classes[keep]
        self.starts = starts[keep]
        self.counts = counts[keep]
        self.rng = rng

    def class_sizes(self) -> dict[int, int]:
        return {int(c): int(n) for c, n in zip(self.classes, self.counts)}

    def sample(self) -> tuple[int, int, int]:
        which = self.rng.integers(len(self.classes))
        flat_index = self.order[self.starts[which] + self.rng.integers(self.counts[which])]
        return tuple(int(v) for v in np.unravel_index(flat_index, self.shape))
