"""Voxel-wise segmentation metrics against dense ground truth: VOI, adapted Rand error, split/merge counts.

Conventions (stated again in every report `evaluate_segmentation` returns):

- Ground-truth background (id 0) is excluded everywhere: a voxel the ground truth
  does not label cannot be right or wrong.
- VOI, in nats: split = H(seg | gt), merge = H(gt | seg). The plain figures count
  the segmentation's background (id 0) as one segment; the `_labelled` figures use
  only voxels the segmentation labels (the convention of Google's FIB-25 figures).
- Adapted Rand error: 1 - F-score of the Rand pair precision and recall, counting
  pairs of distinct voxels (scikit-image's `adapted_rand_error` with ground-truth id 0
  ignored); segmentation background is one segment, as for VOI.
"""
from __future__ import annotations

from dataclasses import dataclass

import fastremap
import numpy as np

from volumes.errors import InputError

VOI_CONVENTION = ("nats; voi_split = H(seg|gt), voi_merge = H(gt|seg); ground-truth id 0 excluded; "
                  "segmentation id 0 counted as one segment (the _labelled figures drop it)")
RAND_CONVENTION = ("adapted Rand error = 1 - F-score of pair precision/recall over pairs of distinct voxels "
                   "(scikit-image adapted_rand_error, ground-truth id 0 ignored, segmentation id 0 one segment)")
OVERLAP_CONVENTION = ("a ground-truth object is split when two or more labelled segments each hold at least "
                      "min_overlap_voxels of it, merged when a segment holds at least that much of it and of another")


@dataclass
class Contingency:
    """Voxel counts of every (ground-truth id, segment id) pair that occurs; ids are renumbered, 0 kept as 0."""

    gt_ids: np.ndarray
    seg_ids: np.ndarray
    counts: np.ndarray

    def restricted(self, keep: np.ndarray) -> "Contingency":
        return Contingency(self.gt_ids[keep], self.seg_ids[keep], self.counts[keep])


def contingency_table(segmentation: np.ndarray, ground_truth: np.ndarray) -> Contingency:
    """Pair counts over all voxels; ids are renumbered so the pair key fits in int64."""
    if segmentation.shape != ground_truth.shape:
        raise InputError(f"segmentation shape {segmentation.shape} differs from ground-truth shape {ground_truth.shape}")
    seg, _ = fastremap.renumber(np.ascontiguousarray(segmentation), preserve_zero=True, in_place=False)
    gt, _ = fastremap.renumber(np.ascontiguousarray(ground_truth), preserve_zero=True, in_place=False)
    n_seg = int(seg.max()) + 1
    keys = gt.astype(np.int64).ravel() * n_seg + seg.astype(np.int64).ravel()
    unique_keys, counts = fastremap.unique(keys, return_counts=True)
    unique_keys = np.asarray(unique_keys, dtype=np.int64)
    return Contingency(unique_keys // n_seg, unique_keys % n_seg, np.asarray(counts, dtype=np.int64))


def _marginal(ids: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per-pair total of the id's row or column (same length as ids)."""
    _, inverse = np.unique(ids, return_inverse=True)
    return np.bincount(inverse, weights=counts)[inverse]


def variation_of_information(table: Contingency) -> tuple[float, float]:
    """(H(seg|gt), H(gt|seg)) in nats over the voxels in `table`."""
    counts = table.counts.astype(np.float64)
    total = counts.sum()
    if total == 0:
        return 0.0, 0.0
    p = counts / total
    gt_marginal = _marginal(table.gt_ids, counts) / total
    seg_marginal = _marginal(table.seg_ids, counts) / total
    split = float(-(p * np.log(p / gt_marginal)).sum())
    merge = float(-(p * np.log(p / seg_marginal)).sum())
    return max(split, 0.0) + 0.0, max(merge, 0.0) + 0.0  # rounding can leave -0.0 or a tiny negative


def adapted_rand_error(table: Contingency) -> dict:
    """Adapted Rand error with its pair precision and recall (pairs of distinct voxels)."""
    counts = table.counts.astype(np.float64)
    total = counts.sum()
    _, gt_inverse = np.unique(table.gt_ids, return_inverse=True)
    _, seg_inverse = np.unique(table.seg_ids, return_inverse=True)
    gt_sizes = np.bincount(gt_inverse, weights=counts)
    seg_sizes = np.bincount(seg_inverse, weights=counts)
    pairs_together_both = (counts ** 2).sum() - total
    pairs_together_gt = (gt_sizes ** 2).sum() - total
    pairs_together_seg = (seg_sizes ** 2).sum() - total
    precision = pairs_together_both / pairs_together_seg if pairs_together_seg > 0 else 1.0
    recall = pairs_together_both / pairs_together_gt if pairs_together_gt > 0 else 1.0
    f_score = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"adapted_rand_error": float(1.0 - f_score), "rand_precision": float(precision), "rand_recall": float(recall)}


def split_merge_counts(table: Contingency, min_overlap_voxels: int) -> dict:
    """Ground-truth objects split over, or merged into, labelled segments (see OVERLAP_CONVENTION)."""
    keep = (table.seg_ids != 0) & (table.counts >= min_overlap_voxels)
    gt_ids, seg_ids = table.gt_ids[keep], table.seg_ids[keep]
    gt_unique, segments_per_gt = np.unique(gt_ids, return_counts=True)
    seg_unique, gts_per_seg = np.unique(seg_ids, return_counts=True)
    merging_segments = seg_unique[gts_per_seg >= 2]
    merged_gt = np.unique(gt_ids[np.isin(seg_ids, merging_segments)])
    return {
        "n_split_gt_objects": int((segments_per_gt >= 2).sum()),
        "n_merged_gt_objects": int(merged_gt.size),
        "n_merging_segments_by_overlap": int(merging_segments.size),
        "min_overlap_voxels": int(min_overlap_voxels),
    }


def evaluate_segmentation(segmentation: np.ndarray, ground_truth: np.ndarray, mask: np.ndarray | None = None,
                          min_overlap_voxels: int = 1000) -> dict:
    """All voxel-wise metrics as one JSON-ready dict; voxels outside `mask` count as ground-truth background."""
    if mask is not None:
        if mask.shape != ground_truth.shape:
            raise InputError(f"mask shape {mask.shape} differs from ground-truth shape {ground_truth.shape}")
        ground_truth = np.where(mask != 0, ground_truth, 0)
    table = contingency_table(segmentation, ground_truth)
    foreground = table.restricted(table.gt_ids != 0)
    evaluated_voxels = int(foreground.counts.sum())
    if evaluated_voxels == 0:
        raise InputError("the ground truth labels no voxel (inside the mask): nothing to evaluate")
    labelled = foreground.restricted(foreground.seg_ids != 0)
    voi_split, voi_merge = variation_of_information(foreground)
    voi_split_labelled, voi_merge_labelled = variation_of_information(labelled)
    report = {
        "voi_split": voi_split,
        "voi_merge": voi_merge,
        "voi_sum": voi_split + voi_merge,
        "voi_split_labelled": voi_split_labelled,
        "voi_merge_labelled": voi_merge_labelled,
        "voi_sum_labelled": voi_split_labelled + voi_merge_labelled,
        "evaluated_voxels": evaluated_voxels,
        "labelled_fraction": float(labelled.counts.sum() / evaluated_voxels),
        "n_gt_objects": int(np.unique(foreground.gt_ids).size),
        "n_segments": int(np.unique(table.seg_ids[table.seg_ids != 0]).size),
    }
    report.update(adapted_rand_error(foreground))
    report.update(split_merge_counts(foreground, min_overlap_voxels))
    report["conventions"] = {"voi": VOI_CONVENTION, "adapted_rand_error": RAND_CONVENTION, "split_merge_counts": OVERLAP_CONVENTION}
    return report
