"""How long one training-time validation takes, eager against compiled (`--val-compile`), same run.

A validation segments the held-out block with the weights being trained and scores it; on a
2-core CPU it can take a third of a training budget. The compiled time includes compiling
the new frozen weights, as it does in training. Both must give the same labels.

    .venv/bin/python bench/ffn_validation_bench.py --model W/scratch/best-model.pt
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ffn_train_fib25 import RESOLUTION_NM, VAL_BBOX, data_root  # noqa: E402

from ffn.model import load_model  # noqa: E402
from ffn.options import InferenceOptions  # noqa: E402
from ffn.training import BlockValidator  # noqa: E402
from volumes.geometry import Box  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, type=Path, help="a model file (ours, e.g. a run's best-model.pt)")
    parser.add_argument("--val-bbox", default=VAL_BBOX, help="the FIB-25 block to segment")
    parser.add_argument("--move-threshold", type=float, default=InferenceOptions().move_threshold)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    box = Box.parse(args.val_bbox)
    with h5py.File(data_root() / "fib25-training2" / "fib25_training2.h5", "r") as handle:
        image, labels = handle["volumes/raw"][box.slices()], handle["volumes/labels/neuron_ids"][box.slices()]
    model, config = load_model(args.model)
    results = {}
    for name, compiled in (("eager", False), ("compiled", True)):
        validator = BlockValidator(image, labels, RESOLUTION_NM,
                                   InferenceOptions(move_threshold=args.move_threshold, compile=compiled), with_erl=False)
        started = time.perf_counter()
        report = validator(model, config)
        results[name] = (time.perf_counter() - started, report, validator.last_segmentation)
        print(f"{name:>8}: {results[name][0]:6.1f} s, {report['ffn_steps']} FFN steps, VOI sum {report['voi_sum']:.4f}",
              flush=True)
    same = np.array_equal(results["eager"][2], results["compiled"][2])
    print(f"compiled validation {results['eager'][0] / results['compiled'][0]:.2f}x faster than eager; "
          f"identical labels: {same}")


if __name__ == "__main__":
    main()
