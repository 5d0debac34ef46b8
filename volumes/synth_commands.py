"""`connectome synth`: write a synthetic CREMI-layout EM volume with exact ground truth."""
from __future__ import annotations

import argparse

from volumes.errors import InputError
from volumes.geometry import parse_zyx


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "synth",
        help="write a synthetic EM volume (CREMI-layout HDF5) with exact neuron and synapse truth",
        description="Synthetic EM for offline demos and exact-truth tests; never a substitute for real data. "
        "Writes volumes/raw, volumes/labels/neuron_ids, volumes/labels/clefts and CREMI annotations/.",
    )
    parser.add_argument("out", metavar="OUT.h5", help="HDF5 file to write (replaced atomically)")
    parser.add_argument("--shape", required=True, help="volume size in voxels, z,y,x (e.g. 128,128,128)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same volume (default 0)")
    parser.add_argument("--resolution", default="8,8,8", help="voxel size in nm, z,y,x (default 8,8,8)")
    parser.add_argument("--synapses-per-cubic-um", type=float, default=8.0, help="synapse density (default 8)")
    parser.set_defaults(func=run_synth)


def run_synth(args: argparse.Namespace) -> int:
    from volumes.synth import synthesize, write_cremi

    shape = parse_zyx(args.shape, "--shape")
    if any(s < 8 for s in shape):
        raise InputError(f"--shape needs at least 8 voxels along each axis, got {args.shape!r}")
    resolution_nm = parse_zyx(args.resolution, "--resolution", as_float=True)
    if not args.synapses_per_cubic_um >= 0:
        raise InputError("--synapses-per-cubic-um must be zero or more")
    volume = synthesize(shape, args.seed, resolution_nm, synapses_per_cubic_um=args.synapses_per_cubic_um)
    path = write_cremi(args.out, volume)
    neurons = int(volume["neuron_ids"].max())  # ids are 1..N
    print(f"wrote {path}: shape {shape} at {resolution_nm} nm, {neurons} neurons, {len(volume['annotations']['partners'])} synapses")
    return 0
