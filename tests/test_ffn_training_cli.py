"""`connectome ffn train` end to end on a small synthetic volume, with validation and bad input."""
from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest

from cli.main import main
from ffn.training import read_metrics
from test_ffn_training import synthetic_volume

CONFIG = """
[model]
depth = 2
features = 8
fov_size = [9, 9, 9]
deltas = [2, 2, 2]

[training]
min_object_voxels = 20
log_every = 2
checkpoint_every = 2
"""


def write_volume(path, image, labels):
    with h5py.File(path, "w") as handle:
        handle.create_dataset("raw", data=image).attrs["resolution"] = (10.0, 10.0, 10.0)
        handle.create_dataset("labels", data=labels).attrs["resolution"] = (10.0, 10.0, 10.0)
    return path


@pytest.mark.slow
def test_train_command_trains_validates_and_resumes(tmp_path):
    image, labels = synthetic_volume((40, 32, 32))
    volume = write_volume(tmp_path / "v.h5", image, labels)
    (tmp_path / "train.toml").write_text(CONFIG)
    args = ["ffn", "train", "--image", f"{volume}:raw", "--labels", f"{volume}:labels", "--out", str(tmp_path / "run"),
            "--config", str(tmp_path / "train.toml"), "--val-bbox", "24,0,0,40,32,32", "--keep-best", "voi_sum",
            "--max-steps", "4"]
    assert main(args) == 0
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    validation = [r for r in records if r["kind"] == "validation"]
    assert validation and {"voi_split_labelled", "voi_merge_labelled", "adapted_rand_error", "erl_nm"} <= set(validation[-1])
    best = json.loads((tmp_path / "run" / "best.json").read_text())  # random starting weights are not validated
    assert [r["step"] for r in validation] == [4] and best["value"] == validation[0]["voi_sum"]
    assert (tmp_path / "run" / "best-model.pt").is_file()
    compiled = ["--val-compile"] if shutil.which("g++") else []  # the resumed run validates with the fused network
    assert main(args[:-1] + ["6"] + compiled) == 0
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in records if r["kind"] == "train"] == [2, 4, 6]
    validation = [r for r in records if r["kind"] == "validation"]
    best = json.loads((tmp_path / "run" / "best.json").read_text())
    assert [r["step"] for r in validation] == [4, 6] and best["value"] == min(r["voi_sum"] for r in validation)


def test_train_command_rejects_bad_input(tmp_path, capsys):
    image, labels = synthetic_volume((16, 16, 16))
    volume = write_volume(tmp_path / "v.h5", image[:, :, :15], labels)
    code = main(["ffn", "train", "--image", f"{volume}:raw", "--labels", f"{volume}:labels", "--out", str(tmp_path / "r")])
    assert code == 2
    assert "differs from label shape" in capsys.readouterr().err
    empty = write_volume(tmp_path / "e.h5", image, np.zeros_like(labels))
    (tmp_path / "train.toml").write_text(CONFIG)
    code = main(["ffn", "train", "--image", f"{empty}:raw", "--labels", f"{empty}:labels", "--out", str(tmp_path / "r"),
                 "--config", str(tmp_path / "train.toml")])
    assert code == 2
    assert "no labelled voxel" in capsys.readouterr().err
