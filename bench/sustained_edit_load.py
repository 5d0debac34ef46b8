"""Sustained edit load through the HTTP API: does the edit rate hold as neurons grow?

    .venv/bin/python bench/sustained_edit_load.py [--clients 8] [--minutes 10] [--no-viewers]

Builds a throwaway workspace from the FIB-25 cube and its oversegmentation (3,051 supervoxels;
../shared/data or $CONNECTOME_DATA), gives each client a proofreader and (unless --no-viewers)
opens that user's viewer, so the server pushes every change to 8 viewers as it would for 8
proofreaders. Then each client, in another process, does random adjacent merges for the given
time: a pair already in one neuron is refused (409), and that client undoes one of its own
earlier merges instead, so the load goes on after the cube is mostly one neuron (the big neuron
keeps growing and being cut, the case the store must keep fast).

Prints edits/s (merges and undos acknowledged with 200) per minute, the last minute's rate over
the first's, latency per minute, and checks that the acknowledged edit ids are exactly the
history's: no lost and no duplicated edit. The baseline is the same run's first minute.
"""
from __future__ import annotations

import argparse
import http.client
import json
import random
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "bench"))


def client_load(url: str, tokens: list[str], pairs: list[tuple[int, int]], seconds: float) -> list[list]:
    """Run in its own process: one thread per token; returns per client [(start_s, latency_s, kind, edit_id)]."""
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    began = time.perf_counter()

    def work(client: int) -> list:
        rng = random.Random(client)
        connection = http.client.HTTPConnection(host, int(port), timeout=120)
        headers = {"Authorization": f"Bearer {tokens[client]}", "Content-Type": "application/json"}
        mine: list[int] = []
        done = []

        def post(route: str, body: dict) -> tuple[int, dict]:
            connection.request("POST", route, body=json.dumps(body), headers=headers)
            answer = connection.getresponse()
            return answer.status, json.loads(answer.read() or b"{}")

        while time.perf_counter() - began < seconds:
            a, b = pairs[rng.randrange(len(pairs))]
            started = time.perf_counter()
            status, body = post("/api/edits/merge", {"supervoxels": [str(a), str(b)]})
            if status == 200:
                mine.append(body["edit_id"])
                done.append((started - began, time.perf_counter() - started, "merge", body["edit_id"]))
                continue
            if status not in (409,):
                raise RuntimeError(f"merge answered {status}: {body}")
            while mine:  # already one neuron: undo one of my merges instead (some may be undone already)
                target = mine.pop(rng.randrange(len(mine)))
                started = time.perf_counter()
                status, body = post("/api/edits/undo", {"edit_id": target})
                if status == 200:
                    done.append((started - began, time.perf_counter() - started, "undo", body["edit_id"]))
                    break
                if status != 409:
                    raise RuntimeError(f"undo answered {status}: {body}")
        return done

    with ThreadPoolExecutor(max_workers=len(tokens)) as pool:
        return list(pool.map(work, range(len(tokens))))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--no-viewers", action="store_true", help="do not open the users' viewers")
    args = parser.parse_args()

    from server_bench import build_workspace_with_users, fib25_h5_path, in_client_process

    from db import store
    from server.app import ProofreadingServer

    fib25_h5 = fib25_h5_path("sustained_edit_load")
    if fib25_h5 is None:
        return 2
    with tempfile.TemporaryDirectory(prefix="sustained-load-") as directory:
        print("building a FIB-25 workspace ...", flush=True)
        workspace, supervoxels, tokens, pairs = build_workspace_with_users(Path(directory) / "ws", fib25_h5, args.clients, "load")
        server = ProofreadingServer(workspace, port=0)
        try:
            if not args.no_viewers:
                for token in tokens:
                    requests.get(f"{server.url}/api/me", headers={"Authorization": f"Bearer {token}"},
                                 timeout=30).raise_for_status()
            print(f"{args.clients} clients, random adjacent merges (undo when refused) for {args.minutes:g} min, "
                  f"{len(supervoxels)} supervoxels, {len(pairs)} adjacent pairs, "
                  f"{'no viewers' if args.no_viewers else f'{args.clients} viewers open'} ...", flush=True)
            cpu_before = time.process_time()
            results = in_client_process(client_load, server.url, tokens, pairs, args.minutes * 60)
            server_cpu = time.process_time() - cpu_before
            time.sleep(2.0)
            with store.open_store(workspace) as proofreading_store:
                log = store.history(proofreading_store)
                largest = max(len(group) for group in store.equivalence_groups(proofreading_store))
        finally:
            server.close()

    rows = [row for client in results for row in client]
    acknowledged = sorted(edit_id for *_, edit_id in rows)
    history_ids = [record.id for record in log]
    lost = sorted(set(acknowledged) - set(history_ids))
    unacknowledged = sorted(set(history_ids) - set(acknowledged))
    duplicated = len(acknowledged) - len(set(acknowledged))
    minutes = int(np.ceil(args.minutes))
    print("\nminute  edits/s  merges  undos   p50 ms   p99 ms")
    rates = []
    for minute in range(minutes):
        inside = [row for row in rows if minute * 60 <= row[0] < (minute + 1) * 60]
        span = min(60.0, args.minutes * 60 - minute * 60)
        rates.append(len(inside) / span)
        latency = np.asarray([row[1] for row in inside]) * 1000 if inside else np.zeros(1)
        print(f"{minute + 1:6d} {rates[-1]:8.1f} {sum(r[2] == 'merge' for r in inside):7d} "
              f"{sum(r[2] == 'undo' for r in inside):6d} {np.percentile(latency, 50):8.1f} {np.percentile(latency, 99):8.1f}")
    ratio = rates[-1] / rates[0] if rates and rates[0] else float("nan")
    print(f"last minute / first minute: {ratio:.2f}x   (target >= 0.8x)")
    print(f"{len(acknowledged)} edits acknowledged, {len(history_ids)} in the history: lost {len(lost)}, "
          f"duplicated {duplicated}, in the history but never acknowledged {len(unacknowledged)}")
    print(f"largest neuron at the end: {largest} of {len(supervoxels)} supervoxels; "
          f"server process CPU {server_cpu:.0f} s over {args.minutes * 60:.0f} s")
    return 0 if not lost and not duplicated and not unacknowledged else 1


if __name__ == "__main__":
    sys.exit(main())
