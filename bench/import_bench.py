"""Import throughput of the FIB-25 cube against a direct cloud-volume write of the same array.

    .venv/bin/python bench/import_bench.py [--data ../shared/data] [--repeats 3]

The baseline writes the already-loaded array to a fresh precomputed layer
(mip 0 only, same chunking and encoding) with cloud-volume. Our import reads
the source from disk, writes every pyramid level and renames the layer into
place. Overhead = import time / baseline time (target <= 1.5x).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from volumes.importer import import_volume  # noqa: E402
from volumes.io import open_volume  # noqa: E402
from volumes.precomputed import layer_info  # noqa: E402
from volumes.workspace import Workspace  # noqa: E402


def direct_cloudvolume_write(directory: Path, array_zyx: np.ndarray, layer_type: str) -> None:
    from cloudvolume import CloudVolume

    data_type = "uint64" if layer_type == "segmentation" else array_zyx.dtype.name
    info = layer_info(array_zyx.shape, (10, 10, 10), layer_type, data_type)
    info["scales"] = info["scales"][:1]
    cv = CloudVolume("precomputed://file://" + str(directory), info=info, progress=False, compress="gzip")
    cv.commit_info()
    cv[:, :, :] = array_zyx.astype(data_type).transpose(2, 1, 0)[..., np.newaxis]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("CONNECTOME_DATA", "../shared/data"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    h5 = Path(args.data) / "fib25-training2" / "fib25_training2.h5"
    rows = []
    for key, layer_type in (("volumes/raw", "image"), ("volumes/labels/neuron_ids", "segmentation")):
        source = f"{h5}:{key}"
        array = open_volume(source).read()
        baseline, ours = [], []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                direct_cloudvolume_write(Path(tmp) / "direct", array, layer_type)
                baseline.append(time.perf_counter() - start)
                workspace = Workspace.init(Path(tmp) / "ws")
                start = time.perf_counter()
                import_volume(workspace, source, "layer", labels=layer_type == "segmentation", progress=False)
                ours.append(time.perf_counter() - start)
                shutil.rmtree(tmp, ignore_errors=True)
        voxels = array.size
        b, o = statistics.median(baseline), statistics.median(ours)
        rows.append((key, voxels / o / 1e6, voxels / b / 1e6, o / b))
    print(f"{'source':28s} {'import Mvox/s':>14s} {'direct cv Mvox/s':>17s} {'overhead':>9s}")
    for key, ours_rate, base_rate, ratio in rows:
        print(f"{key:28s} {ours_rate:14.1f} {base_rate:17.1f} {ratio:8.2f}x")
    print(f"import overhead vs direct cloud-volume write (median of {args.repeats}, target <= 1.5x): "
          + ", ".join(f"{k.split('/')[-1]} {r:.2f}x" for k, _, _, r in rows))


if __name__ == "__main__":
    main()
