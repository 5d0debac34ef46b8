"""`connectome evaluate`: score a segmentation against ground truth (VOI, adapted Rand error, ERL)."""
from __future__ import annotations

import argparse

import numpy as np

from ffn.evaluation import evaluate_segmentation
from ffn.skeleton_metrics import ERL_CONVENTION, expected_run_length, skeletonize_labels
from volumes.errors import InputError
from volumes.geometry import Box, parse_zyx
from volumes.atomic import write_json_atomically


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="score a segmentation against ground truth: VOI, adapted Rand error, ERL",
        description="Score a segmentation against dense ground truth. VOI in nats (split = H(seg|gt), merge = "
                    "H(gt|seg), ground-truth id 0 excluded), adapted Rand error, split/merged object counts, and "
                    "skeleton ERL/NERL in the funlib convention on kimimaro skeletons of the ground truth.")
    parser.add_argument("--seg", required=True, help="segmentation volume (any spec `connectome` opens, e.g. result.npz:segmentation)")
    parser.add_argument("--gt", required=True, help="ground-truth label volume (e.g. fib25.h5:volumes/labels/neuron_ids)")
    parser.add_argument("--mask", help="only voxels where this volume is non-zero are scored")
    parser.add_argument("--bbox", help="score only this box z0,y0,x0,z1,y1,x1 of the ground truth; the segmentation "
                                       "is either the whole volume or exactly this box")
    parser.add_argument("--json", dest="json_path", help="also write the full report here")
    parser.add_argument("--resolution-nm", help="voxel size z,y,x in nm when the ground truth does not declare it")
    parser.add_argument("--merge-threshold", type=int, default=0,
                        help="ERL: ignore a segment touching a skeleton with at most this many nodes (default 0)")
    parser.add_argument("--min-overlap-voxels", type=int, default=1000,
                        help="split/merge object counts: overlaps smaller than this are ignored (default 1000)")
    parser.add_argument("--dust-threshold", type=int, default=1000,
                        help="ground-truth objects under this many voxels get no skeleton (default 1000)")
    parser.add_argument("--no-erl", action="store_true", help="skip skeletonisation and ERL")
    parser.set_defaults(func=run_evaluate)


def _read(spec: str, box: Box | None, what: str):
    from volumes.io import open_volume

    volume = open_volume(spec)
    if box is None:
        return volume.read(), volume
    if volume.shape == box.shape:
        return volume.read(), volume
    if not volume.box.contains(box):
        raise InputError(f"{what} {spec} of shape {volume.shape} does not contain the bbox {box.start}-{box.stop}")
    return volume.read(box), volume


def evaluate_volumes(seg_spec: str, gt_spec: str, mask_spec: str | None = None, bbox: Box | None = None,
                     resolution_nm=None, merge_threshold: int = 0, min_overlap_voxels: int = 1000,
                     dust_threshold: int = 1000, with_erl: bool = True, progress: bool = False) -> dict:
    """Read the volumes and return the full report (voxel metrics plus ERL)."""
    ground_truth, gt_volume = _read(gt_spec, bbox, "ground truth")
    segmentation, seg_volume = _read(seg_spec, bbox, "segmentation")
    mask = _read(mask_spec, bbox, "mask")[0] if mask_spec else None
    if segmentation.shape != ground_truth.shape:
        raise InputError(f"segmentation shape {segmentation.shape} differs from ground-truth shape {ground_truth.shape}")
    if resolution_nm is None:
        source = gt_volume if gt_volume.has_resolution else seg_volume if seg_volume.has_resolution else None
        if source is None and with_erl:
            raise InputError("neither volume declares its voxel size; give --resolution-nm z,y,x")
        resolution_nm = source.resolution_nm if source is not None else (1.0, 1.0, 1.0)
    report = evaluate_segmentation(segmentation, ground_truth, mask, min_overlap_voxels)
    report["resolution_nm"] = [float(r) for r in resolution_nm]
    if with_erl:
        if mask is not None:
            ground_truth = np.where(mask != 0, ground_truth, 0)
        skeletons = skeletonize_labels(ground_truth, resolution_nm, dust_threshold_voxels=dust_threshold, progress=progress)
        erl = expected_run_length(skeletons, segmentation, resolution_nm, merge_threshold)
        report.update({key: erl.pop(key) for key in ("erl_nm", "nerl", "n_merged_segments")})
        report["skeletons"] = erl
        report["skeletons"]["dust_threshold_voxels"] = dust_threshold
        report["conventions"]["erl"] = ERL_CONVENTION
    report["inputs"] = {"seg": seg_spec, "gt": gt_spec, "mask": mask_spec,
                        "bbox": None if bbox is None else [list(bbox.start), list(bbox.stop)]}
    return report


def format_report(report: dict) -> str:
    """The human-readable summary printed by the command."""
    lines = [
        f"VOI split {report['voi_split']:.4f}  merge {report['voi_merge']:.4f}  sum {report['voi_sum']:.4f} nats "
        f"(segmentation background as one segment)",
        f"VOI split {report['voi_split_labelled']:.4f}  merge {report['voi_merge_labelled']:.4f}  sum "
        f"{report['voi_sum_labelled']:.4f} nats on the {100 * report['labelled_fraction']:.1f}% of voxels the segmentation labels",
        f"adapted Rand error {report['adapted_rand_error']:.4f} (precision {report['rand_precision']:.4f}, "
        f"recall {report['rand_recall']:.4f})",
        f"{report['n_gt_objects']} ground-truth objects, {report['n_segments']} segments: "
        f"{report['n_split_gt_objects']} split, {report['n_merged_gt_objects']} merged "
        f"(overlaps >= {report['min_overlap_voxels']} voxels)",
    ]
    if "erl_nm" in report:
        skeletons = report["skeletons"]
        lines.append(
            f"ERL {report['erl_nm'] / 1000:.3f} um  NERL {report['nerl']:.4f}  (max ERL {skeletons['max_erl_nm'] / 1000:.3f} um, "
            f"{skeletons['n_skeletons']} skeletons, {skeletons['skeleton_length_nm'] / 1000:.1f} um; "
            f"{report['n_merged_segments']} merging segments, merge threshold {skeletons['merge_threshold_nodes']} nodes)")
    lines.append("conventions:")
    lines.extend(f"  {name}: {text}" for name, text in report["conventions"].items())
    return "\n".join(lines)


def run_evaluate(args: argparse.Namespace) -> int:
    if args.merge_threshold < 0 or args.min_overlap_voxels < 1 or args.dust_threshold < 0:
        raise InputError("--merge-threshold and --dust-threshold must be >= 0, --min-overlap-voxels >= 1")
    report = evaluate_volumes(
        args.seg, args.gt, args.mask, Box.parse(args.bbox) if args.bbox else None,
        parse_zyx(args.resolution_nm, "--resolution-nm", as_float=True) if args.resolution_nm else None,
        args.merge_threshold, args.min_overlap_voxels, args.dust_threshold, not args.no_erl, progress=False)
    print(format_report(report))
    if args.json_path:
        write_json_atomically(args.json_path, report)
    return 0
