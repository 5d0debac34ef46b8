"""`connectome synapses train|detect|evaluate`."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from volumes.errors import InputError
from volumes.geometry import parse_zyx


def register(subparsers) -> None:
    parser = subparsers.add_parser("synapses", help="train, run and score the synapse detector")
    commands = parser.add_subparsers(dest="synapses_command", metavar="ACTION")
    commands.required = True
    _register_train(commands)
    _register_detect(commands)
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
    parser.add_argument("--learning-rate", type=float, default=2e-3, help="Adam learning rate (default 0.002)")
    parser.add_argument("--validation-fraction", type=float, default=0.15, help="share of x held out for validation")
    parser.add_argument("--seed", type=int, default=0, help="random seed of weights and sampling; the same seed repeats a run (default 0)")
    parser.add_argument("--initial-model", help="continue from this model's weights (same resolution and layers)")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default: a GPU when there is one)")
    parser.set_defaults(func=run_train)


def _register_detect(commands) -> None:
    from cli.main import add_workspace_argument

    parser = commands.add_parser("detect", help="detect synapses in a workspace image and assign partners from a segmentation")
    add_workspace_argument(parser)
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
    from synapses.data import working_factors
    from synapses.detection import detect
    from synapses.export import store_rows, write_annotation_layer
    from synapses.model import load_model
    from synapses.training import choose_device
    from volumes.io import open_volume
    from volumes.workspace import Workspace

    workspace = Workspace(args.workspace)
    workspace.require_layer(args.image)
    workspace.require_layer(args.segmentation)
    out_path = workspace.layer_path(args.out or f"{args.segmentation}_synapses")
    device = choose_device(args.device)
    model = load_model(args.model, device)
    image = open_volume(workspace.layer_url(args.image))
    segmentation = open_volume(workspace.layer_url(args.segmentation))
    factors = working_factors(image.resolution_nm, model.resolution_nm)
    if factors != (1, 1, 1):
        print(f"note: the model works at {model.resolution_nm} nm; the image ({image.resolution_nm} nm) is averaged down by {factors}")
    result = detect(model, image, segmentation, block_shape=parse_zyx(args.block, "--block") if args.block else None,
                    batch_size=_positive_int(args.batch_size, "--batch-size"), device=device,
                    threshold=_threshold(args.threshold), min_size_voxels=_min_size(args.min_size), progress=True)
    extent_nm = [s * r for s, r in zip(image.shape, image.resolution_nm)]
    write_annotation_layer(out_path, result.sites, result.region.working_resolution_nm, extent_nm)
    dropped = ", ".join(f"{count} {why}" for why, count in result.dropped.items() if count) or "none"
    print(f"{len(result.all_sites)} synaptic sites detected; {len(result.sites)} with pre and post segments (dropped: {dropped})")
    print(f"wrote annotation layer {out_path}")
    if not args.no_store:
        print(_add_to_store(workspace, store_rows(result.sites)))
    return 0


def _add_to_store(workspace, rows: list[dict]) -> str:
    """Make these the workspace store's synapses (db.store), replacing an earlier detection's; the layer is already written."""
    from db import store

    with store.open_store(workspace, create=False) as opened:
        try:
            added = store.add_synapses(opened, rows, replace=True)
        except InputError as exc:
            raise InputError(f"the annotation layer was written, but the store refused the synapses: {exc} "
                             "(build the supervoxel graph from this segmentation first, or pass --no-store)") from None
    return f"replaced the store's synapses with {added} synapses ({opened.url})"


def run_evaluate(args: argparse.Namespace) -> int:
    from synapses.evaluation import evaluate_model
    from synapses.training import choose_device

    resolution = parse_zyx(args.resolution, "--resolution", as_float=True) if args.resolution else None
    report = evaluate_model(args.model, args.image, args.synapses, resolution, args.sections, args.segmentation,
                            device=choose_device(args.device), threshold=_threshold(args.threshold),
                            min_size_voxels=_min_size(args.min_size), progress=True)
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temporary.write_text(json.dumps(report, indent=2, default=str))
    os.replace(temporary, path)
    summary = "  ".join(f"{key} {report[key]:.3f}" for key in ("precision_200nm", "recall_200nm", "f1_200nm", "f1_400nm", "partner_f1") if key in report)
    print(f"{report['predicted_sites']} sites detected, {report['true_sites']} true; {summary}")
    print(f"wrote {path}")
    return 0
