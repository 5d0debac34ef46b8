"""`connectome ffn ...`: import Google's TF checkpoints and run FFN segmentation."""
from __future__ import annotations

import argparse

from ffn import train_commands
from ffn.options import NORMALIZATIONS, PRECISIONS, VIEW_COUNTS
from volumes.errors import InputError
from volumes.geometry import Box, parse_zyx


def register(subparsers, workspace: argparse.ArgumentParser) -> None:
    ffn = subparsers.add_parser("ffn", help="Flood-Filling Network segmentation: import Google weights, segment")
    commands = ffn.add_subparsers(dest="ffn_command", metavar="FFN_COMMAND")
    commands.required = True
    _register_import_tf(commands)
    _register_segment(commands, workspace)
    _register_consensus(commands, workspace)
    train_commands.register(commands)


def _register_import_tf(commands) -> None:
    parser = commands.add_parser(
        "import-tf", help="convert a Google FFN TensorFlow checkpoint to our model file (TensorFlow not needed)",
        description="Read CKPT_PREFIX.index and CKPT_PREFIX.data-00000-of-00001 directly and write a self-describing "
                    "model file. Depth, FOV, deltas and the image mean/stddev come from Google's inference pbtxt "
                    "(--config) or the options below (defaults: the published FIB-25 model).")
    parser.add_argument("checkpoint", metavar="CKPT_PREFIX", help="checkpoint prefix, e.g. models/fib25/model.ckpt-27465036")
    parser.add_argument("--out", required=True, help="model file to write (.pt)")
    parser.add_argument("--config", help="Google InferenceRequest pbtxt giving model_args and image_mean/image_stddev")
    parser.add_argument("--depth", type=int, help="residual depth (default 12)")
    parser.add_argument("--fov-size", help="field of view z,y,x (default 33,33,33)")
    parser.add_argument("--deltas", help="movement step z,y,x (default 8,8,8)")
    parser.add_argument("--image-mean", type=float, help="image normalisation mean (default 128)")
    parser.add_argument("--image-stddev", type=float, help="image normalisation stddev (default 33)")
    parser.set_defaults(func=_import_tf)


def _import_tf(args: argparse.Namespace) -> int:
    from ffn.tf_checkpoint import convert_checkpoint

    overrides = {"depth": args.depth, "image_mean": args.image_mean, "image_stddev": args.image_stddev,
                 "fov_size": parse_zyx(args.fov_size, "--fov-size") if args.fov_size else None,
                 "deltas": parse_zyx(args.deltas, "--deltas") if args.deltas else None}
    config = convert_checkpoint(args.checkpoint, args.out, args.config, overrides)
    print(f"wrote {args.out}: depth {config.depth}, fov {config.fov_size}, deltas {config.deltas}, "
          f"image mean/stddev {config.image_mean}/{config.image_stddev}")
    return 0


def _register_segment(commands, workspace: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "segment", parents=[workspace], help="FFN-segment an image into a uint64 precomputed segmentation layer (resumable)",
        description="Run FFN inference with Google's semantics over an image (a workspace layer name or any volume "
                    "spec, e.g. raw.h5:volumes/raw). --bbox treats the box as the whole volume. Interrupted runs "
                    "resume from <workspace>/ffn-runs/OUT/state.npz; segment origins go to origins.json there.")
    parser.add_argument("--image", required=True, help="image layer name in the workspace, or a volume spec")
    parser.add_argument("--model", required=True, help="model file from 'ffn import-tf' or training")
    parser.add_argument("--out", required=True, help="name of the segmentation layer to write")
    parser.add_argument("--options", help="inference options: Google pbtxt or our TOML ([inference] table)")
    parser.add_argument("--bbox", help="z0,y0,x0,z1,y1,x1: segment only this box, as if it were the whole volume")
    parser.add_argument("--max-segments", type=int, help="stop after this many segments")
    parser.add_argument("--precision", choices=list(PRECISIONS),
                        help="network precision (default fp32; fp16 and tf32 need a GPU)")
    parser.add_argument("--compile", action="store_true", default=None,
                        help="compile the network (TorchInductor, fused convolutions; needs g++): same labels, "
                             "~1.3x faster on CPU after ~20 s of compiling")
    parser.add_argument("--averaged-views", type=int, choices=list(VIEW_COUNTS),
                        help="average the network's output over this many flipped/transposed copies of each FOV "
                             "(default 1, Google's): different labels, usually better for a weakly trained network, "
                             "at that many times the compute")
    parser.add_argument("--normalize", choices=list(NORMALIZATIONS),
                        help="image intensities the network sees: model (the model's mean/stddev, default), volume "
                             "(this image's own mean/stddev, sampled blockwise) or clahe (local contrast equalised "
                             "blockwise first); recorded in run.json")
    parser.add_argument("--threads", type=int, help="CPU threads for the network")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing layer (the saved state of the same request is reused)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    scale_out = parser.add_argument_group("scale-out over subvolumes on a Dask cluster")
    scale_out.add_argument("--subvolume-size", help="z,y,x: segment independent subvolumes of this core size and stitch their ids")
    scale_out.add_argument("--overlap", default="16,16,16", help="z,y,x context voxels read around each subvolume (default 16,16,16)")
    scale_out.add_argument("--scheduler", help="Dask scheduler address (default: a local cluster)")
    scale_out.add_argument("--workers", type=int, default=2, help="worker processes of the local cluster (default 2)")
    parser.set_defaults(func=_segment)


def _segment(args: argparse.Namespace) -> int:
    from ffn.options import load_options
    from ffn.segment_run import run_segmentation
    from volumes.workspace import Workspace

    if args.max_segments is not None and args.max_segments < 1:
        raise InputError(f"--max-segments must be at least 1, got {args.max_segments}")
    options = load_options(args.options, precision=args.precision, max_segments=args.max_segments, compile=args.compile,
                           averaged_views=args.averaged_views, normalize=args.normalize)
    bbox = Box.parse(args.bbox) if args.bbox else None
    if args.subvolume_size:
        return _segment_distributed(args, options, bbox)
    result = run_segmentation(Workspace(args.workspace), args.image, args.model, args.out, options, bbox=bbox,
                              overwrite=args.overwrite, progress=not args.no_progress, threads=args.threads)
    print(f"wrote layer {args.out}: {len(result['segments'])} segments, {result['steps']} FFN steps, "
          f"{result['seconds']} s")
    return 0


def _segment_distributed(args: argparse.Namespace, options, bbox: Box | None) -> int:
    from ffn.distributed import run_distributed_segmentation
    from volumes.workspace import Workspace

    if args.max_segments is not None:
        raise InputError("--max-segments applies to a single-canvas run, not to --subvolume-size")
    if args.workers < 1:
        raise InputError(f"--workers must be at least 1, got {args.workers}")
    core = parse_zyx(args.subvolume_size, "--subvolume-size")
    overlap = parse_zyx(args.overlap, "--overlap")
    run_distributed_segmentation(Workspace(args.workspace), args.image, args.model, args.out, options, core, overlap,
                                 bbox=bbox, scheduler=args.scheduler, n_workers=args.workers, overwrite=args.overwrite,
                                 progress=not args.no_progress)
    print(f"wrote layer {args.out} from subvolumes of {args.subvolume_size} (overlap {args.overlap})")
    return 0


def _register_consensus(commands, workspace: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "consensus", parents=[workspace], help="oversegmentation consensus of two FFN runs (Google's split by intersection)",
        description="Every pair of overlapping segments of the two layers becomes its own segment, so a merger made "
                    "by only one run is split; pieces under --min-size voxels are dropped. The usual pair is a "
                    "PolicyPeaks run and a PolicyInvertOrigins run seeded from its origins.json.")
    parser.add_argument("first", help="segmentation layer of the first run")
    parser.add_argument("second", help="segmentation layer of the second run (same shape)")
    parser.add_argument("--out", required=True, help="segmentation layer to write")
    parser.add_argument("--min-size", type=int, default=1000, help="smallest piece kept, in voxels (default 1000, Google's)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing layer")
    parser.set_defaults(func=_consensus)


def _consensus(args: argparse.Namespace) -> int:
    from ffn.consensus import oversegmentation_consensus
    from volumes.io import open_volume
    from volumes.precomputed import write_layer
    from volumes.workspace import Workspace

    if args.min_size < 0:
        raise InputError(f"--min-size must be zero or more, got {args.min_size}")
    workspace = Workspace(args.workspace)
    for name in (args.first, args.second):
        workspace.require_layer(name)
    first, second = open_volume(workspace.layer_url(args.first)), open_volume(workspace.layer_url(args.second))
    labels = oversegmentation_consensus(first.read(), second.read(), args.min_size)
    write_layer(workspace.layer_path(args.out), labels, first.resolution_nm, "segmentation", overwrite=args.overwrite,
                voxel_offset=first.voxel_offset, progress=False)
    print(f"wrote layer {args.out}: {int(labels.max())} segments from the consensus of {args.first} and {args.second}")
    return 0
