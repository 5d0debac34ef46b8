"""`connectome evaluate` end to end: hand-built files, bad input, and Google's published FIB-25 result."""
from __future__ import annotations

import json
import math

import h5py
import numpy as np
import pytest

from cli.main import main


def write_h5(path, **datasets):
    with h5py.File(path, "w") as handle:
        for name, array in datasets.items():
            handle.create_dataset(name, data=array).attrs["resolution"] = (10.0, 10.0, 10.0)
    return path


def test_evaluate_writes_every_named_metric(tmp_path, capsys):
    gt = np.zeros((4, 12, 40), dtype=np.uint64)
    gt[:, :6, :] = 1
    gt[:, 6:, :] = 2
    seg = gt.copy()
    seg[:, :, 20:] = np.where(seg[:, :, 20:] == 1, 3, seg[:, :, 20:])  # object 1 split in two halves
    write_h5(tmp_path / "v.h5", gt=gt, seg=seg)
    code = main(["evaluate", "--seg", f"{tmp_path}/v.h5:seg", "--gt", f"{tmp_path}/v.h5:gt",
                 "--json", str(tmp_path / "out.json"), "--dust-threshold", "10", "--min-overlap-voxels", "100"])
    assert code == 0
    report = json.loads((tmp_path / "out.json").read_text())
    for key in ("voi_split", "voi_merge", "voi_split_labelled", "voi_merge_labelled", "adapted_rand_error",
                "erl_nm", "nerl", "n_merged_segments", "conventions"):
        assert key in report, key
    # half the voxels (object 1) split evenly: H(seg|gt) = 0.5 ln 2
    assert report["voi_split"] == pytest.approx(0.5 * math.log(2))
    assert report["voi_merge"] == pytest.approx(0.0)
    assert report["n_split_gt_objects"] == 1 and report["n_merged_segments"] == 0
    assert 0.5 < report["nerl"] < 1.0
    assert "nats" in capsys.readouterr().out


def test_evaluate_rejects_mismatched_shapes(tmp_path, capsys):
    write_h5(tmp_path / "v.h5", gt=np.ones((4, 4, 4), np.uint32), seg=np.ones((4, 4, 5), np.uint32))
    code = main(["evaluate", "--seg", f"{tmp_path}/v.h5:seg", "--gt", f"{tmp_path}/v.h5:gt", "--no-erl"])
    assert code == 2
    assert "connectome: error:" in capsys.readouterr().err


def test_google_fib25_result_reproduces_the_published_voi(fib25_h5, google_ffn_dir, tmp_path):
    seg = f"{google_ffn_dir}/results/fib25/sample-training2.npz:segmentation"
    code = main(["evaluate", "--seg", seg, "--gt", f"{fib25_h5}:volumes/labels/neuron_ids", "--no-erl",
                 "--json", str(tmp_path / "r.json")])
    assert code == 0
    report = json.loads((tmp_path / "r.json").read_text())
    # the data README's reference figures: 0.42 / 0.18 nats on labelled voxels, adapted Rand 0.157
    assert report["voi_split_labelled"] == pytest.approx(0.42, abs=0.01)
    assert report["voi_merge_labelled"] == pytest.approx(0.18, abs=0.01)
    assert report["adapted_rand_error"] == pytest.approx(0.157, abs=0.002)
    assert report["labelled_fraction"] == pytest.approx(0.887, abs=0.002)


def test_google_fib25_crop_erl_against_ground_truth_itself(fib25_h5, tmp_path):
    gt = f"{fib25_h5}:volumes/labels/neuron_ids"
    box = "75,75,75,175,175,175"
    assert main(["evaluate", "--seg", gt, "--gt", gt, "--bbox", box, "--json", str(tmp_path / "self.json")]) == 0
    report = json.loads((tmp_path / "self.json").read_text())
    assert report["nerl"] == pytest.approx(1.0)
    assert report["voi_split"] == pytest.approx(0.0, abs=1e-9) and report["n_merged_segments"] == 0
