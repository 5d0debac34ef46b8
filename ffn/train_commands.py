"""`connectome ffn train`: train or fine-tune an FFN on an image and its dense labels."""
from __future__ import annotations

import argparse
import json

import numpy as np

from ffn.options import NORMALIZATIONS
from volumes.errors import InputError
from volumes.geometry import Box


def register(ffn_subparsers) -> None:
    parser = ffn_subparsers.add_parser(
        "train", help="train or fine-tune an FFN (Google's recipe), with checkpoints, resume and validation",
        description="Train a flood-filling network with Google's recipe (soft labels 0.95/0.05, fixed 27-offset FOV "
                    "moves gated at the move threshold, SGD lr 1e-3 batch 4, gradient clipping 0.7, xy-permute and "
                    "flip augmentation). Rerunning with the same --out resumes. Options go in a TOML file with "
                    "[model] (depth, features, fov_size, deltas, image_mean, image_stddev, use_layernorm) and "
                    "[training] tables (see ffn.training.TrainingOptions).")
    parser.add_argument("--image", required=True, help="image volume (any spec `connectome` opens)")
    parser.add_argument("--labels", required=True, help="dense label volume of the same shape")
    parser.add_argument("--out", required=True, help="output directory (model.pt, checkpoints/, metrics.jsonl, metrics.png)")
    parser.add_argument("--config", help="TOML with [model] and [training] tables")
    parser.add_argument("--init", help="fine-tune from this model file (ours, or a Google checkpoint imported with `ffn import-tf`)")
    parser.add_argument("--max-steps", type=int, help="stop after this many training steps (overrides the config)")
    parser.add_argument("--max-minutes", type=float, help="stop (and checkpoint) after this much wall time")
    parser.add_argument("--mask", help="only voxels where this volume is non-zero are training centres")
    parser.add_argument("--train-bbox", help="train only inside this box z0,y0,x0,z1,y1,x1 (default: the whole volume)")
    parser.add_argument("--val-bbox", help="held-out block z0,y0,x0,z1,y1,x1: never trained on, segmented and scored "
                                           "every validate_every steps and at the end")
    parser.add_argument("--val-max-segments", type=int, help="stop each validation after this many segments (faster)")
    parser.add_argument("--val-compile", action="store_true",
                        help="validate with the compiled network (TorchInductor, needs g++): the same labels, several "
                             "times faster on CPU for small networks, after a few seconds' compilation each time")
    parser.add_argument("--keep-best", metavar="METRIC",
                        help="keep the weights whose validation METRIC (e.g. voi_sum) is lowest, the starting ones "
                             "included, as best-model.pt (needs --val-bbox; the config's keep_best_margin sets the "
                             "smallest gain that counts)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="where to train (default: GPU when present)")
    parser.add_argument("--normalize", choices=list(NORMALIZATIONS),
                        help="image intensities: model (the [model] mean/stddev), volume (the training image's own, "
                             "stored in the model file) or clahe (train on the CLAHE-equalised image)")
    parser.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    from ffn.options import InferenceOptions
    from ffn.training import BlockValidator, load_training_config, train
    from volumes.io import open_volume

    model_fields, options = load_training_config(args.config)
    if args.max_steps is not None:
        options.max_steps = args.max_steps
    if args.device is not None:
        options.device = args.device
    if args.keep_best:
        options.keep_best = args.keep_best
    if args.normalize is not None:
        options.normalize = args.normalize
    image_volume, label_volume = open_volume(args.image), open_volume(args.labels)
    if image_volume.shape != label_volume.shape:
        raise InputError(f"image shape {image_volume.shape} differs from label shape {label_volume.shape}")
    whole = image_volume.box
    train_box = Box.parse(args.train_bbox) if args.train_bbox else whole
    if not whole.contains(train_box):
        raise InputError(f"--train-bbox {args.train_bbox} lies outside the volume of shape {whole.shape}")
    image, labels = image_volume.read(train_box), label_volume.read(train_box)
    mask = open_volume(args.mask).read(train_box) if args.mask else None

    held_out, validator = [], None
    if args.val_bbox:
        val_box = Box.parse(args.val_bbox)
        if not whole.contains(val_box):
            raise InputError(f"--val-bbox {args.val_bbox} lies outside the volume of shape {whole.shape}")
        overlap = val_box.intersect(train_box)
        if not overlap.is_empty:
            held_out.append(Box(tuple(np.subtract(overlap.start, train_box.start)), tuple(np.subtract(overlap.stop, train_box.start))))
        inference_options = InferenceOptions(pad_value=options.seed_pad, move_threshold=options.move_threshold,
                                             max_segments=args.val_max_segments, compile=args.val_compile)
        val_image = image_volume.read(val_box)
        if options.normalize == "clahe":  # the network trains on equalised images, so it is validated on one
            from ffn.normalization import clahe

            val_image = clahe(lambda box: val_image[box.slices()], Box.from_shape(val_image.shape))
        validator = BlockValidator(val_image, label_volume.read(val_box),
                                   label_volume.resolution_nm, inference_options)
    record = train(image, labels, args.out, options, model_fields, args.init, mask, held_out, validator,
                   max_minutes=args.max_minutes)
    print(json.dumps(record, indent=2))
    return 0
