"""Synapse detection throughput: the blockwise batched path against one block at a time, same run.

    .venv/bin/python bench/synapse_detect_bench.py [--shape 64,192,192] [--batch-size 8] [--repeats 2]

Both paths predict the same blocks of the same synthetic volume with the same network
(untrained weights: throughput does not depend on them) and must give identical maps.
Prints voxels per second of each and their ratio.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from synapses.detection import array_reader, predict_blocks  # noqa: E402
from synapses.model import NetworkConfig, SynapseUNet, pooling_for_resolution  # noqa: E402
from volumes.geometry import parse_zyx  # noqa: E402
from volumes.synth import synthesize  # noqa: E402


def timed(network, reader, shape, batch_size: int, repeats: int):
    best, prediction = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        prediction = predict_blocks(network, reader, shape, batch_size=batch_size)
        best = min(best, time.perf_counter() - started)
    return best, prediction


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="64,192,192", help="volume z,y,x in voxels (10 nm)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    shape = parse_zyx(args.shape, "--shape")
    resolution = (10.0, 10.0, 10.0)
    image = synthesize(shape, seed=0, resolution_nm=resolution)["raw"]
    torch.manual_seed(0)
    network = SynapseUNet(NetworkConfig(widths=[8, 16, 32], pooling=pooling_for_resolution(resolution, 3))).eval()
    reader = array_reader(image)
    voxels = int(np.prod(shape))
    print(f"volume {shape} ({voxels / 1e6:.1f} Mvoxels), torch threads {torch.get_num_threads()}, device cpu")
    one_s, one = timed(network, reader, shape, 1, args.repeats)
    batched_s, batched = timed(network, reader, shape, args.batch_size, args.repeats)
    same = np.abs(one.probability.astype(int) - batched.probability.astype(int)).max() <= 1
    print(f"one block at a time : {one_s:7.2f} s  {voxels / one_s:12,.0f} voxels/s  ({one.counters['blocks']} blocks)")
    print(f"blockwise, batch {args.batch_size:<3d}: {batched_s:7.2f} s  {voxels / batched_s:12,.0f} voxels/s")
    print(f"\nsummary: blockwise batched detection is {one_s / batched_s:.2f}x the throughput of one block at a time "
          f"({voxels / batched_s:,.0f} vs {voxels / one_s:,.0f} voxels/s); maps identical: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
