"""Scores against ground truth: site precision/recall/F1 and the CREMI synaptic-partner F-score.

Both use one-to-one (Hungarian) matching. A site matches a true site within a distance
(200 and 400 nm reported). A predicted partner pair matches a true pair when the
segment ids agree (pre with pre, post with post) and both its pre and post points lie
within 400 nm of the true ones; the cost is the mean of the two distances (CREMI rules).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from volumes.geometry import Box

SITE_DISTANCES_NM = (200, 400)
PARTNER_DISTANCE_NM = 400.0


def count_matches(cost: np.ndarray, feasible: np.ndarray) -> int:
    """Largest one-to-one matching among feasible pairs, cheapest among those of that size."""
    if cost.size == 0 or not feasible.any():
        return 0
    penalty = float(cost[feasible].max(initial=0.0)) * (min(cost.shape) + 1) + 1.0
    rows, cols = linear_sum_assignment(np.where(feasible, cost, penalty))
    return int(feasible[rows, cols].sum())


def precision_recall_f1(matches: int, predicted: int, true: int) -> dict[str, float]:
    """Empty prediction on empty truth is perfect; otherwise a missing side scores 0."""
    precision = matches / predicted if predicted else float(true == 0)
    recall = matches / true if true else float(predicted == 0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def site_scores(predicted_nm: np.ndarray, true_nm: np.ndarray, distances_nm: Sequence[float] = SITE_DISTANCES_NM) -> dict[str, float]:
    """precision_200nm, recall_200nm, f1_200nm (and for each other distance) of site positions."""
    predicted_nm = np.asarray(predicted_nm, dtype=float).reshape(-1, 3)
    true_nm = np.asarray(true_nm, dtype=float).reshape(-1, 3)
    cost = cdist(predicted_nm, true_nm) if len(predicted_nm) and len(true_nm) else np.zeros((len(predicted_nm), len(true_nm)))
    scores: dict[str, float] = {}
    for distance in distances_nm:
        result = precision_recall_f1(count_matches(cost, cost <= distance), len(predicted_nm), len(true_nm))
        for key, value in result.items():
            scores[f"{key}_{int(distance)}nm"] = value
    scores.update({"predicted_sites": len(predicted_nm), "true_sites": len(true_nm)})
    return scores


def partner_scores(
    predicted_pre_nm: np.ndarray, predicted_post_nm: np.ndarray, predicted_ids: np.ndarray,
    true_pre_nm: np.ndarray, true_post_nm: np.ndarray, true_ids: np.ndarray,
    max_distance_nm: float = PARTNER_DISTANCE_NM, directed: bool = True,
) -> dict[str, float]:
    """CREMI synaptic-partner precision/recall/F-score; `directed=False` compares the id pairs unordered."""
    predicted_ids = np.asarray(predicted_ids, dtype=np.uint64).reshape(-1, 2)
    true_ids = np.asarray(true_ids, dtype=np.uint64).reshape(-1, 2)
    if len(predicted_ids) and len(true_ids):
        pre_distance = cdist(np.reshape(predicted_pre_nm, (-1, 3)), np.reshape(true_pre_nm, (-1, 3)))
        post_distance = cdist(np.reshape(predicted_post_nm, (-1, 3)), np.reshape(true_post_nm, (-1, 3)))
        if directed:
            same = (predicted_ids[:, None, 0] == true_ids[None, :, 0]) & (predicted_ids[:, None, 1] == true_ids[None, :, 1])
        else:
            predicted_sorted, true_sorted = np.sort(predicted_ids, axis=1), np.sort(true_ids, axis=1)
            same = np.all(predicted_sorted[:, None, :] == true_sorted[None, :, :], axis=2)
            # Unordered pairs have no sides: use the smaller of the two ways of pairing the points.
            swapped = (cdist(np.reshape(predicted_pre_nm, (-1, 3)), np.reshape(true_post_nm, (-1, 3)))
                       + cdist(np.reshape(predicted_post_nm, (-1, 3)), np.reshape(true_pre_nm, (-1, 3))))
            use_swapped = swapped < pre_distance + post_distance
            pre_distance, post_distance = (np.where(use_swapped, cdist(np.reshape(predicted_pre_nm, (-1, 3)), np.reshape(true_post_nm, (-1, 3))), pre_distance),
                                           np.where(use_swapped, cdist(np.reshape(predicted_post_nm, (-1, 3)), np.reshape(true_pre_nm, (-1, 3))), post_distance))
        feasible = same & (pre_distance <= max_distance_nm) & (post_distance <= max_distance_nm)
        matches = count_matches((pre_distance + post_distance) / 2.0, feasible)
    else:
        matches = 0
    result = precision_recall_f1(matches, len(predicted_ids), len(true_ids))
    prefix = "partner" if directed else "partner_unordered"
    return {f"{prefix}_{key}": value for key, value in result.items()}


def evaluate_model(model_path: str, image_spec: str, synapses_spec: str, resolution_nm: Sequence[float] | None,
                   sections: str | None, segmentation_spec: str | None = None, device: str = "cpu",
                   threshold: float | None = None, min_size_voxels: int | None = None, progress: bool = False) -> dict:
    """Detect on the sections and score against the ground truth; returns the JSON-ready report."""
    from synapses.data import Region, load_ground_truth, open_image, parse_sections, working_scale
    from synapses.detection import detect
    from synapses.model import load_model
    from volumes.io import open_volume

    model = load_model(model_path, device)
    image = open_image(image_spec, resolution_nm)
    z_range = parse_sections(sections, image.shape[0])
    region = Region(image, z_range, working_scale(image.resolution_nm, model.resolution_nm))
    truth = load_ground_truth(synapses_spec, region, resolution_nm)
    segmentation = open_volume(segmentation_spec, resolution_nm=resolution_nm or image.resolution_nm) if segmentation_spec else None
    result = detect(model, image, segmentation, z_range, device=device, threshold=threshold,
                    min_size_voxels=min_size_voxels, progress=progress)
    report: dict = {
        "model": str(model_path), "image": str(image_spec), "synapses": str(synapses_spec),
        "sections": list(z_range), "model_resolution_nm": list(model.resolution_nm),
        "threshold": model.threshold if threshold is None else threshold, "min_size_voxels": model.min_size_voxels if min_size_voxels is None else min_size_voxels,
    }
    report.update(site_scores(np.array([s.position_nm for s in result.all_sites]).reshape(-1, 3), truth.sites_nm))
    if segmentation is not None and truth.pre_nm is not None:
        true_ids = truth.partner_ids if truth.partner_ids is not None else _ids_at(segmentation, truth.pre_nm, truth.post_nm)
        sites = result.sites
        predicted = (np.array([s.pre_position_nm for s in sites]).reshape(-1, 3), np.array([s.post_position_nm for s in sites]).reshape(-1, 3),
                     np.array([(s.pre_segment, s.post_segment) for s in sites], dtype=np.uint64).reshape(-1, 2))
        for directed in (True, False):
            report.update(partner_scores(*predicted, truth.pre_nm, truth.post_nm, true_ids, directed=directed))
        report["partner_sites_dropped"] = result.dropped
        report["directed_sites"] = sum(s.directed for s in sites)
    return report


def _ids_at(segmentation, pre_nm: np.ndarray, post_nm: np.ndarray) -> np.ndarray:
    """Segment ids under the true pre and post points."""
    from volumes.geometry import nm_to_voxel

    ids = np.zeros((len(pre_nm), 2), dtype=np.uint64)
    for k, points in enumerate(zip(pre_nm, post_nm)):
        for side, point in enumerate(points):
            voxel = nm_to_voxel(point, segmentation.resolution_nm, segmentation.offset_nm)
            if np.all(voxel >= 0) and np.all(voxel < segmentation.shape):
                ids[k, side] = segmentation.read(Box.from_shape((1, 1, 1), voxel))[0, 0, 0]
    return ids
