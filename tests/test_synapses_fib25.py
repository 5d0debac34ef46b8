"""Detection on the real FIB-25 cube with Google's FFN segmentation, read back by neuroglancer's reader."""
from __future__ import annotations

import numpy as np
import pytest

from cli.main import main as connectome
from volumes.io import open_volume
from volumes.precomputed import write_layer
from volumes.synth import synthesize, write_cremi

pytestmark = pytest.mark.slow  # predicts the whole 250^3 cube on CPU


def test_detect_on_fib25_with_ffn_segmentation(workspace, fib25_h5, google_ffn_dir, tmp_path, capsys):
    from neuroglancer.read_precomputed_annotations import AnnotationReader

    segmentation_path = google_ffn_dir / "results" / "fib25" / "sample-training2.npz"
    # A model at 20 nm (FIB-25 is 10 nm: detection averages it down by 2), trained briefly on synthetic EM.
    synthetic = write_cremi(tmp_path / "synth.h5", synthesize((32, 64, 64), seed=2, resolution_nm=(10, 10, 10), synapses_per_cubic_um=30))
    model = tmp_path / "model.pt"
    assert connectome(["synapses", "train", "--image", f"{synthetic}:volumes/raw", "--synapses", str(synthetic),
                       "--downsample", "2,2,2", "--iterations", "2", "--batch-size", "1", "--validation-fraction", "0",
                       "--out", str(model)]) == 0
    write_layer(workspace.layer_path("em"), open_volume(f"{fib25_h5}:volumes/raw"), progress=False)
    write_layer(workspace.layer_path("ffn"), open_volume(f"{segmentation_path}:segmentation", resolution_nm=(10, 10, 10)),
                layer_type="segmentation", progress=False)
    capsys.readouterr()
    status = connectome(["synapses", "detect", "-w", str(workspace.root), "--image", "em", "--segmentation", "ffn",
                         "--model", str(model), "--no-store"])
    assert status == 0
    output = capsys.readouterr().out
    kept = int(output.split(" with pre and post segments")[0].split("; ")[-1])
    reader = AnnotationReader("file://" + str(workspace.layer_path("ffn_synapses")))
    assert reader.annotation_type == "ellipsoid"
    annotations = reader.spatial[0][(0, 0, 0)]
    assert len(annotations) == kept
    segments = set(np.unique(np.load(segmentation_path)["segmentation"]).tolist())
    for annotation in annotations[:20]:
        full = reader.by_id[int(annotation.id)]
        pre, post = int(full.segments[0][0]), int(full.segments[1][0])
        assert pre in segments and post in segments and pre != post and 0 not in (pre, post)
        assert all(0 <= c <= 2500 for c in full.center)
