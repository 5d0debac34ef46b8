"""Parity with Google's own FFN code: the FIB-25 checkpoint imported by us, run by our inference in fp32.

Google's run on the 100^3 crop at (75, 75, 75) of fib25_training2 (treated as
a whole volume, settings from inference_training_sample2.pbtxt) made 23
segments in 726 FFN steps; ours must make the same segments with the same ids,
seeds and step counts, each with IoU >= 0.99. About 726 forward passes: a few
minutes on 2 free cores.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cli.main import main

CROP_START = (75, 75, 75)
CROP_SIZE = 100


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_crop_segmentation_matches_googles_run(workspace, google_ffn_dir, fib25_h5, tmp_path):
    torch.set_num_threads(2)
    config = google_ffn_dir / "configs/inference_training_sample2.pbtxt"
    model = tmp_path / "fib25.pt"
    assert main(["ffn", "import-tf", str(google_ffn_dir / "models/fib25/model.ckpt-27465036"),
                 "--config", str(config), "--out", str(model)]) == 0
    bbox = ",".join(str(v) for v in CROP_START + tuple(s + CROP_SIZE for s in CROP_START))
    assert main(["ffn", "segment", "--workspace", str(workspace.root), "--image", f"{fib25_h5}:volumes/raw",
                 "--model", str(model), "--out", "ffn_crop", "--options", str(config), "--bbox", bbox,
                 "--threads", "2", "--no-progress"]) == 0

    from volumes.io import open_volume

    ours = open_volume(workspace.layer_url("ffn_crop")).read()
    ours_origins = json.loads((workspace.root / "ffn-runs/ffn_crop/origins.json").read_text())
    reference = np.load(google_ffn_dir / "reference-runs/crop100-z75y75x75-segmentation.npz")["segmentation"]
    reference_origins = json.loads((google_ffn_dir / "reference-runs/crop100-z75y75x75-origins.json").read_text())

    assert ours.shape == reference.shape == (CROP_SIZE,) * 3
    assert len(reference_origins) == 23
    by_id = {o["id"]: o for o in ours_origins["segments"]}
    assert sorted(by_id) == sorted(o["id"] for o in reference_origins)
    for expected in reference_origins:
        got = by_id[expected["id"]]
        assert got["start_zyx"] == expected["start_zyx_local"], expected["id"]
        assert got["iters"] == expected["iters"], expected["id"]
        a, b = ours == expected["id"], reference == expected["id"]
        iou = (a & b).sum() / (a | b).sum()
        assert iou >= 0.99, f"segment {expected['id']}: IoU {iou:.4f}"
    assert set(np.unique(ours)) == set(np.unique(reference))
