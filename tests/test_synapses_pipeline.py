"""train -> detect -> evaluate end to end on a small synthetic volume, and the clear errors on bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest

from cli.main import main as connectome
from synapses.model import load_model
from volumes.precomputed import write_layer
from volumes.synth import synthesize, write_cremi

pytestmark = pytest.mark.slow  # trains a (tiny) model: about a minute on 2 busy cores

SHAPE = (32, 64, 64)
RESOLUTION = (10.0, 10.0, 10.0)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A synthetic volume on disk and a model trained a few iterations on it (enough to exercise every step)."""
    root = tmp_path_factory.mktemp("synapses")
    volume = synthesize(SHAPE, seed=5, resolution_nm=RESOLUTION, synapses_per_cubic_um=30)
    path = write_cremi(root / "synth.h5", volume)
    model = root / "model.pt"
    status = connectome(["synapses", "train", "--image", f"{path}:volumes/raw", "--synapses", str(path),
                         "--iterations", "2", "--batch-size", "1", "--validation-fraction", "0", "--out", str(model)])
    assert status == 0
    return {"root": root, "h5": path, "model": model, "volume": volume}


@pytest.fixture
def detect_workspace(workspace, synthetic):
    volume = synthetic["volume"]
    write_layer(workspace.layer_path("em"), volume["raw"], RESOLUTION, progress=False)
    write_layer(workspace.layer_path("seg"), volume["neuron_ids"], RESOLUTION, layer_type="segmentation", progress=False)
    return workspace


def test_model_records_resolution_and_direction(synthetic):
    model = load_model(synthetic["model"])
    assert model.resolution_nm == RESOLUTION
    assert model.has_polarity
    assert model.training["iterations"] == 2
    assert not (synthetic["root"] / "model.pt.checkpoint").exists()


def test_detect_writes_a_layer_neuroglancer_reads(detect_workspace, synthetic, capsys):
    from neuroglancer.read_precomputed_annotations import AnnotationReader

    status = connectome(["synapses", "detect", "-w", str(detect_workspace.root), "--image", "em", "--segmentation", "seg",
                         "--model", str(synthetic["model"]), "--threshold", "0.05", "--no-store"])
    assert status == 0
    output = capsys.readouterr().out
    kept = int(output.split(" with pre and post segments")[0].split("; ")[-1])
    reader = AnnotationReader("file://" + str(detect_workspace.layer_path("seg_synapses")))
    assert reader.annotation_type == "ellipsoid"
    assert [r["id"] for r in reader.metadata["relationships"]] == ["pre_segment", "post_segment"]
    assert len(reader.spatial[0][(0, 0, 0)]) == kept
    labels = synthetic["volume"]["neuron_ids"]
    for number in range(1, kept + 1):
        annotation = reader.by_id[number]
        pre, post = int(annotation.segments[0][0]), int(annotation.segments[1][0])
        assert pre != post and pre in labels and post in labels


def test_zero_detections_is_a_reported_result(detect_workspace, synthetic, capsys):
    from neuroglancer.read_precomputed_annotations import AnnotationReader

    status = connectome(["synapses", "detect", "-w", str(detect_workspace.root), "--image", "em", "--segmentation", "seg",
                         "--model", str(synthetic["model"]), "--threshold", "0.999", "--out", "none", "--no-store"])
    assert status == 0
    assert "0 synaptic sites detected" in capsys.readouterr().out
    reader = AnnotationReader("file://" + str(detect_workspace.layer_path("none")))
    assert len(reader.spatial[0][(0, 0, 0)]) == 0


def test_evaluate_reports_site_and_partner_scores(synthetic, tmp_path):
    report_path = tmp_path / "report.json"
    status = connectome(["synapses", "evaluate", "--model", str(synthetic["model"]), "--image", f"{synthetic['h5']}:volumes/raw",
                         "--synapses", str(synthetic["h5"]), "--segmentation", f"{synthetic['h5']}:volumes/labels/neuron_ids",
                         "--sections", "0:32", "--json", str(report_path)])
    assert status == 0
    report = json.loads(report_path.read_text())
    for key in ("precision_200nm", "recall_200nm", "f1_200nm", "precision_400nm", "recall_400nm", "f1_400nm", "partner_f1"):
        assert 0.0 <= report[key] <= 1.0
    assert report["true_sites"] == len(synthetic["volume"]["annotations"]["partners"])


def test_an_image_at_another_resolution_is_resampled_and_a_far_one_refused(workspace, synthetic, capsys):
    """7 nm voxels for a 10 nm model: resampled (anti-aliased), detected, and sites reported in the image's nm."""
    volume = synthetic["volume"]
    write_layer(workspace.layer_path("em7"), volume["raw"], (7, 7, 7), progress=False)
    write_layer(workspace.layer_path("seg7"), volume["neuron_ids"], (7, 7, 7), layer_type="segmentation", progress=False)
    status = connectome(["synapses", "detect", "-w", str(workspace.root), "--image", "em7", "--segmentation", "seg7",
                         "--model", str(synthetic["model"]), "--threshold", "0.05", "--no-store"])
    assert status == 0
    assert "is resampled by 1.43 x 1.43 x 1.43" in capsys.readouterr().out
    write_layer(workspace.layer_path("em1"), volume["raw"], (1, 1, 1), progress=False)
    write_layer(workspace.layer_path("seg1"), volume["neuron_ids"], (1, 1, 1), layer_type="segmentation", progress=False)
    status = connectome(["synapses", "detect", "-w", str(workspace.root), "--image", "em1", "--segmentation", "seg1",
                         "--model", str(synthetic["model"]), "--no-store"])
    assert status == 1
    err = capsys.readouterr().err
    assert "the model works at (10.0, 10.0, 10.0) nm but the image is (1.0, 1.0, 1.0) nm" in err
    assert "a ratio of 10x, 10x, 10x is beyond the 8x either way" in err


def test_training_at_a_chosen_working_resolution_resamples_the_image(synthetic, workspace, tmp_path, capsys):
    path = synthetic["h5"]
    model_path = tmp_path / "m13.pt"
    status = connectome(["synapses", "train", "--image", f"{path}:volumes/raw", "--synapses", str(path),
                         "--working-resolution", "13,13,13", "--iterations", "2", "--batch-size", "1",
                         "--validation-fraction", "0", "--out", str(model_path)])
    assert status == 0
    assert load_model(model_path).resolution_nm == (13.0, 13.0, 13.0)
    volume = synthetic["volume"]
    write_layer(workspace.layer_path("em"), volume["raw"], RESOLUTION, progress=False)
    write_layer(workspace.layer_path("seg"), volume["neuron_ids"], RESOLUTION, layer_type="segmentation", progress=False)
    status = connectome(["synapses", "detect", "-w", str(workspace.root), "--image", "em", "--segmentation", "seg",
                         "--model", str(model_path), "--threshold", "0.05", "--no-store"])
    assert status == 0 and "is resampled by 1.3 x 1.3 x 1.3" in capsys.readouterr().out


def test_segmentation_of_another_shape_is_an_input_error(detect_workspace, synthetic, capsys):
    write_layer(detect_workspace.layer_path("small"), synthetic["volume"]["neuron_ids"][:, :32], RESOLUTION,
                layer_type="segmentation", progress=False)
    status = connectome(["synapses", "detect", "-w", str(detect_workspace.root), "--image", "em", "--segmentation", "small",
                         "--model", str(synthetic["model"]), "--no-store"])
    assert status == 2
    assert "segmentation has shape (32, 32, 64) but the image (32, 64, 64)" in capsys.readouterr().err


def test_empty_inputs_are_input_errors(synthetic, tmp_path, capsys):
    h5 = synthetic["h5"]
    status = connectome(["synapses", "evaluate", "--model", str(synthetic["model"]), "--image", f"{h5}:volumes/raw",
                         "--synapses", str(h5), "--sections", "5:5", "--json", str(tmp_path / "r.json")])
    assert status == 2 and "is empty" in capsys.readouterr().err
    empty = write_cremi(tmp_path / "nosynapses.h5", synthesize((16, 32, 32), seed=1, resolution_nm=RESOLUTION, synapses_per_cubic_um=0))
    status = connectome(["synapses", "train", "--image", f"{empty}:volumes/raw", "--synapses", str(empty),
                         "--iterations", "1", "--out", str(tmp_path / "m.pt")])
    assert status == 2 and "no synaptic sites" in capsys.readouterr().err
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    status = connectome(["synapses", "evaluate", "--model", str(tmp_path / "junk.pt"), "--image", f"{h5}:volumes/raw",
                         "--synapses", str(h5), "--json", str(tmp_path / "r.json")])
    assert status == 2 and "not a synapse model file" in capsys.readouterr().err


def test_detect_adds_rows_to_the_store(detect_workspace, synthetic, capsys):
    from db import store

    with store.open_store(detect_workspace) as opened:
        store.build_graph(opened, synthetic["volume"]["neuron_ids"], RESOLUTION)
    status = connectome(["synapses", "detect", "-w", str(detect_workspace.root), "--image", "em", "--segmentation", "seg",
                         "--model", str(synthetic["model"]), "--threshold", "0.05"])
    assert status == 0
    output = capsys.readouterr().out
    kept = int(output.split(" with pre and post segments")[0].split("; ")[-1])
    with store.open_store(detect_workspace) as opened:
        table = store.synapse_table(opened)
    assert len(table) == kept
    if kept:
        assert (table["pre_pt_supervoxel_id"] != table["post_pt_supervoxel_id"]).all()
        assert set(table["pre_pt_supervoxel_id"]).issubset(set(np.unique(synthetic["volume"]["neuron_ids"]).tolist()))
    # detecting again replaces the dataset's synapses rather than adding a second copy
    assert connectome(["synapses", "detect", "-w", str(detect_workspace.root), "--image", "em", "--segmentation", "seg",
                       "--model", str(synthetic["model"]), "--threshold", "0.05"]) == 0
    assert f"replaced the store's synapses with {kept}" in capsys.readouterr().out or not kept
    with store.open_store(detect_workspace) as opened:
        again = store.synapse_table(opened)
    assert len(again) == kept
    assert sorted(map(tuple, again["ctr_pt_position"].tolist())) == sorted(map(tuple, table["ctr_pt_position"].tolist()))
