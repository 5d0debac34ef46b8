"""Oversegmentation consensus of two FFN runs (Google's consensus.py / split_segmentation_by_intersection).

Every (id_a, id_b) pair of overlapping non-zero labels becomes its own segment,
so a merge made by only one run is split; pieces under `min_size` voxels are
dropped. The usual pair is a PolicyPeaks run and a PolicyInvertOrigins run.
"""
from __future__ import annotations

import numpy as np

from volumes.errors import InputError


def split_by_intersection(a: np.ndarray, b: np.ndarray, min_size: int = 0) -> np.ndarray:
    """uint64 labels of the non-zero intersections of `a` and `b`, numbered from 1 in order of first voxel."""
    if a.shape != b.shape:
        raise InputError(f"consensus needs two segmentations of one shape, got {a.shape} and {b.shape}")
    both = (a != 0) & (b != 0)
    pairs = np.stack([a[both].astype(np.uint64), b[both].astype(np.uint64)], axis=1)
    out = np.zeros(a.shape, dtype=np.uint64)
    if len(pairs) == 0:
        return out
    unique, first, inverse, counts = np.unique(pairs, axis=0, return_index=True, return_inverse=True, return_counts=True)
    keep = counts >= max(int(min_size), 1)
    order = np.argsort(first[keep], kind="stable")  # ids follow the first voxel of each piece, deterministic
    new_ids = np.zeros(len(unique), dtype=np.uint64)
    new_ids[np.flatnonzero(keep)[order]] = np.arange(1, int(keep.sum()) + 1, dtype=np.uint64)
    out[both] = new_ids[inverse.reshape(-1)]
    return out


def oversegmentation_consensus(first_run: np.ndarray, second_run: np.ndarray, split_min_size: int = 1000) -> np.ndarray:
    """Google's default consensus: split by intersection, dropping pieces under `split_min_size` (1000)."""
    return split_by_intersection(first_run, second_run, split_min_size)
