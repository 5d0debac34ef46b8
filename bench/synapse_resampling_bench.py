"""Synapse detection at other pixel sizes: the shipped synthetic detector on one synthetic volume and on copies
resampled to other voxel sizes (scipy zoom, voxel-centre aligned), sites compared in nm.

For each pixel size: how many sites, how many lie within one coarse voxel of a site found at the model's own
8 nm, the distances to the nearest native site, and wall/CPU time beside the native run's.

    .venv/bin/python bench/synapse_resampling_bench.py [--shape 64,128,128] [--seed 21]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PIXEL_SIZES_NM = [(8.0, 7.6, 7.6), (8.0, 6.0, 6.0), (10.0, 10.0, 10.0), (6.0, 11.0, 7.0)]


def main() -> int:
    from scipy import ndimage

    from synapses.detection import detect
    from synapses.model import load_model
    from volumes.io import ArrayVolume
    from volumes.synth import synthesize

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="64,128,128")
    parser.add_argument("--seed", type=int, default=21)
    args = parser.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))
    model = load_model(Path(__file__).resolve().parent.parent / "synapses" / "models" / "synthetic.pt", "cpu")
    native_nm = tuple(model.resolution_nm)
    volume = synthesize(shape, args.seed, native_nm)

    def run(raw, seg, resolution_nm):
        wall, cpu = time.perf_counter(), time.process_time()
        result = detect(model, ArrayVolume("image", raw, resolution_nm), ArrayVolume("seg", seg, resolution_nm),
                        device="cpu")
        sites = np.array([s.position_nm for s in result.all_sites]).reshape(-1, 3)
        return sites, time.perf_counter() - wall, time.process_time() - cpu

    native, wall0, cpu0 = run(volume["raw"], volume["neuron_ids"], native_nm)
    print(f"native {native_nm} nm: {len(native)} sites, {wall0:.1f} s wall, {cpu0:.1f} s CPU")
    for resolution_nm in PIXEL_SIZES_NM:
        zoom = np.asarray(native_nm) / np.asarray(resolution_nm)
        raw = np.clip(np.rint(ndimage.zoom(volume["raw"].astype(np.float32), zoom, order=1, grid_mode=True,
                                           mode="nearest")), 0, 255).astype(np.uint8)
        seg = ndimage.zoom(volume["neuron_ids"], zoom, order=0, grid_mode=True, mode="nearest")
        sites, wall, cpu = run(raw, seg, resolution_nm)
        coarse = max(max(resolution_nm), max(native_nm))
        nearest = (np.sqrt(((native[:, None] - sites[None]) ** 2).sum(-1)).min(axis=1) if len(sites) and len(native)
                   else np.full(len(native), np.inf))
        print(f"{resolution_nm} nm: {len(sites)} sites; {int((nearest <= coarse).sum())}/{len(native)} native sites "
              f"within one coarse voxel ({coarse:g} nm); nearest-site distance median {np.median(nearest):.0f} nm, "
              f"sorted {np.sort(nearest).round(0).astype(int).tolist()}; {wall:.1f} s wall ({wall / wall0:.2f}x), "
              f"{cpu:.1f} s CPU ({cpu / cpu0:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
