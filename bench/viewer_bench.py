"""What each open viewer is sent: the graph protocol against the whole-dataset equivalences it replaced.

    .venv/bin/python bench/viewer_bench.py [--viewers 8] [--neurons-per-viewer 20] [--edits 120] [--synapses 2000000]

Builds a throwaway workspace from the FIB-25 cube and its oversegmentation (3,051 supervoxels;
../shared/data or $CONNECTOME_DATA), opens N viewers' graph websockets (as Neuroglancer's nggraph
client speaks it, tests/test_server_api.py's GraphWatcher), each showing K neurons, then makes
merges over the HTTP API: every other one joins a neuron some viewer shows to a neighbour, the
rest join neurons no viewer shows.

Prints, for opening and per edit: websocket bytes sent to all viewers, against the baseline
measured in the same run, the JSON of the whole dataset's equivalence list that the previous
design sent every viewer at open and after every edit (store.equivalence_groups as of that
edit, times N), with the CPU it took to build; the latency from the merge's HTTP answer to the
viewer that shows the neuron hearing of it (p50/p99, target <= 1 s); how many viewers were sent
anything for an edit of a neuron nobody shows (target 0); server-side CPU and peak RSS.

Then the synapse annotation source (server/synapse_source.py) over a generated set of
--synapses synapses on 10^6 supervoxels: time and memory to build its index, the time to answer
one neuron's related-segment requests (one per supervoxel, as the client asks) and a spatial cell,
against the baseline of the same run: the viewer-state JSON of the local ellipsoid layers the
previous design put in every viewer (capped at 20,000 synapses).
"""
from __future__ import annotations

import argparse
import json
import queue
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "bench"))
sys.path.insert(0, str(REPO_ROOT / "tests"))


def equivalences_json_bytes(proofreading_store) -> tuple[int, float]:
    """Size of the whole-dataset equivalence list as the old design sent it, and the CPU s to build it."""
    from db import store

    started = time.process_time()
    text = json.dumps([[str(sv) for sv in group] for group in store.equivalence_groups(proofreading_store)])
    return len(text), time.process_time() - started


def drain(watcher, timeout_s: float = 0.0) -> list[dict]:
    messages = []
    try:
        while True:
            messages.append(watcher.receive(timeout_s))
            timeout_s = 0.0
    except queue.Empty:
        return messages


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--viewers", type=int, default=8)
    parser.add_argument("--neurons-per-viewer", type=int, default=20)
    parser.add_argument("--edits", type=int, default=120)
    parser.add_argument("--synapses", type=int, default=2_000_000)
    args = parser.parse_args()

    from server_bench import build_workspace_with_users, fib25_h5_path
    from test_server_api import GraphWatcher, graph_session

    from db import store
    from server.app import ProofreadingServer
    from server.neuron_graph import root_of_segment

    fib25_h5 = fib25_h5_path("viewer_bench")
    if fib25_h5 is None:
        return 2
    rng = random.Random(0)
    with tempfile.TemporaryDirectory(prefix="viewer-bench-") as directory:
        print("building a FIB-25 workspace ...", flush=True)
        workspace, supervoxels, tokens, pairs = build_workspace_with_users(Path(directory) / "ws", fib25_h5, args.viewers, "viewer")
        neighbours: dict[int, list[int]] = {}
        for a, b in pairs:
            neighbours.setdefault(a, []).append(b)
            neighbours.setdefault(b, []).append(a)
        server = ProofreadingServer(workspace, port=0)
        watchers = []
        try:
            shown = [rng.sample(supervoxels, args.neurons_per_viewer) for _ in range(args.viewers)]
            cpu_before = time.process_time()
            for token, anchors in zip(tokens, shown):
                watcher = GraphWatcher(f"ws://127.0.0.1:{server.port}/graph/watch/{graph_session(server, token)}")
                for supervoxel in anchors:
                    watcher.watch(supervoxel)
                watchers.append(watcher)
            for watcher, anchors in zip(watchers, shown):
                for _ in anchors:
                    assert watcher.receive(10)["state"] == "ok"
            open_bytes, open_cpu = server.graph.bytes_sent, time.process_time() - cpu_before
            baseline_open, baseline_open_cpu = equivalences_json_bytes(server.store)
            print(f"{args.viewers} viewers x {args.neurons_per_viewer} neurons; {len(supervoxels)} supervoxels, "
                  f"{len(pairs)} adjacent pairs; {args.edits} merges ...", flush=True)

            headers = [{"Authorization": f"Bearer {token}"} for token in tokens]
            latencies, stray, sent, baseline_sent, baseline_cpu, follow_cpu = [], 0, [], [], [], 0.0
            for edit in range(args.edits):
                watched = edit % 2 == 0
                viewer = edit % args.viewers
                shown_supervoxels = {sv for anchors in shown for sv in anchors}
                shown_roots = set(store.roots_of(server.store, sorted(shown_supervoxels)).values())
                if watched:
                    a = rng.choice(shown[viewer])
                    candidates = [b for b in neighbours.get(a, []) if store.root_of(server.store, b) != store.root_of(server.store, a)]
                else:
                    a = rng.choice(supervoxels)
                    candidates = [b for b in neighbours.get(a, []) if store.root_of(server.store, a) not in shown_roots
                                  and store.root_of(server.store, b) not in shown_roots | {store.root_of(server.store, a)}]
                if not candidates:
                    continue
                before = server.graph.bytes_sent
                cpu = time.process_time()
                answer = requests.post(f"{server.url}/api/edits/merge", json={"supervoxels": [str(a), str(candidates[0])]},
                                       headers=headers[viewer], timeout=30)
                answered = time.perf_counter()
                answer.raise_for_status()
                if watched:
                    message = watchers[viewer].receive(5)
                    latencies.append(time.perf_counter() - answered)
                    assert message["state"] == "ok" and root_of_segment(int(message["info"]["id"])) is not None
                time.sleep(0.3)  # past the server's 0.25 s follow interval: every message of this edit is out
                follow_cpu += time.process_time() - cpu
                for index, watcher in enumerate(watchers):
                    extra = drain(watcher)
                    if not watched:
                        stray += bool(extra)
                sent.append(server.graph.bytes_sent - before)
                size, build_cpu = equivalences_json_bytes(server.store)
                baseline_sent.append(size * args.viewers)
                baseline_cpu.append(build_cpu)
        finally:
            for watcher in watchers:
                watcher.close()
            server.close()

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lat_ms = np.asarray(latencies) * 1000
    print(f"\nat open:  graph protocol {open_bytes:,} B to {args.viewers} viewers ({open_cpu:.2f} s CPU) vs "
          f"whole equivalences {baseline_open * args.viewers:,} B ({baseline_open_cpu * 1000:.1f} ms CPU to build once): "
          f"{baseline_open * args.viewers / max(open_bytes, 1):.1f}x fewer bytes")
    print(f"per edit: graph protocol mean {np.mean(sent):,.0f} B (max {max(sent):,}) to all viewers vs whole equivalences "
          f"mean {np.mean(baseline_sent):,.0f} B (the last edit {baseline_sent[-1]:,} B; building it {np.mean(baseline_cpu) * 1000:.1f} ms CPU "
          f"per edit): {np.mean(baseline_sent) / max(np.mean(sent), 1):.1f}x fewer bytes")
    print(f"edit to the viewer that shows the neuron: p50 {np.percentile(lat_ms, 50):.0f} ms, p99 {np.percentile(lat_ms, 99):.0f} ms, "
          f"max {lat_ms.max():.0f} ms over {len(latencies)} edits (target <= 1000 ms)")
    print(f"edits of neurons nobody shows that sent any viewer anything: {stray} of {len(sent) - len(latencies)} (target 0)")
    print(f"process CPU per edit (HTTP client, server, watchers in one process): {follow_cpu / max(len(sent), 1) * 1000:.1f} ms; "
          f"peak RSS {peak_mb:.0f} MB")
    synapse_source_figures(args.synapses)
    return 0 if stray == 0 and len(latencies) and lat_ms.max() <= 1000 else 1


def synapse_source_figures(count: int, supervoxels: int = 1_000_000, neuron_supervoxels: int = 1_000) -> None:
    """Index build, lookups and bytes of the synapse source against the ellipsoids-in-the-state baseline."""
    import neuroglancer
    from neuroglancer.json_utils import json_encoder_default

    from server.synapse_source import SynapseIndex

    rng = np.random.default_rng(0)
    extent_zyx = np.array([20_000.0, 80_000.0, 80_000.0])  # a 20 x 80 x 80 um volume, nm
    centres = rng.uniform(0, extent_zyx, (count, 3))
    columns = {"id": np.arange(1, count + 1), "ctr": centres, "pre": centres - 20, "post": centres + 20,
               "pre_sv": rng.integers(1, supervoxels + 1, count), "post_sv": rng.integers(1, supervoxels + 1, count),
               "score": rng.random(count), "size": rng.integers(1, 500, count).astype(np.float64)}
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    wall, cpu = time.perf_counter(), time.process_time()
    index = SynapseIndex(columns, 40.0, (np.zeros(3), extent_zyx[::-1]))
    build_wall, build_cpu = time.perf_counter() - wall, time.process_time() - cpu
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    neuron = rng.choice(supervoxels, neuron_supervoxels, replace=False) + 1
    wall, cpu, answered, found = time.perf_counter(), time.process_time(), 0, 0
    for supervoxel in neuron:  # the client asks once per supervoxel, per relationship, per layer
        for relationship in ("pre_segment", "post_segment"):
            body = index.encode_many("pre", index.related(relationship, np.array([supervoxel])))
            answered += len(body)
            found += int(np.frombuffer(body[:8], "<u8")[0])
    lookup_wall, lookup_cpu = time.perf_counter() - wall, time.process_time() - cpu
    levels = index.info("pre")["spatial"]
    wall = time.perf_counter()
    cell = index.encode_many("pre", index.cell("pre", len(levels) - 1, (0, 0, 0)))
    cell_ms = (time.perf_counter() - wall) * 1000
    shown = min(count, 20_000)  # the previous design's cap
    wall, cpu = time.perf_counter(), time.process_time()
    state = neuroglancer.LocalAnnotationLayer(
        dimensions=neuroglancer.CoordinateSpace(names=["x", "y", "z"], units="nm", scales=[8, 8, 8]),
        annotations=[neuroglancer.EllipsoidAnnotation(id=f"pre-{i}", center=(centres[i][::-1] / 8).tolist(), radii=[5, 5, 5],
                                                      segments=[[int(columns["pre_sv"][i])], [int(columns["post_sv"][i])]])
                     for i in range(shown)])
    baseline_bytes = 2 * len(json.dumps(state.to_json(), default=json_encoder_default))  # pre and post layers
    baseline_cpu = 2 * (time.process_time() - cpu)
    print(f"\nsynapse source, {count:,} synapses on {supervoxels:,} supervoxels: index built in {build_wall:.1f} s "
          f"({build_cpu:.1f} s CPU), peak RSS {rss_before:.0f} -> {rss_after:.0f} MB, {len(levels)} spatial levels")
    print(f"  a neuron of {neuron_supervoxels:,} supervoxels: {2 * neuron_supervoxels:,} related-segment answers, "
          f"{found:,} synapses, {answered:,} B, {lookup_wall * 1000:.0f} ms ({lookup_cpu * 1000:.0f} ms CPU) "
          f"for one layer; a finest-level spatial cell {len(cell):,} B in {cell_ms:.1f} ms")
    print(f"  viewer state: 0 B per synapse vs the previous design's local ellipsoid layers {baseline_bytes:,} B "
          f"for {shown:,} of them in every viewer's state ({baseline_cpu:.1f} s CPU to build), sent at open and "
          f"with every state push")


if __name__ == "__main__":
    sys.exit(main())
