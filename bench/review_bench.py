"""A simulated proofreader works the merge review queue: does the queue's order pay?

    .venv/bin/python bench/review_bench.py [--every 50] [--png bench/figures/review_queue_voi.png]

On the FIB-25 cube's oversegmentation (`neuroproof_oversegmentation`, 3,051 supervoxels) an
oracle answers each merge candidate from the ground truth (`neuron_ids`): accept when both
supervoxels' majority neuron is the same labelled neuron, reject otherwise. It works through
`connectome review`'s queue (next task, answer), and, in the same run, through the same
candidates in a random order (a pair already joined is passed over, as the queue closes it).
Prints VOI (split, merge, on labelled voxels) of the agglomeration against `neuron_ids` every
`--every` decisions, and how many decisions each order needs to reach half of the achievable
VOI reduction. Target: the queue needs at most 1/3 of random order's decisions. Plots both curves.
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "bench"))

RESOLUTION_NM = (10.0, 10.0, 10.0)


class Oracle:
    """Ground-truth answers and VOI of an agglomeration, from the supervoxel x neuron voxel counts."""

    def __init__(self, supervoxels_zyx: np.ndarray, truth_zyx: np.ndarray):
        labelled = truth_zyx.ravel() != 0
        sv, gt = supervoxels_zyx.ravel()[labelled].astype(np.int64), truth_zyx.ravel()[labelled].astype(np.int64)
        keep = sv != 0
        pairs, counts = np.unique(np.stack([sv[keep], gt[keep]]), axis=1, return_counts=True)
        self.sv, self.gt, self.counts = pairs[0], pairs[1], counts.astype(np.float64)
        majority: dict[int, tuple[float, int]] = {}
        for s, g, c in zip(self.sv.tolist(), self.gt.tolist(), self.counts.tolist()):
            if c > majority.get(s, (0.0, 0))[0]:
                majority[s] = (c, g)
        self.neuron_of = {s: g for s, (_, g) in majority.items()}

    def same_neuron(self, a: int, b: int) -> bool:
        return a in self.neuron_of and self.neuron_of.get(a) == self.neuron_of.get(b)

    def voi(self, root_of: dict[int, int]) -> tuple[float, float]:
        """(split, merge) in nats: H(agglomeration | truth), H(truth | agglomeration), labelled voxels only."""
        roots = np.array([root_of[s] for s in self.sv.tolist()], dtype=np.int64)
        key_r, inverse_r = np.unique(roots, return_inverse=True)
        key_g, inverse_g = np.unique(self.gt, return_inverse=True)
        joint = np.zeros((len(key_r), len(key_g)))
        np.add.at(joint, (inverse_r, inverse_g), self.counts)
        p = joint / joint.sum()
        p_r, p_g = p.sum(1, keepdims=True), p.sum(0, keepdims=True)
        nz = p > 0
        split = -np.sum(p[nz] * np.log((p / p_g)[nz]))
        merge = -np.sum(p[nz] * np.log((p / p_r)[nz]))
        return float(split), float(merge)


def fresh_store(directory: Path, name: str, labels: np.ndarray):
    from db import store

    proofreading = store.open_store(f"sqlite:///{directory}/{name}.db")
    store.build_graph(proofreading, labels, RESOLUTION_NM)
    store.add_user(proofreading, "oracle", "proofreader")
    return proofreading


def work_queue(proofreading, oracle: Oracle, supervoxels: list[int], every: int) -> list[tuple[int, float, float]]:
    from db import store

    store.build_merge_queue(proofreading, limit=10**7)
    curve = [(0, *oracle.voi(store.roots_of(proofreading, supervoxels)))]
    decisions = 0
    while (task := store.next_task(proofreading, "oracle")) is not None:
        answer = "accept" if oracle.same_neuron(*task.supervoxels) else "reject"
        store.answer_task(proofreading, task.id, "oracle", answer)
        decisions += 1
        if decisions % every == 0:
            curve.append((decisions, *oracle.voi(store.roots_of(proofreading, supervoxels))))
    curve.append((decisions, *oracle.voi(store.roots_of(proofreading, supervoxels))))
    return curve


def work_random(proofreading, oracle: Oracle, supervoxels: list[int], pairs: list[tuple[int, int]],
                every: int, seed: int) -> list[tuple[int, float, float]]:
    from db import store

    order = list(pairs)
    random.Random(seed).shuffle(order)
    curve = [(0, *oracle.voi(store.roots_of(proofreading, supervoxels)))]
    decisions = 0
    for a, b in order:
        roots = store.roots_of(proofreading, [a, b])
        if roots[a] == roots[b]:
            continue  # joined meanwhile: nothing to ask (the queue closes these too)
        if oracle.same_neuron(a, b):
            store.merge(proofreading, a, b, "oracle")
        decisions += 1
        if decisions % every == 0:
            curve.append((decisions, *oracle.voi(store.roots_of(proofreading, supervoxels))))
    curve.append((decisions, *oracle.voi(store.roots_of(proofreading, supervoxels))))
    return curve


def decisions_to_half(curve: list[tuple[int, float, float]], start: float, end: float) -> int:
    goal = start - 0.5 * (start - end)
    return next(d for d, split, merge in curve if split + merge <= goal)


def plot(curves: dict[str, list], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.4, 3.6), dpi=110)
    for name, curve in curves.items():
        decisions = [d for d, _, _ in curve]
        axis.plot(decisions, [s + m for _, s, m in curve], label=f"{name}: VOI sum")
        axis.plot(decisions, [s for _, s, _ in curve], linestyle=":", label=f"{name}: split")
    axis.set_xlabel("decisions (merge candidates answered)")
    axis.set_ylabel("VOI to neuron_ids (nats)")
    axis.set_title("FIB-25 oversegmentation, oracle reviewer")
    axis.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--every", type=int, default=50, help="VOI every this many decisions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--png", type=Path, default=REPO_ROOT / "bench" / "figures" / "review_queue_voi.png")
    args = parser.parse_args()
    from server_bench import fib25_h5_path

    fib25_h5 = fib25_h5_path("review_bench")
    if fib25_h5 is None:
        return 2
    with h5py.File(fib25_h5, "r") as f:
        labels = f["volumes/labels/neuroproof_oversegmentation"][:]
        truth = f["volumes/labels/neuron_ids"][:]
    oracle = Oracle(labels, truth)
    supervoxels = [int(v) for v in np.unique(labels) if v]
    with tempfile.TemporaryDirectory(prefix="review-bench-") as directory:
        queued = fresh_store(Path(directory), "queue", labels)
        started, cpu = time.perf_counter(), time.process_time()
        queue_curve = work_queue(queued, oracle, supervoxels, args.every)
        queue_s, queue_cpu = time.perf_counter() - started, time.process_time() - cpu
        with queued.engine.connect() as connection:
            pairs = [tuple(map(int, row)) for row in connection.exec_driver_sql("SELECT sv_a, sv_b FROM review_tasks")]
        queued.close()
        shuffled = fresh_store(Path(directory), "random", labels)
        started, cpu = time.perf_counter(), time.process_time()
        random_curve = work_random(shuffled, oracle, supervoxels, pairs, args.every, args.seed)
        random_s, random_cpu = time.perf_counter() - started, time.process_time() - cpu
        shuffled.close()
    start = sum(queue_curve[0][1:])
    end = min(sum(queue_curve[-1][1:]), sum(random_curve[-1][1:]))
    print(f"{len(supervoxels)} supervoxels, {len(pairs)} merge candidates; VOI sum at the start {start:.3f}, "
          f"after every answer {sum(queue_curve[-1][1:]):.3f} (queue) / {sum(random_curve[-1][1:]):.3f} (random)")
    print(f"\n{'decisions':>9s}  {'queue split':>11s} {'merge':>6s} {'sum':>6s}   {'random split':>12s} {'merge':>6s} {'sum':>6s}")
    by_decision = {d: (s, m) for d, s, m in random_curve}
    for d, s, m in queue_curve:
        other = by_decision.get(d)
        right = f"{other[0]:12.3f} {other[1]:6.3f} {sum(other):6.3f}" if other else ""
        print(f"{d:9d}  {s:11.3f} {m:6.3f} {s + m:6.3f}   {right}")
    for d, s, m in random_curve:
        if d > queue_curve[-1][0]:
            print(f"{d:9d}  {'':11s} {'':6s} {'':6s}   {s:12.3f} {m:6.3f} {s + m:6.3f}")
    queue_half, random_half = decisions_to_half(queue_curve, start, end), decisions_to_half(random_curve, start, end)
    ratio = queue_half / random_half
    print(f"\nhalf of the achievable VOI reduction: queue after {queue_half} decisions, random after {random_half}: "
          f"{ratio:.3f} of random's (target <= 0.333: {'met' if ratio <= 1 / 3 else 'NOT met'})")
    print(f"decisions in all: queue {queue_curve[-1][0]}, random {random_curve[-1][0]}; "
          f"time: queue {queue_s:.0f} s [cpu {queue_cpu:.0f} s], random {random_s:.0f} s [cpu {random_cpu:.0f} s]")
    plot({"review queue": queue_curve, "random order": random_curve}, args.png)
    print(f"plot: {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
