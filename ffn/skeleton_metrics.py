"""Skeleton-based expected run length (ERL) in the funlib convention, with kimimaro ground-truth skeletons.

Every ground-truth skeleton edge is scored by the segment ids under its two nodes:

- omitted: an endpoint lies in segmentation background (id 0); the edge earns nothing;
- split: the endpoints lie in different segments;
- merged: the segment touches two or more skeletons; every edge of each skeleton inside
  that segment then scores zero. With `merge_threshold` N, a skeleton touches a segment
  only when more than N of its nodes lie in it (N = 0: any node counts, as in the paper);
- correct: otherwise; correct edges are summed per (skeleton, segment).

ERL = sum over (skeleton, segment) of correct_length^2 / total skeleton length, the expected
error-free run from a random point on the skeletons; NERL = ERL / (sum L^2 / sum L).
Lengths are nanometres, from node positions times the voxel size.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from volumes.errors import InputError

ERL_CONVENTION = ("funlib run_length: edge with an endpoint in segment 0 omitted, endpoints in different segments "
                  "split, a segment touching >= 2 skeletons (more than merge_threshold nodes each) zeroes every edge "
                  "of those skeletons inside it; ERL = sum(correct run^2)/total length, NERL = ERL/(sum L^2/sum L); nm")


@dataclass
class Skeleton:
    """A ground-truth skeleton: node positions in nm (z, y, x) and edges as pairs of node indices."""

    vertices_nm: np.ndarray
    edges: np.ndarray


def skeletonize_labels(labels: np.ndarray, resolution_nm, dust_threshold_voxels: int = 1000,
                       scale: float = 1.5, const_nm: float = 300.0, progress: bool = False) -> dict[int, Skeleton]:
    """TEASAR skeletons of every label (kimimaro); objects under the dust threshold get none."""
    import kimimaro

    resolution_nm = tuple(float(r) for r in resolution_nm)
    skeletons = kimimaro.skeletonize(
        np.ascontiguousarray(labels),
        teasar_params={"scale": scale, "const": const_nm, "pdrf_scale": 100000, "pdrf_exponent": 4,
                       # somata do not fit in the volumes we evaluate; never treat a cell body specially
                       "soma_detection_threshold": 1e12, "soma_acceptance_threshold": 1e12},
        anisotropy=resolution_nm, dust_threshold=dust_threshold_voxels, fix_branching=True,
        fix_borders=True, progress=progress, parallel=1,
    )
    return {int(label): Skeleton(np.asarray(s.vertices, dtype=np.float64), np.asarray(s.edges, dtype=np.int64))
            for label, s in skeletons.items() if len(s.edges)}


def _node_segments(skeletons: list[Skeleton], segmentation: np.ndarray, resolution_nm) -> list[np.ndarray]:
    resolution = np.asarray(resolution_nm, dtype=np.float64)
    limit = np.asarray(segmentation.shape) - 1
    result = []
    for skeleton in skeletons:
        voxels = np.clip(np.rint(skeleton.vertices_nm / resolution).astype(np.int64), 0, limit)
        result.append(segmentation[voxels[:, 0], voxels[:, 1], voxels[:, 2]].astype(np.int64))
    return result


def expected_run_length(skeletons: dict[int, Skeleton], segmentation: np.ndarray, resolution_nm,
                        merge_threshold: int = 0) -> dict:
    """ERL, NERL and edge/merge statistics of `segmentation` against `skeletons` (see module docstring)."""
    if not skeletons:
        raise InputError("no ground-truth skeletons to score (are all objects below the dust threshold?)")
    items = list(skeletons.values())
    node_segments = _node_segments(items, segmentation, resolution_nm)

    # which segments touch which skeletons, by node count above the merge threshold
    touch_skeleton, touch_segment = [], []
    for index, segments in enumerate(node_segments):
        ids, counts = np.unique(segments[segments != 0], return_counts=True)
        touching = ids[counts > merge_threshold]
        touch_skeleton.append(np.full(touching.size, index))
        touch_segment.append(touching)
    touch_segment_all = np.concatenate(touch_segment)
    ids, skeleton_counts = np.unique(touch_segment_all, return_counts=True)
    merging_segments = ids[skeleton_counts >= 2]

    lengths = []
    run_squares = 0.0
    edge_counts = {"correct": 0, "split": 0, "merged": 0, "omitted": 0}
    split_skeletons = merged_skeletons = 0
    for skeleton, segments in zip(items, node_segments):
        u, v = skeleton.edges[:, 0], skeleton.edges[:, 1]
        edge_length = np.linalg.norm(skeleton.vertices_nm[u] - skeleton.vertices_nm[v], axis=1)
        lengths.append(edge_length.sum())
        segment_u, segment_v = segments[u], segments[v]
        omitted = (segment_u == 0) | (segment_v == 0)
        split = ~omitted & (segment_u != segment_v)
        merged = ~omitted & ~split & np.isin(segment_u, merging_segments)
        correct = ~omitted & ~split & ~merged
        for name, selected in (("correct", correct), ("split", split), ("merged", merged), ("omitted", omitted)):
            edge_counts[name] += int(selected.sum())
        split_skeletons += bool(split.any())
        merged_skeletons += bool(merged.any())
        _, inverse = np.unique(segment_u[correct], return_inverse=True)
        run_squares += float((np.bincount(inverse, weights=edge_length[correct]) ** 2).sum())

    lengths = np.asarray(lengths)
    total_length = float(lengths.sum())
    if total_length <= 0:
        raise InputError("the ground-truth skeletons have zero total length")
    erl = run_squares / total_length
    max_erl = float((lengths ** 2).sum() / total_length)
    return {
        "erl_nm": erl,
        "nerl": erl / max_erl,
        "max_erl_nm": max_erl,
        "skeleton_length_nm": total_length,
        "n_skeletons": len(items),
        "n_merged_segments": int(merging_segments.size),
        "n_split_skeletons": int(split_skeletons),
        "n_merged_skeletons": int(merged_skeletons),
        "edges": edge_counts,
        "merge_threshold_nodes": int(merge_threshold),
        "resolution_nm": [float(r) for r in resolution_nm],
    }
