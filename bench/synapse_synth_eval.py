"""Synapse partner F1 with direction on synthetic EM: train on one seed, pick the site size on another, test on a third.

    .venv/bin/python bench/synapse_synth_eval.py [--out-dir /tmp/synth-synapses]

Everything goes through the CLI: `connectome synth` (10 nm voxels), `synapses train` at
20 nm (600 iterations, then 400 more at a lower learning rate from that model), and
`synapses evaluate` with the synthetic neuron ids as the segmentation. The minimum site
size (the model's, or twice it) is chosen on the validation seed only.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cli.main import main as connectome  # noqa: E402
from synapses.model import load_model  # noqa: E402


def run(argv: list[str]) -> None:
    status = connectome(argv)
    if status:
        raise SystemExit(status)


def evaluate(model: Path, volume: Path, min_size: int, report: Path) -> dict:
    run(["synapses", "evaluate", "--model", str(model), "--image", f"{volume}:volumes/raw", "--synapses", str(volume),
         "--segmentation", f"{volume}:volumes/labels/neuron_ids", "--min-size", str(min_size), "--json", str(report)])
    return json.loads(report.read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default=None)
    args = parser.parse_args()
    out = Path(args.out_dir or tempfile.mkdtemp(prefix="synth-synapses-"))
    out.mkdir(parents=True, exist_ok=True)
    volumes = {}
    for name, seed, size in (("train", 11, 160), ("validation", 13, 128), ("test", 12, 128)):
        volumes[name] = out / f"{name}.h5"
        run(["synth", str(volumes[name]), "--shape", f"{size},{size},{size}", "--seed", str(seed),
             "--resolution", "10,10,10", "--synapses-per-cubic-um", "12"])
    common = ["synapses", "train", "--image", f"{volumes['train']}:volumes/raw", "--synapses", str(volumes["train"]),
              "--downsample", "2,2,2", "--patch", "24,24,24"]
    first, model = out / "synth_first.pt", out / "synth.pt"
    run([*common, "--iterations", "600", "--out", str(first)])
    run([*common, "--iterations", "400", "--learning-rate", "1e-3", "--seed", "1", "--initial-model", str(first), "--out", str(model)])
    default_size = load_model(model).min_size_voxels
    scores = {size: evaluate(model, volumes["validation"], size, out / f"validation_{size}.json")["partner_f1"]
              for size in (default_size, 2 * default_size)}
    chosen = max(scores, key=scores.get)
    test = evaluate(model, volumes["test"], chosen, out / "test.json")
    print(f"\nsynthetic EM, trained on seed 11, min site size {chosen} voxels chosen on seed 13 "
          f"(partner F1 there {scores[chosen]:.3f}), tested on seed 12:")
    print(f"  partner (directed) precision {test['partner_precision']:.3f}  recall {test['partner_recall']:.3f}  F1 {test['partner_f1']:.3f}")
    print(f"  sites at 200 nm: precision {test['precision_200nm']:.3f}  recall {test['recall_200nm']:.3f}  F1 {test['f1_200nm']:.3f}"
          f"  ({test['predicted_sites']} detected, {test['true_sites']} true)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
