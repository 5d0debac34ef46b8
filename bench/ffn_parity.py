"""Parity with Google's published FFN segmentation of the whole fib25_training2 cube (250^3).

Imports Google's FIB-25 checkpoint with our reader, runs our fp32 inference with
Google's settings (configs/inference_training_sample2.pbtxt) through
`connectome ffn segment` in a work directory (resumable: rerun the same command
after an interruption), then compares with Google's result:

- every segment we made (default: the first 20, --max-segments): same id, seed and
  step count as published-origins.json, IoU with Google's segment of that id >= 0.99;
  the first divergence is reported with its seed;
- with --complete (about 25,800 FFN steps, hours on 2 cores): the adapted Rand error
  of ours against Google's result (<= 0.02), and VOI to neuron_ids on the voxels each
  result labels, against Google's (0.42 split, 0.18 merge), within 0.03 nats.

Usage: .venv/bin/python bench/ffn_parity.py [--max-segments 20 | --complete] [--workdir DIR] [--threads 2]

--direct runs the same import and inference through the ffn package without a
workspace or the CLI (for a GPU machine that lacks the full install), --save-npz
keeps the result, and --load-npz scores a result saved elsewhere:
    python3 bench/ffn_parity.py --complete --direct --save-npz /tmp/complete.npz   # on the GPU machine
    .venv/bin/python bench/ffn_parity.py --complete --load-npz complete.npz         # here
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ffn.evaluation import evaluate_segmentation  # noqa: E402

DATA = Path(os.environ.get("CONNECTOME_DATA", Path(__file__).resolve().parent.parent.parent / "shared" / "data"))
GOOGLE = DATA / "ffn-fib25-google"
FIB25 = DATA / "fib25-training2/fib25_training2.h5"
IOU_MIN, RAND_MAX, VOI_TOLERANCE = 0.99, 0.02, 0.03


def run(workdir: Path, out: str, max_segments: int | None, threads: int) -> tuple[np.ndarray, dict]:
    """`connectome ffn import-tf` and `connectome ffn segment` in a workspace under `workdir` (resumable)."""
    from cli.main import main as connectome
    from volumes.workspace import Workspace

    workspace = Workspace.init(workdir / "workspace")
    model = workdir / "fib25.pt"
    config = GOOGLE / "configs/inference_training_sample2.pbtxt"
    if not model.exists():
        assert connectome(["ffn", "import-tf", str(GOOGLE / "models/fib25/model.ckpt-27465036"),
                           "--config", str(config), "--out", str(model)]) == 0
    argv = ["ffn", "segment", "--workspace", str(workspace.root), "--image", f"{FIB25}:volumes/raw",
            "--model", str(model), "--out", out, "--options", str(config), "--threads", str(threads), "--overwrite"]
    if max_segments:
        argv += ["--max-segments", str(max_segments)]
    if connectome(argv) != 0:
        raise SystemExit("segmentation failed")
    from volumes.io import open_volume

    labels = open_volume(workspace.layer_url(out)).read()
    return labels, json.loads((workspace.root / "ffn-runs" / out / "origins.json").read_text())


class _OutOfTime(Exception):
    pass


def run_direct(max_segments: int | None, threads: int, max_minutes: float | None) -> tuple[np.ndarray, dict]:
    """The same import and fp32 inference as `connectome ffn segment`, called as a library (GPU when present).

    With `max_minutes` the run stops after the segment that crosses the deadline
    and returns what it has (`complete` false): its first segments can still be checked.
    """
    import hashlib
    import time

    import h5py
    import torch

    from ffn.forward import ForwardRunner
    from ffn.inference import Canvas, run_canvases
    from ffn.model import FFNConfig
    from ffn.options import load_options, model_args_from_request, read_pbtxt
    from ffn.tf_checkpoint import google_weights_to_model, read_tf_checkpoint

    torch.set_num_threads(threads)
    config_path = GOOGLE / "configs/inference_training_sample2.pbtxt"
    config = FFNConfig(**model_args_from_request(read_pbtxt(config_path)))
    options = load_options(config_path)
    options.max_segments = max_segments
    model = google_weights_to_model(read_tf_checkpoint(GOOGLE / "models/fib25/model.ckpt-27465036"), config)
    with h5py.File(FIB25, "r") as f:
        image = f["volumes/raw"][...]
    started = time.time()
    deadline = started + 60 * max_minutes if max_minutes else None

    def stop_when_late(_: Canvas) -> None:
        if deadline is not None and time.time() > deadline:
            raise _OutOfTime

    canvas = Canvas(image, config, options)
    canvas.compute_seeds()
    digest = hashlib.sha256(np.ascontiguousarray(canvas.seed_coords, dtype=np.int64).tobytes()).hexdigest()[:12]
    print(f"{len(canvas.seed_coords)} seeds (coordinates sha256 {digest})", flush=True)
    forward = ForwardRunner(model, "fp32", options.channels_last)
    try:
        run_canvases([canvas.run(stop_when_late)], forward)
    except _OutOfTime:
        print(f"stopped at the {max_minutes}-minute limit after {len(canvas.origins)} segments", flush=True)
    device = "cuda: " + torch.cuda.get_device_name() if forward.device.type == "cuda" else "cpu"
    return canvas.labels(), {"steps": canvas.steps, "seconds": round(time.time() - started, 1), "device": device,
                             "complete": canvas.seed_index >= len(canvas.seed_coords),
                             "segments": [o.to_dict() for o in canvas.origins.values()]}


def compare_segments(ours: np.ndarray, origins: dict, google: np.ndarray, published: list[dict]) -> bool:
    """Segment-by-segment check against Google's published segments; prints the first divergence."""
    by_id = {o["id"]: o for o in published}
    ok = True
    print(f"{'id':>4} {'seed (ours)':>16} {'seed (Google)':>16} {'steps':>11} {'IoU':>7}")
    for segment in origins["segments"]:
        expected = by_id.get(segment["id"])
        a = ours == segment["id"]
        b = google == segment["id"]
        iou = float((a & b).sum() / max((a | b).sum(), 1))
        same = expected is not None and segment["start_zyx"] == expected["start_zyx"] and segment["iters"] == expected["iters"]
        good = same and iou >= IOU_MIN
        print(f"{segment['id']:>4} {str(segment['start_zyx']):>16} {str(expected and expected['start_zyx']):>16} "
              f"{segment['iters']:>5}/{expected and expected['iters']!s:>5} {iou:7.4f} {'' if good else '<-- differs'}")
        if not good and ok:
            print(f"first divergence: segment {segment['id']} seeded at {segment['start_zyx']} (z, y, x)")
        ok &= good
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-segments", type=int, default=20)
    parser.add_argument("--complete", action="store_true", help="segment the whole cube (hours) and score it")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/connectome-ffn-parity"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--direct", action="store_true", help="run through the ffn package, not the CLI and a workspace")
    parser.add_argument("--max-minutes", type=float, help="with --direct: stop after this long, keep what is done")
    parser.add_argument("--save-npz", type=Path, help="write our segmentation and origins here")
    parser.add_argument("--load-npz", type=Path, help="score a segmentation saved by --save-npz instead of running")
    args = parser.parse_args()
    max_segments = None if args.complete else args.max_segments
    if args.load_npz:
        with np.load(args.load_npz) as saved:
            ours, origins = saved["segmentation"].astype(np.uint64), json.loads(str(saved["origins"]))
    elif args.direct:
        ours, origins = run_direct(max_segments, args.threads, args.max_minutes)
    else:
        args.workdir.mkdir(parents=True, exist_ok=True)
        out = "ffn_complete" if args.complete else f"ffn_first{args.max_segments}"
        ours, origins = run(args.workdir, out, max_segments, args.threads)
    if args.save_npz:
        tmp = args.save_npz.with_name(args.save_npz.stem + ".tmp.npz")
        np.savez_compressed(tmp, segmentation=ours.astype(np.uint32), origins=json.dumps(origins))
        os.replace(tmp, args.save_npz)
    google = np.load(GOOGLE / "results/fib25/sample-training2.npz")["segmentation"].astype(np.uint64)
    published = json.loads((GOOGLE / "reference-runs/published-origins.json").read_text())
    print(f"ours ({origins.get('device', 'cpu')}): {len(origins['segments'])} segments, {origins['steps']} FFN steps, {origins['seconds']} s "
          f"({origins['seconds'] / max(origins['steps'], 1):.3f} s/step)")
    segments_ok = compare_segments(ours, origins, google, published) and bool(origins["segments"])
    summary = [f"segments {'all match' if segments_ok else 'DIFFER'} (ids, seeds, steps, IoU >= {IOU_MIN})"]
    if args.complete and not origins.get("complete", True):
        summary.append("the run stopped before its last seed: whole-cube Rand error and VOI not scored")
    elif args.complete:
        import h5py

        with h5py.File(FIB25, "r") as f:
            truth = f["volumes/labels/neuron_ids"][...]
        rand = evaluate_segmentation(ours, google)["adapted_rand_error"]
        mine = evaluate_segmentation(ours, truth)
        theirs = evaluate_segmentation(google, truth)
        split_gap = abs(mine["voi_split_labelled"] - theirs["voi_split_labelled"])
        merge_gap = abs(mine["voi_merge_labelled"] - theirs["voi_merge_labelled"])
        summary.append(f"adapted Rand error vs Google's result {rand:.4f} (target <= {RAND_MAX}): "
                       f"{'ok' if rand <= RAND_MAX else 'FAIL'}")
        summary.append(f"VOI to neuron_ids on labelled voxels: ours split {mine['voi_split_labelled']:.3f} merge "
                       f"{mine['voi_merge_labelled']:.3f}; Google's split {theirs['voi_split_labelled']:.3f} merge "
                       f"{theirs['voi_merge_labelled']:.3f}: {'ok' if max(split_gap, merge_gap) <= VOI_TOLERANCE else 'FAIL'}"
                       f" (within {VOI_TOLERANCE})")
    print("\nSummary:\n  " + "\n  ".join(summary))


if __name__ == "__main__":
    main()
