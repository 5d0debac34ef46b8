"""Train the synapse detector on the VNC ssTEM stack (sections 0-14) and score it on sections 15-19.

    OMP_NUM_THREADS=1 .venv/bin/python bench/synapse_vnc_eval.py [--iterations 700] [--out-dir /tmp/vnc-synapses]

Uses `connectome synapses train` and `connectome synapses evaluate` exactly as a user would,
at a working resolution of 50 x 18.4 x 18.4 nm (xy averaged down by 4 for CPU speed).
Prints site precision/recall/F1 at 200 and 400 nm on the never-trained sections.
Data: ../shared/data/vnc-gerhard-synapses/stack1 (or $CONNECTOME_DATA).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from cli.main import main as connectome  # noqa: E402
from volumes.errors import InputError  # noqa: E402
from volumes.io import open_volume  # noqa: E402


def mask_source(masks_dir: Path, scratch: Path) -> str:
    """The PNG mask stack itself when volumes.io reads it; otherwise a NumPy copy in scratch (noted)."""
    try:
        open_volume(str(masks_dir), resolution_nm=(50, 4.6, 4.6)).read()
        return str(masks_dir)
    except InputError as exc:
        import numpy as np
        from PIL import Image

        print(f"note: volumes.io cannot read the mask stack ({exc}); using a NumPy copy in {scratch}")
        stack = np.stack([(np.asarray(Image.open(p)) > 0).astype(np.uint8) for p in sorted(masks_dir.glob("*.png"))])
        path = scratch / "vnc_synapse_masks.npy"
        np.save(path, stack)
        return str(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=700)
    parser.add_argument("--out-dir", default=None, help="where the model and report go (default: a temporary directory)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    data = Path(os.environ.get("CONNECTOME_DATA", REPO_ROOT.parent / "shared" / "data")) / "vnc-gerhard-synapses" / "stack1"
    out_dir = Path(args.out_dir or tempfile.mkdtemp(prefix="vnc-synapses-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    synapses = mask_source(data / "synapses", out_dir)
    model, report = out_dir / "vnc_synapses.pt", out_dir / "vnc_eval.json"
    common = ["--image", str(data / "raw"), "--synapses", synapses, "--resolution", "50,4.6,4.6", "--device", args.device]
    started = time.perf_counter()
    status = connectome(["synapses", "train", *common, "--train-sections", "0:15", "--downsample", "1,4,4", "--patch", "8,48,48",
                         "--iterations", str(args.iterations), "--out", str(model)])
    trained = time.perf_counter() - started
    if status:
        return status
    status = connectome(["synapses", "evaluate", *common, "--model", str(model), "--sections", "15:20", "--json", str(report)])
    if status:
        return status
    scores = json.loads(report.read_text())
    print(f"\nVNC stack1, trained on sections 0-14 ({args.iterations} iterations, {trained:.0f} s), evaluated on 15-19:")
    for distance in (200, 400):
        print(f"  at {distance} nm: precision {scores[f'precision_{distance}nm']:.3f}  recall {scores[f'recall_{distance}nm']:.3f}  "
              f"F1 {scores[f'f1_{distance}nm']:.3f}")
    print(f"  {scores['predicted_sites']} sites detected, {scores['true_sites']} true; threshold {scores['threshold']}, "
          f"min size {scores['min_size_voxels']} voxels; report {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
