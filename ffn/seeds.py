"""Seed policies: where the FFN tries to start new segments, as (N, 3) z, y, x arrays.

Each policy is a function `policy(canvas, **args) -> np.ndarray` evaluated when
the canvas starts using it, so policies that look at the current segmentation
(fill-empty-space) see the state left by earlier policies.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import ndimage
from skimage.feature import peak_local_max

from volumes.errors import InputError

GAUSSIAN_SIGMA = 49.0 / 6.0  # Google's adaptive edge threshold
PEAK_MIN_DISTANCE = 3
JITTER_SEED = 42
JITTER_SCALE = 1e-4


def _distance_peaks(distance: np.ndarray) -> np.ndarray:
    """Local maxima of a distance map with Google's fixed-seed tie-breaking jitter, sorted by z, y, x."""
    state = np.random.get_state()
    np.random.seed(JITTER_SEED)
    jittered = distance + np.random.random(distance.shape) * JITTER_SCALE
    np.random.set_state(state)
    peaks = peak_local_max(jittered, min_distance=PEAK_MIN_DISTANCE, threshold_abs=0, threshold_rel=0)
    if len(peaks) == 0:
        return np.zeros((0, 3), dtype=np.int64)
    return np.array(sorted(tuple(int(v) for v in p) for p in peaks), dtype=np.int64)


def policy_peaks(canvas) -> np.ndarray:
    """Google's PolicyPeaks: peaks of the distance to Sobel edges above their blurred local level."""
    edges = ndimage.generic_gradient_magnitude(canvas.image.astype(np.float32), ndimage.sobel)
    threshold = np.zeros(edges.shape, dtype=np.float32)
    ndimage.gaussian_filter(edges, GAUSSIAN_SIGMA, output=threshold, mode="reflect")
    edge_mask = edges > threshold
    del edges, threshold
    if canvas.mask is not None:
        edge_mask[canvas.mask] = True  # masked area counts as edge, avoiding a border effect
    distance = ndimage.distance_transform_edt(1 - edge_mask).astype(np.float32)
    return _distance_peaks(distance)


def policy_fill_empty_space(canvas) -> np.ndarray:
    """Peaks of the distance transform of still-unsegmented space: fills holes left by earlier passes."""
    empty = canvas.segmentation <= 0
    if canvas.mask is not None:
        empty &= ~canvas.mask
    distance = ndimage.distance_transform_edt(empty).astype(np.float32)
    peaks = _distance_peaks(distance)
    return peaks[distance[tuple(peaks.T)] > 0] if len(peaks) else peaks  # jitter alone makes peaks in taken space


def policy_grid(canvas, step: int = 16, offsets: tuple[int, ...] = (0, 8, 4, 12, 2, 10, 14)) -> np.ndarray:
    """Points on a regular 3D grid, visiting shifted copies of the grid in turn (Google's PolicyGrid3d)."""
    coords = []
    shape = canvas.image.shape
    for offset in offsets:
        grid = np.mgrid[offset:shape[0]:step, offset:shape[1]:step, offset:shape[2]:step]
        coords.append(grid.reshape(3, -1).T)
    return np.concatenate(coords).astype(np.int64) if coords else np.zeros((0, 3), dtype=np.int64)


def policy_invert_origins(canvas, origins: list | dict | None = None) -> np.ndarray:
    """The seeds of a previous run, in reverse id order: the second run of an oversegmentation consensus."""
    if not origins:
        raise InputError("PolicyInvertOrigins needs the origins of a previous run")
    items = origins.items() if isinstance(origins, dict) else ((o["id"], o) for o in origins)
    ordered = sorted(((int(k), v) for k, v in items), reverse=True)
    return np.array([v["start_zyx"] for _, v in ordered], dtype=np.int64).reshape(-1, 3)


SEED_POLICIES: dict[str, Callable[..., np.ndarray]] = {
    "PolicyPeaks": policy_peaks,
    "PolicyFillEmptySpace": policy_fill_empty_space,
    "PolicyGrid3d": policy_grid,
    "PolicyInvertOrigins": policy_invert_origins,
}


def get_seed_policy(name: str) -> Callable[..., np.ndarray]:
    if name not in SEED_POLICIES:
        raise InputError(f"unknown seed policy {name!r}; choose one of {', '.join(SEED_POLICIES)}")
    return SEED_POLICIES[name]
