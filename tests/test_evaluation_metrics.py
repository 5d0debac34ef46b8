"""Segmentation metrics on hand-built volumes whose VOI, Rand error and ERL are worked out by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from ffn.evaluation import evaluate_segmentation
from ffn.skeleton_metrics import Skeleton, expected_run_length, skeletonize_labels
from volumes.errors import InputError


def row(*values) -> np.ndarray:
    """A 1 x 1 x N volume."""
    return np.asarray(values, dtype=np.uint64).reshape(1, 1, -1)


def test_one_segment_over_two_objects_is_a_pure_merge():
    report = evaluate_segmentation(row(1, 1, 1, 1), row(1, 1, 2, 2), min_overlap_voxels=1)
    assert report["voi_split"] == pytest.approx(0.0)
    assert report["voi_merge"] == pytest.approx(math.log(2))
    # distinct-voxel pairs: together in both 2+2=4, in gt 4, in seg 12 -> precision 1/3, recall 1, F 1/2
    assert report["rand_precision"] == pytest.approx(1 / 3)
    assert report["rand_recall"] == pytest.approx(1.0)
    assert report["adapted_rand_error"] == pytest.approx(0.5)
    assert report["n_merged_gt_objects"] == 2 and report["n_split_gt_objects"] == 0


def test_every_voxel_its_own_segment_is_a_pure_split():
    report = evaluate_segmentation(row(1, 2, 3, 4), row(1, 1, 2, 2), min_overlap_voxels=1)
    assert report["voi_split"] == pytest.approx(math.log(2))
    assert report["voi_merge"] == pytest.approx(0.0)
    # no pair of voxels shares a segment: recall 0 (precision taken as 1) -> F 0, error 1
    assert report["adapted_rand_error"] == pytest.approx(1.0)
    assert report["n_split_gt_objects"] == 2 and report["n_merged_gt_objects"] == 0


def test_unequal_split_entropy():
    # one object of 4 voxels split 3:1 -> H(seg|gt) = -(3/4 ln 3/4 + 1/4 ln 1/4)
    report = evaluate_segmentation(row(7, 7, 7, 9), row(5, 5, 5, 5))
    assert report["voi_split"] == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert report["voi_merge"] == pytest.approx(0.0)


def test_segmentation_background_is_one_segment_and_labelled_figures_drop_it():
    report = evaluate_segmentation(row(1, 1, 0, 0), row(1, 1, 1, 1))
    assert report["voi_split"] == pytest.approx(math.log(2))
    assert report["voi_split_labelled"] == pytest.approx(0.0)
    assert report["labelled_fraction"] == pytest.approx(0.5)


def test_ground_truth_background_and_mask_are_excluded():
    report = evaluate_segmentation(row(5, 6, 7, 7), row(0, 0, 1, 1))
    assert report["voi_split"] == pytest.approx(0.0) and report["voi_merge"] == pytest.approx(0.0)
    assert report["evaluated_voxels"] == 2
    masked = evaluate_segmentation(row(5, 6, 7, 7), row(1, 1, 1, 1), mask=row(0, 0, 1, 1))
    assert masked["voi_split"] == pytest.approx(0.0) and masked["evaluated_voxels"] == 2


def test_bad_input_is_a_clear_error():
    with pytest.raises(InputError, match="shape"):
        evaluate_segmentation(row(1, 1), row(1, 1, 1))
    with pytest.raises(InputError, match="labels no voxel"):
        evaluate_segmentation(row(1, 1), row(0, 0))


# ERL: two straight skeletons of 5 nodes (4 edges of 10 nm), A on row y=0 and B on row y=2.
RESOLUTION = (10.0, 10.0, 10.0)


def line_skeleton(y: int, resolution=RESOLUTION) -> Skeleton:
    voxels = np.array([(0, y, x) for x in range(5)], dtype=np.float64)
    return Skeleton(voxels * np.asarray(resolution), np.array([(i, i + 1) for i in range(4)]))


def segmentation_for(a_nodes, b_nodes) -> np.ndarray:
    seg = np.zeros((1, 3, 5), dtype=np.uint64)
    seg[0, 0] = a_nodes
    seg[0, 2] = b_nodes
    return seg


SKELETONS = {1: line_skeleton(0), 2: line_skeleton(2)}


def test_erl_perfect_segmentation_is_the_maximum():
    result = expected_run_length(SKELETONS, segmentation_for([1] * 5, [2] * 5), RESOLUTION)
    assert result["erl_nm"] == pytest.approx((40 ** 2 + 40 ** 2) / 80)
    assert result["nerl"] == pytest.approx(1.0)
    assert result["n_merged_segments"] == 0


def test_erl_split_edge_breaks_the_run():
    result = expected_run_length(SKELETONS, segmentation_for([1, 1, 1, 3, 3], [2] * 5), RESOLUTION)
    assert result["erl_nm"] == pytest.approx((20 ** 2 + 10 ** 2 + 40 ** 2) / 80)
    assert result["edges"]["split"] == 1 and result["n_split_skeletons"] == 1


def test_erl_omits_edges_into_background():
    # edges 1-2 and 2-3 touch background; the two 10 nm pieces in segment 1 add up (funlib groups by segment)
    result = expected_run_length(SKELETONS, segmentation_for([1, 1, 0, 1, 1], [2] * 5), RESOLUTION)
    assert result["erl_nm"] == pytest.approx((20 ** 2 + 40 ** 2) / 80)
    assert result["edges"]["omitted"] == 2


def test_erl_merger_zeroes_the_skeleton_and_merge_threshold_ignores_a_touch():
    seg = segmentation_for([1] * 5, [2, 2, 2, 2, 1])  # B's last node falls into A's segment
    merged = expected_run_length(SKELETONS, seg, RESOLUTION)
    # segment 1 touches both skeletons: all of A (40 nm) scores 0; B keeps 30 nm in segment 2, one split edge
    assert merged["erl_nm"] == pytest.approx(30 ** 2 / 80)
    assert merged["n_merged_segments"] == 1 and merged["n_merged_skeletons"] == 1
    tolerant = expected_run_length(SKELETONS, seg, RESOLUTION, merge_threshold=1)
    assert tolerant["erl_nm"] == pytest.approx((40 ** 2 + 30 ** 2) / 80)
    assert tolerant["n_merged_segments"] == 0


def test_erl_honours_the_voxel_size():
    resolution = (40.0, 4.0, 4.0)
    skeletons = {1: line_skeleton(0, resolution), 2: line_skeleton(2, resolution)}
    result = expected_run_length(skeletons, segmentation_for([1, 1, 1, 3, 3], [2] * 5), resolution)
    assert result["erl_nm"] == pytest.approx((8 ** 2 + 4 ** 2 + 16 ** 2) / 32)


def test_kimimaro_skeleton_of_a_rod_spans_it_and_scores_perfectly():
    labels = np.zeros((9, 9, 64), dtype=np.uint32)
    labels[2:7, 2:7, 2:62] = 4
    skeletons = skeletonize_labels(labels, RESOLUTION, dust_threshold_voxels=10)
    assert list(skeletons) == [4]
    result = expected_run_length(skeletons, labels, RESOLUTION)
    assert 500 < result["skeleton_length_nm"] < 620  # the rod is 600 nm long
    assert result["nerl"] == pytest.approx(1.0)
    cut = labels.copy()
    cut[:, :, 32:] = np.where(cut[:, :, 32:] != 0, 5, 0)
    halves = expected_run_length(skeletons, cut, RESOLUTION)
    assert halves["nerl"] == pytest.approx(0.5, abs=0.05)


def test_kimimaro_skeleton_length_follows_an_anisotropic_voxel_size():
    labels = np.zeros((40, 9, 9), dtype=np.uint32)
    labels[2:38, 2:7, 2:7] = 1  # 36 sections of 40 nm along z
    resolution = (40.0, 4.0, 4.0)
    result = expected_run_length(skeletonize_labels(labels, resolution, dust_threshold_voxels=10), labels, resolution)
    assert 1300 < result["skeleton_length_nm"] < 1450
    assert result["nerl"] == pytest.approx(1.0)
