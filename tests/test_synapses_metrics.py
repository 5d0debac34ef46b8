"""Site and partner scores on hand-built cases, and partner assignment on hand-built segmentations."""
from __future__ import annotations

import numpy as np
import pytest

from synapses.detection import Site, assign_partners
from synapses.evaluation import partner_scores, site_scores
from volumes.io import ArrayVolume


def test_site_matching_is_one_to_one_within_the_distance():
    truth = [(0, 0, 0), (0, 0, 1000)]
    predicted = [(0, 0, 50), (0, 0, -60), (0, 0, 1300), (5000, 0, 0)]
    scores = site_scores(predicted, truth, distances_nm=(200, 400))
    # Two predictions near the first site: only one can match it; 1300 is 300 nm from the second.
    assert scores["precision_200nm"] == pytest.approx(1 / 4)
    assert scores["recall_200nm"] == pytest.approx(1 / 2)
    assert scores["f1_200nm"] == pytest.approx(2 * 0.25 * 0.5 / 0.75)
    assert scores["precision_400nm"] == pytest.approx(2 / 4)
    assert scores["recall_400nm"] == pytest.approx(1.0)


def test_hungarian_prefers_more_matches_over_nearest_pairs():
    # Greedy nearest would pair p0 with t1 (distance 10) and leave t0 unmatched.
    truth = [(0, 0, 0), (0, 0, 150)]
    predicted = [(0, 0, 140), (0, 0, 300)]
    scores = site_scores(predicted, truth, distances_nm=(160,))
    assert scores["recall_160nm"] == 1.0 and scores["precision_160nm"] == 1.0


def test_empty_cases():
    assert site_scores([], [(0, 0, 0)])["recall_200nm"] == 0.0
    assert site_scores([], [(0, 0, 0)])["f1_200nm"] == 0.0
    assert site_scores([(0, 0, 0)], [])["precision_200nm"] == 0.0
    assert site_scores([], [])["f1_200nm"] == 1.0


def test_partner_score_needs_ids_direction_and_distance():
    true_pre, true_post = np.array([[0, 0, 0], [0, 0, 2000]]), np.array([[0, 0, 80], [0, 0, 2080]])
    true_ids = np.array([[1, 2], [3, 4]])
    # One right, one with the direction reversed, one with right ids but 500 nm away.
    pre = np.array([[0, 0, 10], [0, 0, 2080], [500, 0, 0]])
    post = np.array([[0, 0, 90], [0, 0, 2000], [500, 0, 80]])
    ids = np.array([[1, 2], [4, 3], [1, 2]])
    directed = partner_scores(pre, post, ids, true_pre, true_post, true_ids)
    assert directed["partner_precision"] == pytest.approx(1 / 3)
    assert directed["partner_recall"] == pytest.approx(1 / 2)
    unordered = partner_scores(pre, post, ids, true_pre, true_post, true_ids, directed=False)
    assert unordered["partner_unordered_recall"] == pytest.approx(1.0)
    assert unordered["partner_unordered_precision"] == pytest.approx(2 / 3)


def two_segment_volume() -> ArrayVolume:
    labels = np.zeros((16, 32, 32), dtype=np.uint64)
    labels[:, :, :16] = 5
    labels[:, :, 16:] = 7
    labels[:, :, 15:17] = 0  # an unlabelled membrane, as in FFN output
    labels[:, 24:, :] = 9
    return ArrayVolume("labels", labels, resolution_nm=(10, 10, 10))


def site_at(position_nm) -> Site:
    return Site(np.asarray(position_nm, dtype=float), size=10, score=0.9)


def test_partners_are_ordered_by_polarity():
    volume = two_segment_volume()
    high_x_is_pre = lambda points_nm: (points_nm[:, 2] > 160).astype(float)  # noqa: E731
    low_x_is_pre = lambda points_nm: (points_nm[:, 2] < 160).astype(float)  # noqa: E731
    (first,), dropped = assign_partners([site_at((80, 80, 160))], volume, high_x_is_pre)
    (second,), _ = assign_partners([site_at((80, 80, 160))], volume, low_x_is_pre)
    assert [(s.pre_segment, s.post_segment, s.directed) for s in (first, second)] == [(7, 5, True), (5, 7, True)]
    assert first.pre_position_nm[2] > 160 > first.post_position_nm[2]
    assert dropped == {"background": 0, "autapse": 0}


def test_without_direction_the_pair_with_most_contact_is_unordered():
    volume = two_segment_volume()
    (site,), _ = assign_partners([site_at((80, 80, 160))], volume)
    assert {site.pre_segment, site.post_segment} == {5, 7} and not site.directed


def test_autapses_and_background_are_dropped():
    labels = np.zeros((16, 32, 32), dtype=np.uint64)
    labels[:, :, :8] = 3
    volume = ArrayVolume("labels", labels, resolution_nm=(10, 10, 10))
    sites, dropped = assign_partners([site_at((80, 160, 40)), site_at((80, 160, 300))], volume)
    assert sites == []
    assert dropped == {"background": 1, "autapse": 1}
