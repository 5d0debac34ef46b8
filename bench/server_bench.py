"""Proofreading server throughput: merge latency through the HTTP API vs the store called in-process,
and image chunks served per second.

    .venv/bin/python bench/server_bench.py [--clients 8] [--merges-per-client 25] [--chunk-seconds 10] [--viewers]

Builds a throwaway workspace from the FIB-25 cube (../shared/data, or $CONNECTOME_DATA), starts the
server on 127.0.0.1, then in the same run:
  1. baseline: `store.merge` called directly from N threads at once (p50/p99 per call);
  2. the same number of merges as HTTP round trips, POST /api/edits/merge from N concurrent clients,
     twice: with light clients (http.client keep-alive connections; the target figure) and with
     `requests` sessions. The clients run on the same two cores as the server, so a heavy client's
     own CPU time (requests: ~1-2 ms a call) shows up as server latency;
  3. image chunk GETs from N concurrent clients for a fixed time (requests/s, MB/s).
Every merge joins a fresh supervoxel to a client's own growing neuron, so none is refused.
With --viewers each client's user first opens their viewer (GET /api/me), so the server also
pushes the agglomeration to N viewers while the merges run, as it does for N proofreaders.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np
import requests

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

RESOLUTION_NM = (10.0, 10.0, 10.0)


def percentile_ms(samples_s: list[float], percent: float) -> float:
    return float(np.percentile(np.asarray(samples_s) * 1000, percent))


def fib25_h5_path(bench: str) -> Path | None:
    """The FIB-25 cube's HDF5 under ../shared/data or $CONNECTOME_DATA; None (with a message) when missing."""
    data = Path(os.environ.get("CONNECTOME_DATA", REPO_ROOT.parent / "shared" / "data"))
    path = data / "fib25-training2" / "fib25_training2.h5"
    if not path.is_file():
        print(f"{bench}: {path} not found (set CONNECTOME_DATA)", file=sys.stderr)
        return None
    return path


def build_workspace(root: Path, fib25_h5: Path):
    from db import store
    from volumes.precomputed import write_layer
    from volumes.workspace import Workspace

    workspace = Workspace.init(root)
    with h5py.File(fib25_h5, "r") as f:
        image = f["volumes/raw"][:]
        labels = f["volumes/labels/neuroproof_oversegmentation"][:]
    write_layer(workspace.layer_path("image"), image, RESOLUTION_NM, "image", progress=False)
    write_layer(workspace.layer_path("segmentation"), labels, RESOLUTION_NM, "segmentation", progress=False)
    with store.open_store(workspace) as proofreading_store:
        store.build_graph(proofreading_store, labels, RESOLUTION_NM)
    return workspace, [int(i) for i in np.unique(labels) if i]


def build_workspace_with_users(root: Path, fib25_h5: Path, users: int, prefix: str):
    """build_workspace plus `users` proofreaders; returns (workspace, supervoxels, their tokens, adjacent pairs)."""
    from db import store

    workspace, supervoxels = build_workspace(root, fib25_h5)
    with store.open_store(workspace) as proofreading_store:
        tokens = [store.add_user(proofreading_store, f"{prefix}{i}", "proofreader") for i in range(users)]
        with proofreading_store.engine.connect() as connection:
            pairs = [tuple(map(int, row)) for row in connection.exec_driver_sql("SELECT sv_a, sv_b FROM adjacencies")]
    return workspace, supervoxels, tokens, pairs


def run_concurrently(clients: int, work) -> tuple[list[float], float]:
    """Run work(client_index) -> list of latencies on `clients` threads; returns all latencies and wall time."""
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        results = list(pool.map(work, range(clients)))
    return [latency for result in results for latency in result], time.perf_counter() - started


def bench_store_merges(workspace, chains: list[list[int]]) -> tuple[list[float], float]:
    from db import store

    proofreading_store = store.open_store(workspace)
    store.add_user(proofreading_store, "bench-direct", "proofreader")

    def work(client: int) -> list[float]:
        chain, latencies = chains[client], []
        for previous, supervoxel in zip(chain, chain[1:]):
            started = time.perf_counter()
            store.merge(proofreading_store, previous, supervoxel, user="bench-direct")
            latencies.append(time.perf_counter() - started)
        return latencies

    try:
        return run_concurrently(len(chains), work)
    finally:
        proofreading_store.close()


def in_client_process(function, *args):
    """Run a client-side measurement in its own process, so HTTP clients do not share the server's GIL."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(function, args)


def http_merges(url: str, tokens: list[str], chains: list[list[int]]) -> tuple[list[float], float]:
    """Merges from light clients: one keep-alive http.client connection each."""
    host, port = url.split("//", 1)[1].rsplit(":", 1)

    def work(client: int) -> list[float]:
        connection, chain, latencies = http.client.HTTPConnection(host, int(port), timeout=60), chains[client], []
        headers = {"Authorization": f"Bearer {tokens[client]}", "Content-Type": "application/json"}
        for previous, supervoxel in zip(chain, chain[1:]):
            started = time.perf_counter()
            connection.request("POST", "/api/edits/merge", body=json.dumps({"supervoxels": [previous, supervoxel]}), headers=headers)
            answer = connection.getresponse()
            body = answer.read()
            latencies.append(time.perf_counter() - started)
            if answer.status != 200:
                raise RuntimeError(f"merge failed: {answer.status} {body[:200]!r}")
        return latencies

    return run_concurrently(len(chains), work)


def http_merges_requests(url: str, tokens: list[str], chains: list[list[int]]) -> tuple[list[float], float]:
    """The same merges from `requests` sessions, as many Python clients would send them."""
    def work(client: int) -> list[float]:
        session, chain, latencies = requests.Session(), chains[client], []
        session.headers["Authorization"] = f"Bearer {tokens[client]}"
        for previous, supervoxel in zip(chain, chain[1:]):
            started = time.perf_counter()
            answer = session.post(f"{url}/api/edits/merge", json={"supervoxels": [previous, supervoxel]})
            latencies.append(time.perf_counter() - started)
            answer.raise_for_status()
        return latencies

    return run_concurrently(len(chains), work)


def chunk_keys(workspace) -> list[str]:
    import json

    scale = json.loads((workspace.layer_path("image") / "info").read_text())["scales"][0]
    return [f"{scale['key']}/{chunk.start[2]}-{chunk.stop[2]}_{chunk.start[1]}-{chunk.stop[1]}_{chunk.start[0]}-{chunk.stop[0]}"
            for chunk in _chunk_boxes(scale)]


def chunk_gets(url: str, token: str, keys: list[str], clients: int, seconds: float) -> tuple[int, int, float]:
    counts, sizes, lock = [0], [0], threading.Lock()
    deadline = time.perf_counter() + seconds

    def work(client: int) -> list[float]:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"
        index = client
        while time.perf_counter() < deadline:
            answer = session.get(f"{url}/data/image/{keys[index % len(keys)]}")
            answer.raise_for_status()
            with lock:
                counts[0] += 1
                sizes[0] += len(answer.content)
            index += clients
        return []

    _, wall_s = run_concurrently(clients, work)
    return counts[0], sizes[0], wall_s


def _chunk_boxes(scale: dict):
    from volumes.geometry import Box

    size_x, size_y, size_z = scale["size"]
    chunk_x, chunk_y, chunk_z = scale["chunk_sizes"][0]
    return Box.from_shape((size_z, size_y, size_x)).chunks((chunk_z, chunk_y, chunk_x))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--merges-per-client", type=int, default=25)
    parser.add_argument("--chunk-seconds", type=float, default=10.0)
    parser.add_argument("--viewers", action="store_true", help="open each client's viewer before the HTTP merges")
    args = parser.parse_args()

    from db import store
    from server.app import ProofreadingServer

    fib25_h5 = fib25_h5_path("server_bench")
    if fib25_h5 is None:
        return 2
    with tempfile.TemporaryDirectory(prefix="server-bench-") as directory:
        print("building a FIB-25 workspace ...", flush=True)
        workspace, supervoxels = build_workspace(Path(directory) / "ws", fib25_h5)
        per_chain = args.merges_per_client + 1
        needed = 3 * args.clients * per_chain
        if needed > len(supervoxels):
            print(f"server_bench: {needed} supervoxels needed, the cube has {len(supervoxels)}", file=sys.stderr)
            return 2
        rng = np.random.default_rng(0)
        shuffled = [int(v) for v in rng.permutation(supervoxels)]
        chains = [shuffled[i * per_chain:(i + 1) * per_chain] for i in range(3 * args.clients)]
        direct_chains, http_chains, requests_chains = (chains[i * args.clients:(i + 1) * args.clients] for i in range(3))

        with store.open_store(workspace) as proofreading_store:
            tokens = [store.add_user(proofreading_store, f"bench{i}", "proofreader") for i in range(args.clients)]
        server = ProofreadingServer(workspace, port=0)
        try:
            print(f"in-process store.merge, {args.clients} threads ...", flush=True)
            direct, direct_wall = bench_store_merges(workspace, direct_chains)
            if args.viewers:
                for token in tokens:
                    requests.get(f"{server.url}/api/me", headers={"Authorization": f"Bearer {token}"}, timeout=30).raise_for_status()
            print(f"HTTP POST /api/edits/merge, {args.clients} clients in another process"
                  f"{f', {len(tokens)} viewers open' if args.viewers else ''} ...", flush=True)
            http, http_wall = in_client_process(http_merges, server.url, tokens, http_chains)
            print(f"the same through `requests`, {args.clients} clients ...", flush=True)
            via_requests, requests_wall = in_client_process(http_merges_requests, server.url, tokens, requests_chains)
            print(f"image chunk GETs, {args.clients} clients, {args.chunk_seconds:.0f} s ...", flush=True)
            chunk_count, chunk_bytes, chunk_wall = in_client_process(chunk_gets, server.url, tokens[0], chunk_keys(workspace),
                                                                     args.clients, args.chunk_seconds)
        finally:
            server.close()

    print()
    print(f"merge latency with {args.clients} concurrent callers, {len(http)} merges each way (ms):")
    print(f"  {'':28s} {'p50':>8s} {'p99':>8s} {'mean':>8s} {'merges/s':>9s}")
    for name, samples, wall in (("store.merge in-process", direct, direct_wall), ("HTTP API round trip", http, http_wall),
                                ("HTTP, requests clients", via_requests, requests_wall)):
        print(f"  {name:28s} {percentile_ms(samples, 50):8.1f} {percentile_ms(samples, 99):8.1f} "
              f"{statistics.mean(samples) * 1000:8.1f} {len(samples) / wall:9.1f}")
    p99_http, p99_direct = percentile_ms(http, 99), percentile_ms(direct, 99)
    print(f"  HTTP / in-process: p50 x{percentile_ms(http, 50) / percentile_ms(direct, 50):.2f}, p99 x{p99_http / p99_direct:.2f}; "
          f"HTTP overhead at p50 {percentile_ms(http, 50) - percentile_ms(direct, 50):+.1f} ms")
    print(f"  target p99 <= 50 ms through HTTP: {'met' if p99_http <= 50 else 'NOT met'} ({p99_http:.1f} ms; "
          f"{percentile_ms(via_requests, 99):.1f} ms from requests clients)")
    print(f"image chunks: {chunk_count / chunk_wall:.0f} requests/s, {chunk_bytes / chunk_wall / 1e6:.1f} MB/s "
          f"(gzip-encoded 64^3 uint8 chunks, {args.clients} clients)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
