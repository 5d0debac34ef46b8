"""Distributed FFN inference: overlapping subvolumes on a Dask cluster, stitched into one segmentation."""
from __future__ import annotations

import sys

import cc3d
import cloudpickle
import numpy as np
import pytest
from scipy.ndimage import binary_dilation

from ffn.distributed import FFNSegmenter, plan_tasks, segment_distributed, stitch
from volumes.errors import InputError
from volumes.geometry import Box

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def balls(shape, count, radius, seed) -> np.ndarray:
    """Non-touching solid balls labelled 1..n, as a stand-in image whose true segmentation is known."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.uint64)
    grid = np.indices(shape).transpose(1, 2, 3, 0)
    placed = 0
    for _ in range(count * 20):
        centre = rng.integers(radius, np.array(shape) - radius)
        ball = ((grid - centre) ** 2).sum(-1) <= radius ** 2
        if labels[binary_dilation(ball, iterations=2)].any():
            continue
        placed += 1
        labels[ball] = placed
        if placed == count:
            break
    return labels


def connected_components(image: np.ndarray) -> np.ndarray:
    """A deterministic per-task segmenter: 6-connected components of the foreground."""
    return cc3d.connected_components(image > 0, connectivity=6).astype(np.uint64)


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True when a and b label the same voxel sets (ids may differ)."""
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))


def test_plan_tiles_the_volume_exactly():
    box = Box((0, 0, 0), (50, 70, 90))
    tasks = plan_tasks(box, (32, 32, 32), (8, 8, 8))
    covered = np.zeros(box.shape, np.int32)
    for task in tasks:
        covered[task.write.slices()] += 1
        assert task.read.contains(task.write) and box.contains(task.read)
    assert (covered == 1).all()
    with pytest.raises(InputError):
        plan_tasks(box, (0, 32, 32), (8, 8, 8))


def test_stitching_reproduces_the_whole_volume_segmentation():
    truth = balls((48, 64, 64), 30, 6, seed=1)
    box = Box.from_shape(truth.shape)
    tasks = plan_tasks(box, (24, 24, 24), (8, 8, 8))
    results = [connected_components(truth[t.read.slices()]) for t in tasks]
    stitched = stitch(tasks, results, box)
    assert stitched.dtype == np.uint64
    assert len(np.unique(stitched)) - 1 == int(truth.max())
    assert same_partition(stitched, truth)
    # without overlap there is nothing to join on: balls cut by task borders stay split
    bare_tasks = plan_tasks(box, (24, 24, 24), (0, 0, 0))
    bare = stitch(bare_tasks, [connected_components(truth[t.read.slices()]) for t in bare_tasks], box)
    assert len(np.unique(bare)) - 1 > int(truth.max())


@pytest.mark.slow
def test_dask_run_matches_and_resumes(tmp_path):
    truth = balls((40, 48, 48), 20, 5, seed=2)
    np.save(tmp_path / "image.npy", (truth > 0).astype(np.uint8) * 200)
    box = Box.from_shape(truth.shape)
    result = segment_distributed(str(tmp_path / "image.npy"), box, connected_components, tmp_path / "tasks",
                                 (20, 24, 24), (6, 6, 6), n_workers=2, progress=False)
    assert same_partition(result, truth)
    # a second run finds every task finished and recomputes nothing
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "tasks").glob("task-*.npy")}
    again = segment_distributed(str(tmp_path / "image.npy"), box, connected_components, tmp_path / "tasks",
                                (20, 24, 24), (6, 6, 6), n_workers=2, progress=False)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    np.testing.assert_array_equal(again, result)


def test_ffn_segmenter_runs_a_model_on_a_subvolume(tmp_path):
    from ffn.model import FFNConfig, build_model, save_model

    config = FFNConfig(depth=1, features=4, fov_size=(9, 9, 9), deltas=(2, 2, 2))
    save_model(tmp_path / "tiny.pt", build_model(config), config)
    image = np.random.default_rng(0).integers(0, 255, (20, 20, 20), dtype=np.uint8)
    segmenter = FFNSegmenter(tmp_path / "tiny.pt", {"min_segment_size": 10, "seed_policy": "PolicyGrid3d"})
    labels = cloudpickle.loads(cloudpickle.dumps(segmenter))(image)
    assert labels.shape == image.shape and labels.dtype == np.uint64


@pytest.mark.slow
def test_cli_segments_subvolumes_on_dask_into_a_layer(tmp_path, workspace):
    from cloudvolume import CloudVolume

    from cli.main import main
    from ffn.model import FFNConfig, build_model, save_model

    config = FFNConfig(depth=1, features=4, fov_size=(9, 9, 9), deltas=(2, 2, 2))
    save_model(tmp_path / "tiny.pt", build_model(config), config)
    np.save(tmp_path / "image.npy", np.random.default_rng(1).integers(0, 255, (24, 28, 28), dtype=np.uint8))
    code = main(["ffn", "segment", "-w", str(workspace.root), "--image", str(tmp_path / "image.npy"), "--model",
                 str(tmp_path / "tiny.pt"), "--out", "seg", "--subvolume-size", "12,14,14", "--overlap", "4,4,4",
                 "--workers", "1", "--no-progress"])
    assert code == 0
    cv = CloudVolume("file://" + str(workspace.layer_path("seg")))
    assert cv.layer_type == "segmentation" and tuple(cv.volume_size) == (28, 28, 24)
    assert len(list((workspace.root / "ffn-runs" / "seg" / "tasks").glob("task-*.npy"))) == 8
    assert main(["ffn", "segment", "-w", str(workspace.root), "--image", str(tmp_path / "image.npy"), "--model",
                 str(tmp_path / "tiny.pt"), "--out", "seg2", "--subvolume-size", "0,14,14"]) == 2
