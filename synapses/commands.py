"""`connectome synapses train|detect|evaluate`."""
from __future__ import annotations

import argparse

from volumes.errors import InputError
from volumes.geometry import parse_zyx
from volumes.atomic import write_json_atomically


def register(subparsers, workspace: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser("synapses", help="train, run and score the synapse detector")
    commands = parser.add_subparsers(dest="synapses_command", metavar="ACTION")
    commands.required = True
    _register_train(commands)
    _register_detect(commands, workspace)
    _register_evaluate(commands)


def _register_train(commands) -> None:
    parser = commands.add_parser("train", help="train a detector on an image and synapse ground truth",
                                 description="Ground truth: a mask or instance volume (sites are its 3-D connected "
                                 "components; no direction) or a CREMI HDF5 file with pre/post partner annotations "
                                 "(pre/post polarity learned, so partners come out directed). The model file records "
                                 "the working resolution.")
    parser.add_argument("--image", required=True, help="image volume (any format connectome reads)")
    parser.add_argument("--synapses", required=True, help="synapse mask/instance volume, or a CREMI file.h5 with annotations")
    parser.add_argument("--resolution", help="voxel size in nm z,y,x (needed when the image does not record it)")
    parser.add_argument("--train-sections", help="z range A:B to train on (half-open; default all)")
    parser.add_argument("--out", required=True, help="model file to write (MODEL.pt)")
    parser.add_argument("--iterations", type=int, default=2000, help="training steps (default 2000)")
    parser.add_argument("--batch-size", type=int, default=4, help="training blocks per step (default 4)")
    parser.add_argument("--patch", help="training patch z,y,x in working voxels (default from the resolution)")
    parser.add_argument("--downsample", default="1,1,1", help="average z,y,x voxels into one working voxel (e.g. 1,4,4 for speed on CPU)")
    parser.add_argument("--working-resolution", help="train at this voxel size z,y,x in nm instead (any ratio to the "
                                                     "image's within 8x: the image is resampled, anti-aliased)")
    parser.add_argument("--learning-rate", type=float, default=2e-3, help="Adam learning rate (default 0.002)")
    parser.add_argument("--validation-fraction", type=float, default=0.15, help="share of x held out for validation")
    parser.add_argument("--seed", type=int, default=0, help="random seed of weights and sampling; the same seed repeats a run (default 0)")
    parser.add_argument("--initial-model", help="continue from this model's weights (same resolution and layers)")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default: a GPU when there is one)")
    parser.set_defaults(func=run_train)


def _register_detect(commands, workspace: argparse.ArgumentParser) -> None:
    
    parser = commands.add_parser("detect", parents=[workspace], help="detect synapses in a workspace image and assign partners from a segmentation")
    parser.add_argument("--image", required=True, help="image layer name")
    parser.add_argument("--model", required=True, help="model file from 'synapses train'")
    parser.add_argument("--segmentation", required=True, help="segmentation layer name (same shape as the image)")
    parser.add_argument("--out", help="annotation layer to write (default <segmentation>_synapses)")
    parser.add_argument("--threshold", type=float, help="site probability threshold (default: the model's)")
    parser.add_argument("--min-size", type=int, help="smallest site in working voxels (default: the model's)")
    parser.add_argument("--batch-size", type=int, default=4, help="blocks predicted together")
    parser.add_argument("--block", help="output block z,y,x in working voxels")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default: a GPU when there is one)")
    parser.add_argument("--no-store", action="store_true", help="do not add the synapses to the workspace store")
    parser.set_defaults(func=run_detect)


def _register_evaluate(commands) -> None:
    parser = commands.add_parser("evaluate", help="score a model against ground truth (site and partner F1)")
    parser.add_argument("--model", required=True, help="model file from 'synapses train'")
    parser.add_argument("--image", required=True, help="image volume (any format connectome reads)")
    parser.add_argument("--synapses", required=True, help="ground truth, as for 'train'")
    parser.add_argument("--resolution", help="voxel size in nm z,y,x (needed when the image does not record it)")
    parser.add_argument("--sections", help="z range A:B to evaluate (half-open; default all)")
    parser.add_argument("--segmentation", help="segmentation volume for the synaptic-partner F-score")
    parser.add_argument("--threshold", type=float, help="site probability threshold (default: the model's)")
    parser.add_argument("--min-size", type=int, help="smallest site in working voxels (default: the model's)")
    parser.add_argument("--json", required=True, help="report file to write")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default: a GPU when there is one)")
    parser.set_defaults(func=run_evaluate)


def _positive_int(value: int, what: str) -> int:
    if value < 1:
        raise InputError(f"{what} must be at least 1, got {value}")
    return value


def _threshold(value: float | None) -> float | None:
    if value is not None and not 0.0 < value < 1.0:
        raise InputError(f"--threshold must lie between 0 and 1, got {value}")
    return value


def _min_size(value: int | None) -> int | None:
    return None if value is None else _positive_int(value, "--min-size")


def run_train(args: argparse.Namespace) -> int:
    from synapses.training import TrainingOptions, train

    options = TrainingOptions(
        iterations=_positive_int(args.iterations, "--iterations"), batch_size=_positive_int(args.batch_size, "--batch-size"),
        patch_shape=parse_zyx(args.patch, "--patch") if args.patch else None, learning_rate=args.learning_rate,
        downsample=parse_zyx(args.downsample, "--downsample"), validation_fraction=args.validation_fraction,
        working_resolution_nm=(parse_zyx(args.working_resolution, "--working-resolution", as_float=True)
                               if args.working_resolution else None),
        seed=args.seed, device=args.device, initial_model=args.initial_model,
    )
    if any(f < 1 for f in options.downsample):
        raise InputError(f"--downsample factors must be at least 1, got {args.downsample!r}")
    if not 0.0 <= options.validation_fraction < 0.9:
        raise InputError("--validation-fraction must lie in [0, 0.9)")
    resolution = parse_zyx(args.resolution, "--resolution", as_float=True) if args.resolution else None
    model = train(args.image, args.synapses, resolution, args.train_sections, args.out, options)
    calibrated = model.training.get("validation_site_f1_200nm")
    note = f", validation site F1@200nm {calibrated:.3f}" if calibrated is not None else ""
    print(f"wrote {args.out}: working resolution {model.resolution_nm} nm, pre/post polarity {'yes' if model.has_polarity else 'no'}, "
          f"threshold {model.threshold}, min size {model.min_size_voxels} voxels{note}")
    return 0


def run_detect(args: argparse.Namespace) -> int:
    from synapses.workspace_detection import detect_in_workspace
    from volumes.workspace import Workspace

    detection = detect_in_workspace(
        Workspace(args.workspace), args.image, args.segmentation, args.model, out_layer=args.out,
        threshold=_threshold(args.threshold), min_size_voxels=_min_size(args.min_size),
        block_shape=parse_zyx(args.block, "--block") if args.block else None,
        batch_size=_positive_int(args.batch_size, "--batch-size"), device=args.device, add_to_store=not args.no_store)
    for line in detection.summary():
        print(line)
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from synapses.evaluation import evaluate_model
    from synapses.training import choose_device

    resolution = parse_zyx(args.resolution, "--resolution", as_float=True) if args.resolution else None
    report = evaluate_model(args.model, args.image, args.synapses, resolution, args.sections, args.segmentation,
                            device=choose_device(args.device), threshold=_threshold(args.threshold),
                            min_size_voxels=_min_size(args.min_size), progress=True)
    write_json_atomically(args.json, report, default=str)
    summary = "  ".join(f"{key} {report[key]:.3f}" for key in ("precision_200nm", "recall_200nm", "f1_200nm", "f1_400nm", "partner_f1") if key in report)
    print(f"{report['predicted_sites']} sites detected, {report['true_sites']} true; {summary}")
    print(f"wrote {args.json}")
    return 0
