"""The FIB-25 training protocol: train on z < 150, segment the held-out z >= 150, score beside Google's model.

1. Import Google's published FIB-25 checkpoint (depth 12, FOV 33^3, ~27.5 M steps).
2. Train from scratch on z < 150 for --budget-minutes (Google's recipe, or --scratch-config),
   validating every --scratch-validate-every steps on a block inside that range that training
   never sees (--val-bbox, default z 110-150, x < 125) and keeping the weights that validate best.
3. Fine-tune Google's model on z < 150 for --budget-minutes, validating on the same block and
   keeping the weights that validate best (Google's own included): fine-tuning must not ship a
   regression. bench/fib25_finetune.toml also sets the margin a validation gain must clear.
4. `tune`: for each trained model, segment the validation block at each --tune-move-thresholds
   with each --tune-views (outputs averaged over that many flipped/transposed FOVs) and keep
   the pair that scores best there in NAME/inference.toml (a small network trained for
   minutes is calibrated differently at the FOV faces from Google's: at 0.9 it can stop
   early or run on through boundaries; averaging views cancels part of its errors).
   Google's model keeps Google's settings (--google-views to average its views too).
5. Segment the evaluation block (default z >= 150, the whole 100 x 250 x 250) with each of
   the three models using Google's FIB-25 inference settings (with the tuned move threshold and views),
   and score each against the ground truth: VOI (nats, labelled voxels and all), adapted Rand
   error, ERL/NERL, and per octant against Google's.

Training never sees z >= 150: centres are drawn so that every training patch
(FOV + 2 deltas) lies in z < 150. Everything resumes: rerun with the same --out.
The CPU figures depend on the budget: Google trained for ~27.5 M steps on GPUs;
a CPU budget of minutes to hours buys hundreds to a few thousand steps.

    .venv/bin/python bench/ffn_train_fib25.py --out /tmp/fib25-run --budget-minutes 60
    # smoke test: tiny budget and a small evaluation crop
    .venv/bin/python bench/ffn_train_fib25.py --out /tmp/fib25-smoke --budget-minutes 1 \
        --eval-bbox 150,90,90,250,170,170 --max-segments 5

Stages (--stages, default all of them): `scratch` and `finetune` train, `tune` picks the
move threshold and views on the validation block, `segment`
segments the evaluation block with --models (cached as segmentation-NAME.npz),
`score` scores the cached segmentations (kimimaro for ERL). A GPU machine can run
the training and segmentation stages in parallel processes (bench/gpu_runs.sh) and
this machine the scoring: `--stages score` never trains.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ffn.evaluation import evaluate_segmentation  # noqa: E402
from ffn.inference import segment_subvolume  # noqa: E402
from ffn.model import FFNConfig, load_model, save_model  # noqa: E402
from ffn.options import InferenceOptions, load_options  # noqa: E402
from ffn.skeleton_metrics import expected_run_length, skeletonize_labels  # noqa: E402
from ffn.tf_checkpoint import import_tf_checkpoint  # noqa: E402
from ffn.training import BlockValidator, load_training_config, train  # noqa: E402
from volumes.geometry import Box  # noqa: E402

TRAIN_Z_STOP = 150
VAL_BBOX = f"110,0,0,{TRAIN_Z_STOP},250,125"  # inside z < 150: both trainings leave it out
RESOLUTION_NM = (10.0, 10.0, 10.0)


def data_root() -> Path:
    return Path(os.environ.get("CONNECTOME_DATA", Path(__file__).resolve().parent.parent.parent / "shared" / "data"))


def import_google_model(out: Path) -> Path:
    path = out / "google-fib25.pt"
    if not path.is_file():
        config = FFNConfig()  # depth 12, 32 features, FOV 33^3, deltas 8^3, mean 128, stddev 33
        prefix = data_root() / "ffn-fib25-google" / "models" / "fib25" / "model.ckpt-27465036"
        save_model(path, import_tf_checkpoint(prefix, config), config)
    return path


def segment_block(name: str, model_path: Path, image: np.ndarray, out: Path, options: InferenceOptions) -> Path:
    """Segment the evaluation block with one model, once: the result is cached as segmentation-NAME.npz.

    The cache holds the model file's digest, the move threshold and the averaged views, so weights trained
    further (or retuned) segment again instead of reusing another model's labels.
    """
    seg_path = out / f"segmentation-{name}.npz"
    made_by = {"model_sha256": _file_digest(model_path), "move_threshold": options.move_threshold,
               "averaged_views": options.averaged_views}
    if seg_path.is_file():
        with np.load(seg_path) as data:
            cached = {"averaged_views": 1} | {key: data[key].item() for key in made_by if key in data}
        if "model_sha256" not in cached:
            print(f"reusing {seg_path.name}: made before the cache recorded its model", flush=True)
            return seg_path
        if cached == made_by:
            print(f"reusing {seg_path.name}: same model, move threshold and views", flush=True)
            return seg_path
    model, config = load_model(model_path)
    started = time.perf_counter()
    segmentation, origins = segment_subvolume(image, model, config, options)
    seconds = time.perf_counter() - started
    steps = sum(o.iters for o in origins)
    tmp = seg_path.with_name(seg_path.stem + ".tmp.npz")
    np.savez_compressed(tmp, segmentation=segmentation.astype(np.uint32), ffn_steps=steps, seconds=seconds,
                        device=str(next(model.parameters()).device), **made_by)
    os.replace(tmp, seg_path)
    print(f"segmented with {name}: {steps} FFN steps in {seconds:.1f} s", flush=True)
    return seg_path


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tune_inference(name: str, model_path: Path, validator: BlockValidator, thresholds: list[float],
                   views: list[int], run_dir: Path) -> None:
    """Write run_dir/inference.toml with the move threshold and averaged views that segment the validation block best.

    Chosen on the validation block, never on the evaluation block, by VOI sum over all voxels.
    """
    model, config = load_model(model_path)
    scored = []
    for view_count in views:
        for threshold in thresholds:
            options = replace(validator.inference_options, move_threshold=threshold, averaged_views=view_count)
            trial = BlockValidator(validator.image_block, validator.labels_block, validator.resolution_nm, options,
                                   with_erl=False)
            report = trial(model, config)
            scored.append((report["voi_sum"], threshold, view_count))
            print(f"{name}: move threshold {threshold}, {view_count} view(s): validation VOI sum "
                  f"{report['voi_sum']:.3f}, {100 * report['labelled_fraction']:.1f}% labelled, "
                  f"{report['ffn_steps']} FFN steps", flush=True)
    _, threshold, view_count = min(scored)
    path = run_dir / "inference.toml"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"# chosen on the validation block by bench/ffn_train_fib25.py --stages tune\n"
                   f"[inference]\nmove_threshold = {threshold}\naveraged_views = {view_count}\n")
    os.replace(tmp, path)
    print(f"{name}: move threshold {threshold}, {view_count} view(s) -> {path}", flush=True)


def load_segmentation(seg_path: Path) -> tuple[np.ndarray, dict]:
    """A cached segmentation of the evaluation block and how it was made (FFN steps, seconds, move threshold, views)."""
    if not seg_path.is_file():
        raise SystemExit(f"{seg_path} is missing: run the segment stage for that model first")
    with np.load(seg_path) as data:
        made = {"ffn_steps": int(data["ffn_steps"]), "inference_seconds": float(data["seconds"]),
                "move_threshold": float(data["move_threshold"]) if "move_threshold" in data
                else InferenceOptions().move_threshold,
                "averaged_views": int(data["averaged_views"]) if "averaged_views" in data else 1}
        return data["segmentation"].astype(np.uint64), made


def score_block(name: str, segmentation: np.ndarray, made: dict, labels: np.ndarray, skeletons) -> dict:
    """VOI, adapted Rand error and ERL of one segmentation of the evaluation block."""
    report = evaluate_segmentation(segmentation, labels)
    report.pop("conventions")
    erl = expected_run_length(skeletons, segmentation, RESOLUTION_NM)
    report.update(erl_nm=erl["erl_nm"], nerl=erl["nerl"], n_merged_segments=erl["n_merged_segments"], model=name, **made)
    return report


STAGES = ("scratch", "finetune", "tune", "segment", "score")
MODELS = ("google", "scratch", "finetune")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--budget-minutes", type=float, default=0.0,
                        help="training wall time for EACH of the two trainings (needed by the training stages)")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    parser.add_argument("--models", default=",".join(MODELS), help="models the segment and score stages use")
    parser.add_argument("--scratch-config", help="TOML [model]/[training] for the from-scratch model (default: Google's)")
    parser.add_argument("--finetune-config",
                        help="TOML [training] table for fine-tuning Google's model (default: Google's recipe at lr 3e-5)")
    parser.add_argument("--finetune-learning-rate", type=float,
                        help="learning rate when fine-tuning Google's model (default: the config's, else 3e-5)")
    parser.add_argument("--val-bbox", default=VAL_BBOX,
                        help="validation block of both trainings (inside z < 150, excluded from their training)")
    parser.add_argument("--validate-every", type=int, default=500, help="fine-tuning steps between validations")
    parser.add_argument("--scratch-validate-every", type=int, default=2000,
                        help="from-scratch steps between validations (0: no validation, keep the last weights)")
    parser.add_argument("--checkpoint-every", type=int, default=100, help="training steps between checkpoints")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to train")
    parser.add_argument("--eval-bbox", default=f"{TRAIN_Z_STOP},0,0,250,250,250", help="held-out block to segment and score")
    parser.add_argument("--max-segments", type=int, help="stop each segmentation after this many segments (smoke tests)")
    parser.add_argument("--tune-move-thresholds", default="0.95,0.9,0.8",
                        help="move thresholds the tune stage tries on the validation block")
    parser.add_argument("--tune-views", default="1,4",
                        help="averaged views (1, 2, 4 or 8) the tune stage tries with each move threshold")
    parser.add_argument("--google-views", type=int, default=1,
                        help="averaged views for Google's model (default 1, Google's settings): the same averaging "
                             "the tune stage may give a trained model, for a like-for-like comparison")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compile", action="store_true",
                        help="segment and validate with the compiled network (same labels as eager fp32, faster on CPU)")
    args = parser.parse_args()
    stages = [s for s in args.stages.split(",") if s]
    models = [m for m in args.models.split(",") if m]
    if set(stages) - set(STAGES) or set(models) - set(MODELS):
        parser.error(f"--stages takes {','.join(STAGES)} and --models {','.join(MODELS)}")
    if {"scratch", "finetune"} & set(stages) and args.budget_minutes <= 0:
        parser.error("the training stages need --budget-minutes")

    import torch

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    eval_box = Box.parse(args.eval_bbox)
    if eval_box.start[0] < TRAIN_Z_STOP:
        parser.error(f"the evaluation block must lie in z >= {TRAIN_Z_STOP}, the part training never sees")
    with h5py.File(data_root() / "fib25-training2" / "fib25_training2.h5", "r") as handle:
        image = handle["volumes/raw"][:]
        labels = handle["volumes/labels/neuron_ids"][:]
    train_image, train_labels = image[:TRAIN_Z_STOP], labels[:TRAIN_Z_STOP]
    eval_image, eval_labels = image[eval_box.slices()], labels[eval_box.slices()]
    google = import_google_model(args.out)

    def time_budgeted(options) -> None:
        """The time budget, not a step count, ends each training; the run's checkpoint interval and device."""
        options.max_steps, options.checkpoint_every = 10 ** 9, args.checkpoint_every
        options.log_every, options.device = 10, args.device

    val_box = Box.parse(args.val_bbox)
    if val_box.stop[0] > TRAIN_Z_STOP:
        parser.error(f"--val-bbox must lie in z < {TRAIN_Z_STOP}")
    validator = None
    if "finetune" in stages or ("scratch" in stages and args.scratch_validate_every > 0) or "tune" in stages:
        validator = BlockValidator(image[val_box.slices()], labels[val_box.slices()], RESOLUTION_NM,
                                   InferenceOptions(compile=args.compile), with_erl=False)

    if "scratch" in stages:
        scratch_fields, scratch_options = load_training_config(args.scratch_config)
        time_budgeted(scratch_options)
        scratch_validation = {}
        if args.scratch_validate_every > 0:
            scratch_options.keep_best, scratch_options.validate_every = "voi_sum", args.scratch_validate_every
            scratch_validation = dict(held_out_boxes=[val_box], validator=validator)
        print(f"training from scratch on z < {TRAIN_Z_STOP} for {args.budget_minutes} min", flush=True)
        train(train_image, train_labels, args.out / "scratch", scratch_options, scratch_fields,
              max_minutes=args.budget_minutes, progress=False, **scratch_validation)
    if "finetune" in stages:
        finetune_fields, finetune_options = load_training_config(args.finetune_config)
        if args.finetune_learning_rate is not None:
            finetune_options.learning_rate = args.finetune_learning_rate
        elif args.finetune_config is None:
            finetune_options.learning_rate = 3e-5
        finetune_options.keep_best, finetune_options.validate_every = "voi_sum", args.validate_every
        time_budgeted(finetune_options)
        print(f"fine-tuning Google's model on z < {TRAIN_Z_STOP} for {args.budget_minutes} min, validating on "
              f"{val_box.start}-{val_box.stop}", flush=True)
        train(train_image, train_labels, args.out / "finetune", finetune_options, finetune_fields, init_model=google,
              held_out_boxes=[val_box], validator=validator, max_minutes=args.budget_minutes, progress=False)
    paths = {"google": google, "scratch": _chosen_model(args.out / "scratch"),
             "finetune": _chosen_model(args.out / "finetune")}
    if "tune" in stages:
        thresholds = [float(t) for t in args.tune_move_thresholds.split(",") if t]
        views = [int(v) for v in args.tune_views.split(",") if v]
        for name in models:
            if name != "google" and paths[name].is_file():
                tune_inference(name, paths[name], validator, thresholds, views, args.out / name)
    if "segment" in stages:
        for name in models:
            tuned = args.out / name / "inference.toml"
            options = load_options(tuned if name != "google" and tuned.is_file() else None,
                                   max_segments=args.max_segments, compile=args.compile,
                                   averaged_views=args.google_views if name == "google" else None)
            print(f"segmenting {eval_box.start}-{eval_box.stop} with {name} (move threshold "
                  f"{options.move_threshold}, {options.averaged_views} view(s))", flush=True)
            segment_block(name, paths[name], eval_image, args.out, options)
    if "score" in stages:
        report_scores(args, eval_box, eval_labels, models)


def report_scores(args, eval_box: Box, eval_labels: np.ndarray, models: list[str]) -> None:
    """Score every cached segmentation of the evaluation block, print the table and write summary.json."""
    print(f"skeletonising the evaluation block {eval_box.start}-{eval_box.stop}", flush=True)
    skeletons = skeletonize_labels(eval_labels, RESOLUTION_NM)
    segmentations = {name: load_segmentation(args.out / f"segmentation-{name}.npz") for name in models}
    reports = [score_block(name, *segmentations[name], eval_labels, skeletons) for name in models]
    trained = [name for name in models if name != "google"]
    steps = {name: _last_step(args.out / name) for name in trained}
    chosen = {name: _chosen_step(args.out / name) for name in trained}
    paired = {name: octant_differences(segmentations[name][0], segmentations["google"][0], eval_labels)
              for name in trained if "google" in models}
    summary = {"eval_bbox": [list(eval_box.start), list(eval_box.stop)], "budget_minutes_each": args.budget_minutes,
               "training_steps": steps, "chosen_steps": chosen, "max_segments": args.max_segments, "reports": reports,
               "octants_vs_google": paired}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")

    runs = "; ".join(f"{name}: {steps[name]} steps, weights of step {chosen[name]} segmented" for name in trained)
    print(f"\nheld-out block {eval_box.start}-{eval_box.stop}; batch 4; {runs or 'no trained model'} "
          f"(the last weights, or the best validated)")
    print(f"{'model':>9} {'VOI split':>9} {'VOI merge':>9} {'(labelled)':>10} {'VOI sum':>8} {'ARE':>6} "
          f"{'ERL um':>7} {'NERL':>6} {'merges':>6} {'steps':>6} {'labelled':>8} {'move':>5} {'views':>5}")
    for r in reports:
        print(f"{r['model']:>9} {r['voi_split']:9.3f} {r['voi_merge']:9.3f} "
              f"{r['voi_split_labelled']:5.3f}/{r['voi_merge_labelled']:4.3f} {r['voi_sum']:8.3f} "
              f"{r['adapted_rand_error']:6.3f} {r['erl_nm'] / 1000:7.3f} {r['nerl']:6.3f} {r['n_merged_segments']:6d} "
              f"{r['ffn_steps']:6d} {100 * r['labelled_fraction']:7.1f}% {r['move_threshold']:5.2f} {r['averaged_views']:5d}")
    for name, octants in summary["octants_vs_google"].items():
        for metric, key in (("VOI sum", "voi_sum_differences"), ("ARE", "adapted_rand_error_differences")):
            d = np.asarray(octants[key])
            print(f"{name} - google, {metric} per octant: mean {d.mean():+.3f} (standard error "
                  f"{d.std(ddof=1) / np.sqrt(len(d)):.3f}), better in {(d < 0).sum()} of {len(d)}")
    by_name = {r["model"]: r for r in reports}
    if "google" in by_name:
        google_sum = by_name["google"]["voi_sum"]
        for r in reports:
            if r["model"] != "google":
                print(f"{r['model']}: VOI sum {r['voi_sum'] / google_sum:.2f}x Google's (aim: <= 1.5x for scratch, "
                      f"<= 1.0x fine-tuned; read it with the labelled fraction: an empty segmentation of a block "
                      f"one object dominates scores low)")


def octant_differences(ours: np.ndarray, google: np.ndarray, labels: np.ndarray) -> dict:
    """Model minus Google's VOI sum and adapted Rand error in each octant of the block (negative: better).

    One block's scores say little about a difference of a few percent; eight paired octants
    show whether it is larger than the block-to-block spread.
    """
    halves = [[slice(0, n // 2), slice(n // 2, n)] for n in labels.shape]
    voi, rand = [], []
    for octant in ((z, y, x) for z in halves[0] for y in halves[1] for x in halves[2]):
        a, b = evaluate_segmentation(ours[octant], labels[octant]), evaluate_segmentation(google[octant], labels[octant])
        voi.append(a["voi_sum"] - b["voi_sum"])
        rand.append(a["adapted_rand_error"] - b["adapted_rand_error"])
    return {"voi_sum_differences": voi, "adapted_rand_error_differences": rand}


def _chosen_model(run_dir: Path) -> Path:
    """The weights that validated best when the run validated, else its last weights."""
    best = run_dir / "best-model.pt"
    return best if best.is_file() else run_dir / "model.pt"


def _chosen_step(run_dir: Path) -> int:
    """The training step whose weights _chosen_model returns (step 0 of a fine-tune: the starting weights)."""
    if _chosen_model(run_dir).name == "best-model.pt":
        return json.loads((run_dir / "best.json").read_text())["step"]
    return _last_step(run_dir)


def _last_step(run_dir: Path) -> int:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines() if (run_dir / "metrics.jsonl").is_file() else []
    steps = [json.loads(line)["step"] for line in lines if line.strip()]
    return max(steps, default=0)


if __name__ == "__main__":
    main()
