"""The viewing path on a generated workspace at a lab's scale, in headless Chromium.

    .venv/bin/python bench/viewer_scale_bench.py [--side 100] [--synapses 2000000] [--edits 20]

Builds a workspace of side³ supervoxels (cubes of 4³ voxels, 10 nm; side 100: 10^6 supervoxels,
a 400³ volume) agglomerated into neurons of 5 x 2 x 2 supervoxels (side 100: 50,000 neurons,
given to the graph build as an agglomeration), a synthetic EM image (one grey level per
supervoxel, dark borders, noise) and --synapses synapses between touching supervoxels; no meshes.
Then serves it and measures, with the server's own clock:

* opening: time from loading the login link to the first rendered EM under segment colours in
  Chromium; bytes sent to that viewer (Neuroglancer state plus neuron-graph answers) against what
  the previous design sent every viewer at open and after every edit, the whole dataset's
  equivalence list (measured in the same run);
* editing: user A makes --edits merges and --edits splits over the HTTP API of neurons user B's
  Chromium viewer shows; the time from each API answer to B's viewer holding the new
  agglomeration (polled in the page every 10 ms), and the bytes the server sent B per edit.

Chromium and chromedriver come from the system (Debian's packages), as for the browser tests.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests


REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "tests"))

from generated_workspace import BLOCK_VOXELS, NEURON_BLOCKS, build, supervoxel_id  # noqa: E402
SYNAPSE_LAYERS = ("pre-synapses", "post-synapses")

# Polled every 10 ms: when do the two supervoxels become one neuron (merge) or two (split) in B's viewer?
WATCH_JS = """
const first = BigInt(arguments[0]), second = BigInt(arguments[1]), together = arguments[2];
window.shownAt = null;
if (window.editWatch) clearInterval(window.editWatch);
window.editWatch = setInterval(() => { try {
    const equivalences = viewer.layerManager.getLayerByName('segmentation').layer
        .displayState.segmentationGroupState.value.segmentEquivalences;
    if ((equivalences.get(first) === equivalences.get(second)) === together) {
        window.shownAt = Date.now();
        clearInterval(window.editWatch);
    }
} catch (error) {} }, 10);
"""


def count_sent_bytes():
    """Wrap the neuron-graph websocket's sends to count bytes per connection (the server's side of the wire)."""
    from server import neuron_graph

    sent: dict[int, int] = {}
    handler = neuron_graph.WatchSocket
    real_write = handler.write_message

    def counting_write(self, message, binary=False):
        sent[id(self)] = sent.get(id(self), 0) + len(message if isinstance(message, (bytes, str)) else json.dumps(message))
        if os.environ.get("BENCH_TRACE"):
            print(f"  sent {time.time() * 1000:.0f} {str(message)[:150]}", flush=True)
        return real_write(self, message, binary)

    handler.write_message = counting_write
    return sent


def em_levels(browser) -> int:
    """Grey levels in the middle of the panel: EM texture has many, an empty panel one."""
    from test_server_browser import rendered_panel

    panel, _ = rendered_panel(browser)
    return len(np.unique(panel.mean(axis=2).round()))


def state_bytes(user_viewer) -> int:
    from neuroglancer.json_utils import json_encoder_default

    return len(json.dumps(user_viewer.viewer.state.to_json(), default=json_encoder_default))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=100, help="supervoxels along each axis (default 100: 10^6)")
    parser.add_argument("--synapses", type=int, default=2_000_000)
    parser.add_argument("--edits", type=int, default=20, help="merges, and as many splits")
    parser.add_argument("--shown", type=int, default=20, help="neurons B's viewer shows")
    args = parser.parse_args()

    from test_server_browser import open_viewer, start_chromium, wait_for, wait_for_image_and_segmentation

    from db import store
    from server.app import ProofreadingServer
    from server.auth import Caller

    chromium = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    driver = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
    if not (Path(chromium).exists() and Path(driver).exists()):
        print(f"viewer_scale_bench: needs {chromium} and {driver} (apt-get install chromium chromium-driver)", file=sys.stderr)
        return 2
    side = args.side
    with tempfile.TemporaryDirectory(prefix="viewer-scale-") as directory:
        total = time.perf_counter()
        built = build(Path(directory) / "ws", side, args.synapses)
        counts, timings = built["counts"], built["timings"]
        print(f"generated workspace: {counts['supervoxels']:,} supervoxels in {counts['neurons']:,} neurons, "
              f"{counts['adjacencies']:,} adjacencies, {args.synapses:,} synapses in {time.perf_counter() - total:.0f} s "
              f"(layers {timings['layers_s']:.0f} s, graph {timings['graph_s']:.0f} s, synapses {timings['synapses_s']:.0f} s)",
              flush=True)
        workspace, tokens = built["workspace"], built["tokens"]
        cpu = time.process_time()
        with store.open_store(workspace) as proofreading_store:
            baseline = len(json.dumps([[str(sv) for sv in group] for group in store.equivalence_groups(proofreading_store)]))
        baseline_cpu = time.process_time() - cpu
        sent = count_sent_bytes()
        server = ProofreadingServer(workspace, port=0)
        browsers = []
        try:
            started = time.perf_counter()
            server.synapse_layers()  # the synapse index is built once, on first use
            index_s = time.perf_counter() - started
            profile = Path(os.environ.get("CONNECTOME_BENCH_ARTIFACTS", directory))
            profile.mkdir(parents=True, exist_ok=True)
            # A: opens with the camera in the middle of the volume, nothing selected
            browser_a = start_chromium((chromium, driver), profile / "a")
            browsers.append(browser_a)
            centre = [side * BLOCK_VOXELS / 2] * 3
            opened = time.perf_counter()

            def prepare_a(state) -> None:
                state.position = centre
                for name in SYNAPSE_LAYERS:  # with nothing selected every synapse is drawn: here they cover every pixel
                    state.layers[name].visible = False

            viewer_a = open_viewer(server, browser_a, tokens["alice"], Caller("alice", "proofreader"), prepare_a)
            wait_for_image_and_segmentation(browser_a, profile / "a-open.png", timeout_s=120)
            first_render_s = time.perf_counter() - opened
            open_state = state_bytes(viewer_a)
            open_graph = sum(sent.values())
            print(f"viewer open: first EM and segmentation rendered {first_render_s:.1f} s after loading the login link "
                  f"(synapse index built before, {index_s:.1f} s); sent {open_state:,} B of state and {open_graph:,} B "
                  f"of neuron graph; the previous design: {baseline:,} B of equivalences in the state "
                  f"({baseline / max(open_state + open_graph, 1):.0f}x more, {baseline_cpu:.1f} s CPU to build), "
                  f"again with every edit", flush=True)

            # B shows --shown neurons: the first supervoxel of every other neuron along one row of neurons
            rows = [(z, 0, x) for z in range(0, side, NEURON_BLOCKS[0]) for x in range(0, side, 2 * NEURON_BLOCKS[2])]
            shown = [supervoxel_id(side, *zyx) for zyx in rows[:args.shown]]
            browser_b = start_chromium((chromium, driver), profile / "b")
            browsers.append(browser_b)
            if os.environ.get("BENCH_TRACE"):
                from test_server_browser import RECORD_ARRIVALS_JS

                browser_b.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": RECORD_ARRIVALS_JS})

            from server.neuron_graph import viewer_segment_id

            with store.open_store(workspace) as proofreading_store:  # selected as a click selects: by neuron id
                selected = [viewer_segment_id(root) for root in store.roots_of(proofreading_store, shown).values()]

            def prepare_b(state) -> None:
                state.position = [2.0, 2.0, side * BLOCK_VOXELS / 2]
                state.layers["segmentation"].segments = selected

            viewer_b = open_viewer(server, browser_b, tokens["bob"], Caller("bob", "proofreader"), prepare_b)
            wait_for(lambda: em_levels(browser_b) > 40, 120, "B's EM")  # B colours only its neurons
            (profile / "b-open.png").write_bytes(browser_b.get_screenshot_as_png())
            latencies, per_edit = {"merge": [], "split": []}, {"merge": [], "split": []}
            session = requests.Session()
            session.headers["Authorization"] = f"Bearer {tokens['alice']}"
            edits = []
            for n in range(args.edits):  # merge a shown neuron with the neuron beside it along x
                z, y, x = rows[n % len(rows)]
                edits.append(("merge", supervoxel_id(side, z, y, x + NEURON_BLOCKS[2] - 1),
                              supervoxel_id(side, z, y, x + NEURON_BLOCKS[2])))
            for n in range(args.edits):  # split a shown neuron (now merged) back at the same contact
                z, y, x = rows[n % len(rows)]
                edits.append(("split", supervoxel_id(side, z, y, x), supervoxel_id(side, z, y, x + NEURON_BLOCKS[2])))
            for operation, a, b in edits:
                browser_b.execute_script(WATCH_JS, a, b, operation == "merge")
                before = sum(sent.values())
                if operation == "merge":
                    body = {"supervoxels": [a, b]}
                else:
                    body = {"sources": [a], "sinks": [b]}
                answer = session.post(f"{server.url}/api/edits/{operation}", json=body)
                answered_ms = time.time() * 1000
                if os.environ.get("BENCH_TRACE"):
                    print(f"  answered {answered_ms:.0f} {operation} {a} {b}", flush=True)
                answer.raise_for_status()
                wait_for(lambda: browser_b.execute_script("return window.shownAt"), 10, f"B to see the {operation}")
                latencies[operation].append(browser_b.execute_script("return window.shownAt") - answered_ms)
                if os.environ.get("BENCH_TRACE"):
                    arrivals = [t - answered_ms for t in browser_b.execute_script("return window.stateArrivals") if t > answered_ms - 50]
                    print(f"  B got messages at {[round(t) for t in arrivals]} ms, shown at {latencies[operation][-1]:.0f}")
                time.sleep(0.3)  # let the other viewer's update land before the next edit
                per_edit[operation].append(sum(sent.values()) - before)
            for operation in ("merge", "split"):
                lat = np.asarray(latencies[operation])
                print(f"{operation}s seen by B: p50 {np.percentile(lat, 50):.0f} ms, p99 {np.percentile(lat, 99):.0f} ms, "
                      f"max {lat.max():.0f} ms over {len(lat)}; neuron-graph bytes sent per edit (to both viewers) "
                      f"mean {np.mean(per_edit[operation]):,.0f}, max {max(per_edit[operation]):,}; "
                      f"B's state {state_bytes(viewer_b):,} B", flush=True)
            print(f"peak RSS of this process (server, store and bench): "
                  f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB; whole run "
                  f"{time.perf_counter() - total:.0f} s")
        finally:
            for browser in browsers:
                browser.quit()
            server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
