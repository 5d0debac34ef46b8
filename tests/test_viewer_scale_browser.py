"""Two users on a generated workspace of many small neurons, in headless Chromium.

User A edits over the HTTP API; user B's viewer shows a few neurons, selected by neuron id as a
click selects them. A merge with a neuron B does not show must reach B's equivalences (the client
renames the neuron by itself), B's synapse layer must then ask for the merged-in supervoxels'
synapses and be answered exactly the store's; a split back must leave both pieces selected in B's
viewer. (bench/viewer_scale_bench.py runs the same at 10^6 supervoxels.)
"""
from __future__ import annotations

import time

import numpy as np
import pytest
import requests

from generated_workspace import NEURON_BLOCKS, build, supervoxel_id
from test_server_browser import open_viewer, start_chromium, wait_for

pytestmark = pytest.mark.slow
SIDE = 30  # 27,000 supervoxels in 1,350 neurons
SAME_NEURON_JS = """
const equivalences = viewer.layerManager.getLayerByName('segmentation').layer
    .displayState.segmentationGroupState.value.segmentEquivalences;
return equivalences.get(BigInt(arguments[0])) === equivalences.get(BigInt(arguments[1]));
"""


def test_merge_and_split_on_a_generated_workspace_reach_the_other_user(tmp_path, chromium_driver, monkeypatch):
    from db import store
    from server.app import ProofreadingServer
    from server.auth import Caller
    from server.neuron_graph import viewer_segment_id
    from server.synapse_source import SynapseAnnotationHandler
    from server.viewers import SEGMENTATION_LAYER

    built = build(tmp_path / "ws", SIDE, 20_000)
    workspace, tokens = built["workspace"], built["tokens"]
    assert built["counts"]["supervoxels"] == SIDE ** 3 and built["counts"]["neurons"] == SIDE ** 3 // np.prod(NEURON_BLOCKS)
    shown = supervoxel_id(SIDE, 0, 0, 0)  # its neuron: x 0-1, y 0-1, z 0-4
    edge_a, edge_b = supervoxel_id(SIDE, 0, 0, 1), supervoxel_id(SIDE, 0, 0, 2)  # the contact with the next neuron
    with store.open_store(workspace) as opened:
        other_members = store.neuron_summary(opened, store.root_of(opened, edge_b)).supervoxels
        selected = viewer_segment_id(store.root_of(opened, shown))
        table = store.synapse_table(opened)
    expected = table.groupby("pre_pt_supervoxel_id").size().to_dict()

    answered: dict[int, int] = {}  # pre_segment key -> synapses answered, as B's pre-synapse layer asks
    real_answer = SynapseAnnotationHandler._answer

    def recording_answer(self, side: str, path: str):
        body = real_answer(self, side, path)
        kind, _, key = path.partition("/")
        if side == "pre" and kind == "pre_segment" and isinstance(body, bytes):
            answered[int(key)] = int(np.frombuffer(body[:8], "<u8")[0])
        return body

    monkeypatch.setattr(SynapseAnnotationHandler, "_answer", recording_answer)
    server = ProofreadingServer(workspace, port=0)
    browser = start_chromium(chromium_driver, tmp_path / "profile")
    try:
        def prepare(state) -> None:
            state.position = [2.0, 2.0, 2.0]
            state.layers[SEGMENTATION_LAYER].segments = [selected]

        user_viewer = open_viewer(server, browser, tokens["bob"], Caller("bob", "proofreader"), prepare)
        wait_for(lambda: browser.execute_script(SAME_NEURON_JS, shown, edge_a), 60, "B's neuron graph")
        assert not browser.execute_script(SAME_NEURON_JS, edge_a, edge_b)
        alice = {"Authorization": f"Bearer {tokens['alice']}"}

        merged = requests.post(f"{server.url}/api/edits/merge", json={"supervoxels": [edge_a, edge_b]}, headers=alice)
        merged.raise_for_status()
        answered_at = time.monotonic()
        wait_for(lambda: browser.execute_script(SAME_NEURON_JS, edge_a, edge_b), 5, "B to see the merge")
        print(f"merge seen by B {time.monotonic() - answered_at:.2f} s after the API answered")
        wait_for(lambda: set(other_members) <= set(answered), 20, "B's synapse layer to ask for the merged-in neuron")
        assert {sv: answered[sv] for sv in other_members} == {sv: expected.get(sv, 0) for sv in other_members}
        assert sum(answered[sv] for sv in other_members) > 0, "the merged-in neuron has synapses to show"

        split = requests.post(f"{server.url}/api/edits/split", json={"sources": [shown], "sinks": [edge_b]}, headers=alice)
        split.raise_for_status()
        pieces = {viewer_segment_id(int(root)) for root in split.json()["resulting_roots"]}
        wait_for(lambda: not browser.execute_script(SAME_NEURON_JS, edge_a, edge_b), 5, "B to see the split")
        wait_for(lambda: pieces <= {int(s) for s in user_viewer.viewer.state.layers[SEGMENTATION_LAYER].segments},
                 5, "both pieces selected in B's viewer")
    finally:
        browser.quit()
        server.close()
