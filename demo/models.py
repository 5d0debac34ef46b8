"""Train the small FFN and synapse models that `connectome demo` ships for synthetic data.

Run from the repository root (about 10-15 minutes on 2 CPU cores):

    .venv/bin/python -m demo.models [--out-dir .] [--budget-minutes 20]

It writes `ffn/models/synthetic.pt` (+ `synthetic-inference.toml`, the inference options
the demo uses with it) and `synapses/models/synthetic.pt` under --out-dir, and prints the
scores on a held-out synthetic volume as JSON (copy them into the models' README.md).
Everything is seeded: the data (`volumes.synth` seeds below), the FFN's example
sampling and initial weights. The FFN stops at a fixed step count or the time budget,
whichever comes first, so only a slower machine changes the result (the step count
reached is reported).
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

from volumes.synth import synthesize, write_cremi

DEMO_SHAPE = (96, 96, 96)  # demo.build.SYNTHETIC_SHAPE, default 8 nm voxels, as `connectome synth` writes
FFN_TRAIN_SEED = 11
SYNAPSE_TRAIN_SEED = 12
EVALUATION_SEED = 1  # the demo's own synthetic volume; never trained on
FFN_MODEL_FIELDS = {"depth": 3, "features": 16, "fov_size": [17, 17, 17], "deltas": [4, 4, 4]}
FFN_MAX_STEPS = 2412  # what the shipped model reached in its 8-minute budget; a fixed count makes reruns repeat it
SYNAPSE_ITERATIONS = 100
# A demo-sized cube holds only ~4 synapses; the synapse model trains on a wider one (same voxels and density).
SYNAPSE_TRAIN_SHAPE = (96, 192, 192)
# Inference options written beside the FFN model; the demo passes them to `ffn segment`.
FFN_INFERENCE_OPTIONS = {"move_threshold": 0.93, "segment_threshold": 0.6, "min_segment_size": 100,
                         "seed_policy": "PolicyPeaks"}


def _volume(seed: int, directory: Path, shape=DEMO_SHAPE) -> tuple[dict, Path]:
    volume = synthesize(shape, seed)
    path = write_cremi(directory / f"synthetic-{seed}.h5", volume)
    return volume, path


def train_ffn(volume: dict, out: Path, budget_minutes: float) -> dict:
    """Train the FFN from scratch on one synthetic volume; returns the last training record."""
    from ffn.training import TrainingOptions, train

    torch.manual_seed(0)
    options = TrainingOptions(batch_size=4, optimizer="adam", learning_rate=1e-3, min_object_voxels=1000,
                              max_steps=FFN_MAX_STEPS, checkpoint_every=1000, log_every=100, seed=0, device="cpu")
    return train(volume["raw"], volume["neuron_ids"], out, options, model_fields=FFN_MODEL_FIELDS,
                 max_minutes=budget_minutes)


def evaluate_ffn(model_path: Path, options_path: Path, volume: dict) -> dict:
    from ffn.evaluation import evaluate_segmentation
    from ffn.inference import segment_subvolume
    from ffn.model import load_model
    from ffn.options import load_options

    model, config = load_model(model_path)
    started = time.perf_counter()
    segmentation, _ = segment_subvolume(volume["raw"], model, config, load_options(options_path))
    report = evaluate_segmentation(segmentation, volume["neuron_ids"])
    report.pop("conventions")
    report["inference_seconds"] = time.perf_counter() - started
    return report


def train_demo_models(out_dir: str | Path = ".", budget_minutes: float = 20.0) -> dict:
    """Train both demo models into out_dir/{ffn,synapses}/models and score them; returns the scores."""
    from synapses.evaluation import evaluate_model
    from synapses.training import TrainingOptions as SynapseOptions, train as train_synapses

    out = Path(out_dir)
    ffn_dir, synapse_dir = out / "ffn" / "models", out / "synapses" / "models"
    ffn_dir.mkdir(parents=True, exist_ok=True)
    synapse_dir.mkdir(parents=True, exist_ok=True)
    report: dict = {}
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        ffn_volume, _ = _volume(FFN_TRAIN_SEED, scratch)
        started = time.time()
        last = train_ffn(ffn_volume, scratch / "ffn-run", budget_minutes)
        report["ffn_training"] = {**last, "wall_seconds": time.time() - started}
        shutil.copyfile(scratch / "ffn-run" / "model.pt", ffn_dir / "synthetic.pt")
        options_path = ffn_dir / "synthetic-inference.toml"
        options_path.write_text("[inference]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in FFN_INFERENCE_OPTIONS.items()))

        _, synapse_path = _volume(SYNAPSE_TRAIN_SEED, scratch, SYNAPSE_TRAIN_SHAPE)
        started = time.time()
        train_synapses(str(synapse_path) + ":volumes/raw", str(synapse_path), None, None, synapse_dir / "synthetic.pt",
                       SynapseOptions(iterations=SYNAPSE_ITERATIONS, seed=0, device="cpu"))
        report["synapse_training_seconds"] = time.time() - started

        evaluation_volume, evaluation_path = _volume(EVALUATION_SEED, scratch)
        report["ffn_evaluation"] = evaluate_ffn(ffn_dir / "synthetic.pt", options_path, evaluation_volume)
        report["synapse_evaluation"] = evaluate_model(
            str(synapse_dir / "synthetic.pt"), str(evaluation_path) + ":volumes/raw", str(evaluation_path), None, None,
            segmentation_spec=str(evaluation_path) + ":volumes/labels/neuron_ids")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default=".", help="repository root to write ffn/models and synapses/models under")
    parser.add_argument("--budget-minutes", type=float, default=20.0, help="wall-clock cap on FFN training")
    args = parser.parse_args()
    print(json.dumps(train_demo_models(args.out_dir, args.budget_minutes), indent=1, default=float))


if __name__ == "__main__":
    main()
