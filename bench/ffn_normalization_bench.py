"""FFN normalisation on EM of another contrast: Google's FIB-25 network on the FIB-25 cube rescaled to raw * 0.6 + 60.

Segments a crop from the middle of the cube as it is (the model's 128/33), the rescaled crop with the model's statistics, and the
rescaled crop with its own (--normalize volume); prints the VOI of each against the first, with CPU
time beside wall time. Then runs CLAHE blockwise over the whole 250^3 cube and prints its time and the
peak RSS, to show memory follows the block, not the cube.

    .venv/bin/python bench/ffn_normalization_bench.py [--data ../shared/data] [--crop 64]
"""
from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

FIB25 = "fib25-training2/fib25_training2.h5:volumes/raw"
CHECKPOINT = "ffn-fib25-google/models/fib25/model.ckpt-27465036"
REQUEST = "ffn-fib25-google/configs/inference_training_sample2.pbtxt"


def timed(action):
    wall, cpu = time.perf_counter(), time.process_time()
    result = action()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def main() -> int:
    from ffn.evaluation import evaluate_segmentation
    from ffn.normalization import clahe
    from ffn.options import load_options
    from ffn.segment_run import run_segmentation
    from ffn.tf_checkpoint import convert_checkpoint
    from volumes.geometry import Box
    from volumes.io import open_volume
    from volumes.precomputed import write_layer
    from volumes.workspace import Workspace

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--crop", type=int, default=96, help="edge of the cube cropped from the middle (voxels)")
    args = parser.parse_args()
    data = Path(args.data)
    cube = open_volume(str(data / FIB25))
    start = (np.asarray(cube.shape) - args.crop) // 2
    crop_box = Box.from_shape((args.crop,) * 3, start)
    raw = np.asarray(cube.read())  # the whole cube: --normalize volume takes the image's statistics, not the box's
    rescaled = np.clip(np.rint(raw * 0.6 + 60), 0, 255).astype(np.uint8)
    with tempfile.TemporaryDirectory() as scratch:
        workspace = Workspace.init(Path(scratch) / "ws")
        for name, image in (("raw", raw), ("rescaled", rescaled)):
            write_layer(workspace.layer_path(name), image, cube.resolution_nm, "image", progress=False)
        model = Path(scratch) / "fib25.pt"
        convert_checkpoint(data / CHECKPOINT, model, data / REQUEST)
        results = {}
        for out, image, method in (("reference", "raw", "model"), ("rescaled_model", "rescaled", "model"),
                                   ("rescaled_volume", "rescaled", "volume")):
            options = load_options(data / REQUEST, normalize=method, compile=False)
            _, wall, cpu = timed(lambda: run_segmentation(workspace, image, str(model), out, options, bbox=crop_box,
                                                          progress=False))
            results[out] = np.asarray(open_volume(workspace.layer_url(out)).read())
            print(f"{out:16s} ({image}, --normalize {method}): {len(np.unique(results[out])) - 1} segments, "
                  f"{wall:.1f} s wall, {cpu:.1f} s CPU", flush=True)
        for out in ("rescaled_model", "rescaled_volume"):
            report = evaluate_segmentation(results[out], results["reference"])
            largest = np.bincount(np.unique(results[out], return_inverse=True)[1].ravel()).max() / results[out].size
            print(f"{out:16s} vs reference: VOI sum {report['voi_sum']:.3f} (split {report['voi_split']:.3f}, "
                  f"merge {report['voi_merge']:.3f}); largest segment {largest:.1%} of the crop")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    whole = cube.box
    equalised, wall, cpu = timed(lambda: clahe(cube.read, whole))
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"clahe over the whole {whole.shape} cube, blockwise: {wall:.1f} s wall, {cpu:.1f} s CPU; "
          f"peak RSS {before:.0f} MB before, {after:.0f} MB after (the cube itself is {whole.size / 2**20:.0f} MB "
          f"as uint8); mean {equalised.mean():.1f}, stddev {equalised.std():.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
