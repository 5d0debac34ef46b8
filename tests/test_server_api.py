"""The proofreading server's HTTP API, auth, live agglomeration push and file confinement, on a synthetic
workspace (always) and on a FIB-25 crop (when the data is there).

One server per module (Neuroglancer allows one per process), on 127.0.0.1 and a free port.
"""
from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import requests

from synth_workspace import populate_store


CROP = (slice(61, 189),) * 3  # a 128^3 box from the middle of the 250^3 FIB-25 cube
RESOLUTION_NM = (10.0, 10.0, 10.0)


def build_fib25_workspace(root: Path, fib25_h5: Path, mesh: bool = False):
    """A workspace with the FIB-25 crop's image, its NeuroProof supervoxels as 'segmentation', the graph,
    two synapses and four users; returns (workspace, tokens by user name, supervoxel ids largest first)."""
    from volumes.precomputed import write_layer
    from volumes.workspace import Workspace

    workspace = Workspace.init(root)
    with h5py.File(fib25_h5, "r") as f:
        image = f["volumes/raw"][CROP]
        labels = f["volumes/labels/neuroproof_oversegmentation"][CROP]
    write_layer(workspace.layer_path("image"), image, RESOLUTION_NM, "image", progress=False)
    write_layer(workspace.layer_path("segmentation"), labels, RESOLUTION_NM, "segmentation", progress=False)
    if mesh:
        from volumes.meshing import mesh_segmentation

        mesh_segmentation(workspace, "segmentation", progress=False)
    tokens, largest = populate_store(workspace, labels, RESOLUTION_NM)
    return workspace, tokens, largest


SYNTH_SHAPE = (48, 96, 96)
SYNTH_PIECES = (8, 48, 48)  # each synthetic neuron cut into up to 24 supervoxels


@pytest.fixture(scope="module", params=["synthetic", "fib25"])
def built(request, tmp_path_factory):
    """(workspace, tokens, supervoxels largest first, the image as written): every API test runs on a
    workspace from `connectome synth` (always, also on a clean clone) and on the FIB-25 crop."""
    root = tmp_path_factory.mktemp(f"api-{request.param}") / "ws"
    if request.param == "synthetic":
        from synth_workspace import RESOLUTION_NM as SYNTH_RESOLUTION_NM, build_synth_workspace
        from volumes.synth import synthesize

        workspace, tokens, supervoxels = build_synth_workspace(root, shape=SYNTH_SHAPE, piece_zyx=SYNTH_PIECES)
        image = synthesize(SYNTH_SHAPE, 3, SYNTH_RESOLUTION_NM, synapses_per_cubic_um=0.0)["raw"]
    else:
        fib25_h5 = request.getfixturevalue("fib25_h5")
        workspace, tokens, supervoxels = build_fib25_workspace(root, fib25_h5)
        with h5py.File(fib25_h5, "r") as f:
            image = f["volumes/raw"][CROP]
    return workspace, tokens, supervoxels, image


@pytest.fixture(scope="module")
def served(built):
    from server.app import ProofreadingServer

    workspace, tokens, supervoxels, _ = built
    server = ProofreadingServer(workspace, port=0)  # default host: 127.0.0.1
    yield server, tokens, supervoxels
    server.close()


def auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def roots(server, token: str, *supervoxels: int) -> list[str]:
    answer = requests.get(f"{server.url}/api/roots", params={"supervoxels": ",".join(map(str, supervoxels))}, headers=auth(token))
    assert answer.status_code == 200, answer.text
    return [answer.json()["roots"][str(sv)] for sv in supervoxels]


def status_watch(user_viewer):
    """(status(), until(condition, what)): a viewer's status line, and a wait that names it when it fails."""
    from server.viewers import STATUS_KEY

    def status() -> str:
        return user_viewer.viewer.config_state.state.status_messages.get(STATUS_KEY, "")

    def until(condition, what: str) -> None:
        deadline = time.monotonic() + 10
        while not condition():
            assert time.monotonic() < deadline, f"{what}; status: {status()}"
            time.sleep(0.02)

    return status, until


def raw_get(server, path: str, cookie: str | None = None) -> tuple[int, bytes]:
    """GET a path exactly as written (no client-side normalisation of '..' or %-escapes)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.request("GET", path, headers={"Cookie": f"connectome_token={cookie}"} if cookie else {})
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response.status, body


def test_binds_localhost_by_default(served):
    server, _, _ = served
    addresses = {sock.getsockname()[0] for sock in server._ng.http_server._sockets.values()}
    assert addresses == {"127.0.0.1"}


def test_openapi_documents_every_api_route(served):
    from server.api import api_routes

    server, _, _ = served
    document = requests.get(f"{server.url}/api/openapi.json").json()
    assert document["openapi"].startswith("3.")
    documented = {path.split("{")[0].rstrip("/") for path in document["paths"]}
    for pattern, *_ in api_routes(server):
        route = pattern.replace("\\", "").split("(")[0].rstrip("/")
        if route.startswith("/api/") and route not in ("/api/openapi.json", "/api/.*"):
            assert route in documented, f"{pattern} is not in openapi.json"


@pytest.mark.parametrize("method, path", [
    ("GET", "/api/me"), ("GET", "/api/roots?supervoxels=1"), ("POST", "/api/edits/merge"), ("POST", "/api/edits/split"),
    ("POST", "/api/edits/undo"), ("POST", "/api/edits/redo"), ("GET", "/api/history"),
    ("GET", "/api/neurons/1/synapses"), ("GET", "/api/export/synapses"), ("POST", "/api/users"), ("GET", "/data/image/info"),
    ("GET", "/api/annotations"), ("POST", "/api/annotations"), ("POST", "/api/annotations/neuron"),
    ("POST", "/api/annotations/remove"), ("POST", "/api/review/next"), ("POST", "/api/review/answer"),
    ("GET", "/api/review/progress"),
])
def test_every_route_needs_a_valid_token(served, method, path):
    server, _, _ = served
    for headers in ({}, auth("not-a-token"), {"Cookie": "connectome_token=not-a-token"}):
        answer = requests.request(method, server.url + path, headers=headers, json={})
        assert answer.status_code == 401, (path, headers, answer.text)
        if path.startswith("/api/"):
            assert "token" in answer.json()["error"]


def test_roles_are_enforced(served):
    server, tokens, supervoxels = served
    a, b = supervoxels[10], supervoxels[11]
    for path, body in (("merge", {"supervoxels": [a, b]}), ("split", {"sources": [a], "sinks": [b]}), ("undo", {}), ("redo", {})):
        answer = requests.post(f"{server.url}/api/edits/{path}", json=body, headers=auth(tokens["vic"]))
        assert answer.status_code == 403, answer.text
    answer = requests.post(f"{server.url}/api/users", json={"name": "eve", "role": "admin"}, headers=auth(tokens["ana"]))
    assert answer.status_code == 403
    assert requests.get(f"{server.url}/api/me", headers=auth(tokens["vic"])).json()["role"] == "viewer"


def test_roots_validates_input_and_unknown_ids(served):
    server, tokens, supervoxels = served
    answer = requests.get(f"{server.url}/api/roots", params={"supervoxels": f"{supervoxels[0]},{supervoxels[1]}"}, headers=auth(tokens["vic"]))
    assert answer.status_code == 200
    body = answer.json()
    assert set(body["roots"]) == {str(supervoxels[0]), str(supervoxels[1])} and body["roots"][str(supervoxels[0])] != body["roots"][str(supervoxels[1])]
    for bad in ("", "abc", "1,-2", "0", str(2**64)):
        assert requests.get(f"{server.url}/api/roots", params={"supervoxels": bad}, headers=auth(tokens["vic"])).status_code == 400, bad
    unknown = requests.get(f"{server.url}/api/roots", params={"supervoxels": "987654321"}, headers=auth(tokens["vic"]))
    assert unknown.status_code == 404 and "987654321" in unknown.json()["error"]


def test_merge_split_and_conflicts(served):
    server, tokens, supervoxels = served
    a, b, c = supervoxels[3:6]
    url = f"{server.url}/api/edits"
    seen = roots(server, tokens["ana"], a, b)
    merged = requests.post(f"{url}/merge", json={"supervoxels": [a, str(b)], "seen_roots": seen}, headers=auth(tokens["ana"]))
    assert merged.status_code == 200, merged.text
    assert sorted(merged.json()["affected_roots"]) == sorted(seen)
    assert roots(server, tokens["ana"], a)[0] == roots(server, tokens["ana"], b)[0] == merged.json()["resulting_roots"][0]
    again = requests.post(f"{url}/merge", json={"supervoxels": [a, b]}, headers=auth(tokens["ana"]))
    assert again.status_code == 409
    stale = requests.post(f"{url}/merge", json={"supervoxels": [a, c], "seen_roots": seen + roots(server, tokens["ana"], c)}, headers=auth(tokens["ben"]))
    assert stale.status_code == 409 and "conflict" in stale.json()["error"]
    assert requests.post(f"{url}/merge", json={"supervoxels": [b, c]}, headers=auth(tokens["ana"])).status_code == 200

    preview = requests.post(f"{url}/split", json={"sources": [a], "sinks": [c], "preview": True}, headers=auth(tokens["ana"]))
    assert preview.status_code == 200, preview.text
    assert preview.json()["edit_id"] is None and len(preview.json()["groups"]) == 2
    assert len(set(roots(server, tokens["ana"], a, b, c))) == 1, "a preview must not change the store"
    split = requests.post(f"{url}/split", json={"sources": [a], "sinks": [c]}, headers=auth(tokens["ana"]))
    assert split.status_code == 200, split.text
    root_a, _, root_c = roots(server, tokens["ana"], a, b, c)
    assert root_a != root_c and sorted(split.json()["resulting_roots"]) == sorted({root_a, root_c} | set(roots(server, tokens["ana"], b)))

    for body in ({"sources": [a], "sinks": [supervoxels[40]]}, {"sources": [], "sinks": [c]}, {"sources": [a]}, {"sources": "a", "sinks": [c]}):
        assert requests.post(f"{url}/split", json=body, headers=auth(tokens["ana"])).status_code in (400, 409), body
    for body in ({"supervoxels": [a]}, {"supervoxels": [a, -1]}, {"supervoxels": [a, True]}, {}):
        assert requests.post(f"{url}/merge", json=body, headers=auth(tokens["ana"])).status_code == 400, body
    assert requests.post(f"{url}/merge", data=b"{not json", headers=auth(tokens["ana"])).status_code == 400
    assert requests.post(f"{url}/merge", json={"supervoxels": [a, 987654321]}, headers=auth(tokens["ana"])).status_code == 404


def test_undo_redo_permissions_and_history(served):
    server, tokens, supervoxels = served
    a, b = supervoxels[20], supervoxels[21]
    url = f"{server.url}/api/edits"
    merged = requests.post(f"{url}/merge", json={"supervoxels": [a, b]}, headers=auth(tokens["ana"])).json()
    others = requests.post(f"{url}/undo", json={"edit_id": merged["edit_id"]}, headers=auth(tokens["ben"]))
    assert others.status_code == 403 and "ana" in others.json()["error"]
    undone = requests.post(f"{url}/undo", json={"edit_id": merged["edit_id"]}, headers=auth(tokens["boss"]))
    assert undone.status_code == 200 and undone.json()["target_edit_id"] == merged["edit_id"]
    assert roots(server, tokens["ana"], a) != roots(server, tokens["ana"], b)
    assert requests.post(f"{url}/undo", json={"edit_id": merged["edit_id"]}, headers=auth(tokens["boss"])).status_code == 409
    assert requests.post(f"{url}/undo", json={"edit_id": undone.json()["edit_id"]}, headers=auth(tokens["boss"])).status_code == 400
    assert requests.post(f"{url}/undo", json={"edit_id": 99999}, headers=auth(tokens["boss"])).status_code == 404
    redone = requests.post(f"{url}/redo", headers=auth(tokens["ana"]))  # no id: ana's latest undone edit
    assert redone.status_code == 200 and redone.json()["target_edit_id"] == merged["edit_id"]
    assert roots(server, tokens["ana"], a) == roots(server, tokens["ana"], b)

    log = requests.get(f"{server.url}/api/history", params={"since_edit": merged["edit_id"] - 1}, headers=auth(tokens["vic"])).json()["edits"]
    assert [(e["operation"], e["user"]) for e in log[:3]] == [("merge", "ana"), ("undo", "boss"), ("redo", "ana")]
    only_boss = requests.get(f"{server.url}/api/history", params={"user": "boss"}, headers=auth(tokens["vic"])).json()["edits"]
    assert only_boss and {e["user"] for e in only_boss} == {"boss"}
    assert requests.get(f"{server.url}/api/history", params={"user": "nobody"}, headers=auth(tokens["vic"])).status_code == 404
    assert requests.get(f"{server.url}/api/history", params={"limit": "-1"}, headers=auth(tokens["vic"])).status_code == 400


def test_annotations_through_the_api(served):
    """Status, notes and to-dos: set by proofreaders, read by anyone, refused with 4xx for bad input or the
    viewer role, following the neuron through a merge and flagged once it changed, undone by the edit log."""
    server, tokens, supervoxels = served
    a, b = supervoxels[44], supervoxels[45]
    url = f"{server.url}/api/annotations"
    status = requests.post(f"{url}/neuron", json={"supervoxel": str(a), "field": "status", "value": "Traced"},
                           headers=auth(tokens["ana"]))
    assert status.status_code == 200, status.text
    note = requests.post(url, json={"kind": "note", "text": "axon?", "supervoxel": b}, headers=auth(tokens["ben"]))
    todo = requests.post(url, json={"kind": "todo", "text": "check", "position_nm": [10, 20, 30]}, headers=auth(tokens["ben"]))
    assert note.status_code == todo.status_code == 200, (note.text, todo.text)
    for token, route, body, code in [
        ("vic", "/neuron", {"supervoxel": a, "field": "status", "value": "Done"}, 403),
        ("vic", "", {"kind": "note", "text": "x", "supervoxel": a}, 403),
        ("ana", "/neuron", {"supervoxel": a, "field": "status", "value": "Finished"}, 400),
        ("ana", "/neuron", {"supervoxel": a, "field": "colour", "value": "red"}, 400),
        ("ana", "/neuron", {"supervoxel": 987654321, "field": "status", "value": "Done"}, 404),
        ("ana", "", {"kind": "note", "text": "x" * 2001, "supervoxel": a}, 400),
        ("ana", "", {"kind": "todo", "text": "x", "position_nm": "here"}, 400),
        ("ana", "", {"kind": "poem", "text": "x", "supervoxel": a}, 400),
        ("ana", "/remove", {"annotation_id": 987654}, 404),
    ]:
        answer = requests.post(url + route, json=body, headers=auth(tokens[token]))
        assert answer.status_code == code, (route, body, answer.text)
        assert "error" in answer.json()
    merged = requests.post(f"{server.url}/api/edits/merge", json={"supervoxels": [a, b]}, headers=auth(tokens["ana"])).json()
    root = merged["resulting_roots"][0]
    mine = requests.get(url, params={"root": root}, headers=auth(tokens["vic"])).json()["annotations"]
    assert sorted((item["kind"], item["value"], item["earlier_version"]) for item in mine) == [
        ("note", "axon?", True), ("status", "Traced", True)]
    before = requests.get(url, params={"at": status.json()["edit_id"]}, headers=auth(tokens["vic"])).json()["annotations"]
    assert [item["value"] for item in before if item["kind"] == "status"] == ["Traced"]
    assert requests.post(f"{server.url}/api/edits/undo", json={"edit_id": note.json()["edit_id"]},
                         headers=auth(tokens["ben"])).status_code == 200
    kinds = [item["kind"] for item in requests.get(url, params={"root": root}, headers=auth(tokens["vic"])).json()["annotations"]]
    assert kinds == ["status"]
    removed = requests.post(f"{url}/remove", json={"annotation_id": todo.json()["started"][0]}, headers=auth(tokens["ben"]))
    assert removed.status_code == 200
    assert requests.get(url, params={"kind": "todo"}, headers=auth(tokens["vic"])).json()["annotations"] == []
    assert requests.get(url, params={"kind": "poem"}, headers=auth(tokens["vic"])).status_code == 400
    exported = requests.get(f"{server.url}/api/export/neurons", params={"format": "csv"}, headers=auth(tokens["vic"]))
    assert exported.status_code == 200 and "Traced" in exported.text


def test_two_reviewers_never_get_the_same_task(served):
    from db import store

    server, tokens, _ = served
    with store.open_store(server.workspace) as other:
        store.build_merge_queue(other, limit=20)
    url = f"{server.url}/api/review"
    first = requests.post(f"{url}/next", json={}, headers=auth(tokens["ana"]))
    second = requests.post(f"{url}/next", json={"queue": "merge"}, headers=auth(tokens["ben"]))
    assert first.status_code == second.status_code == 200, (first.text, second.text)
    assert first.json()["id"] != second.json()["id"]
    stolen = requests.post(f"{url}/answer", json={"task_id": first.json()["id"], "answer": "accept"}, headers=auth(tokens["ben"]))
    assert stolen.status_code == 409 and "leased to ana" in stolen.json()["error"]
    accepted = requests.post(f"{url}/answer", json={"task_id": first.json()["id"], "answer": "accept"}, headers=auth(tokens["ana"]))
    assert accepted.status_code == 200 and accepted.json()["edit_id"] is not None
    a, b = first.json()["supervoxels"]
    assert roots(server, tokens["ana"], int(a))[0] == roots(server, tokens["ana"], int(b))[0]
    again = requests.post(f"{url}/answer", json={"task_id": first.json()["id"], "answer": "reject"}, headers=auth(tokens["ana"]))
    assert again.status_code == 409 and "already answered" in again.json()["error"]
    for body, code in (({"task_id": second.json()["id"], "answer": "maybe"}, 400), ({"task_id": "x", "answer": "skip"}, 400)):
        assert requests.post(f"{url}/answer", json=body, headers=auth(tokens["ben"])).status_code == code
    assert requests.post(f"{url}/next", json={"queue": "nope"}, headers=auth(tokens["ben"])).status_code == 400
    assert requests.post(f"{url}/next", json={}, headers=auth(tokens["vic"])).status_code == 403
    progress = requests.get(f"{url}/progress", headers=auth(tokens["vic"])).json()["progress"]
    assert {"queue": "merge", "state": "done", "answer": "accept", "user": "ana", "tasks": 1} in progress


def test_review_in_the_viewer(served):
    """alt+r shows the next merge candidate (camera at it, both selected); alt+a merges it, alt+x rejects."""
    from db import store
    from server.auth import Caller
    from server.viewers import SEGMENTATION_LAYER

    server, tokens, _ = served
    with store.open_store(server.workspace) as other:
        store.build_merge_queue(other, limit=30)
    user_viewer = server.viewer_for(Caller("ana", "proofreader"))

    status, until = status_watch(user_viewer)

    user_viewer.viewer.actions.invoke("review-next", {})
    until(lambda: "one neuron?" in status(), "a task shown")
    task = user_viewer.review_task
    shown = sorted(int(s) for s in user_viewer.viewer.state.layers[SEGMENTATION_LAYER].segments)
    assert shown == sorted(task.supervoxels)
    resolution_xyz = server.image_geometry()[0]
    assert np.allclose(user_viewer.viewer.state.position, [v / r for v, r in zip(reversed(task.position_nm), resolution_xyz)])
    user_viewer.viewer.actions.invoke("review-accept", {})
    until(lambda: "merged (edit" in status(), "the accept")
    a, b = task.supervoxels
    assert roots(server, tokens["ana"], a)[0] == roots(server, tokens["ana"], b)[0]
    user_viewer.viewer.actions.invoke("review-next", {})
    until(lambda: user_viewer.review_task is not None and user_viewer.review_task.id != task.id, "the next task")
    user_viewer.viewer.actions.invoke("review-reject", {})
    until(lambda: "rejected" in status(), "the rejection")
    user_viewer.viewer.actions.invoke("review-reject", {})
    until(lambda: "no review task shown" in status(), "nothing left to answer")


def test_synapses_of_a_neuron_and_exports(served):
    import io

    server, tokens, supervoxels = served
    root = roots(server, tokens["vic"], supervoxels[0])[0]
    answer = requests.get(f"{server.url}/api/neurons/{root}/synapses", headers=auth(tokens["vic"]))
    assert answer.status_code == 200, answer.text
    synapses = answer.json()["synapses"]
    assert len(synapses) == 2  # supervoxel 0 is pre in one synapse and post in the other
    assert {s["pre_pt_supervoxel_id"] for s in synapses} == {str(supervoxels[0]), str(supervoxels[2])}
    # The viewer's neuron panel (key n) names the same partners as the synapse table.
    from server.auth import Caller
    from server.viewers import SEGMENTATION_LAYER, STATUS_KEY

    user_viewer = server.viewer_for(Caller("vic", "viewer"))
    user_viewer.viewer.actions.invoke("neuron-info", {"selectedValues": {SEGMENTATION_LAYER: {"value": str(supervoxels[0])}}})
    outputs = {s["post_pt_root_id"] for s in synapses if s["pre_pt_root_id"] == root}
    inputs = {s["pre_pt_root_id"] for s in synapses if s["post_pt_root_id"] == root}
    deadline = time.monotonic() + 10
    while f"neuron {root}" not in user_viewer.viewer.config_state.state.status_messages.get(STATUS_KEY, ""):
        assert time.monotonic() < deadline, "the neuron panel never showed"
        time.sleep(0.02)
    panel = user_viewer.viewer.config_state.state.status_messages[STATUS_KEY]
    assert all(f"outputs to {p}" in panel or f", {p} (" in panel for p in outputs) and outputs
    assert all(f"inputs from {p}" in panel or f", {p} (" in panel for p in inputs) and inputs
    assert requests.get(f"{server.url}/api/neurons/987654321/synapses", headers=auth(tokens["vic"])).status_code == 404
    assert requests.get(f"{server.url}/api/neurons/abc/synapses", headers=auth(tokens["vic"])).status_code == 400

    csv = requests.get(f"{server.url}/api/export/synapses", headers=auth(tokens["vic"]))
    assert csv.status_code == 200 and "attachment" in csv.headers["Content-Disposition"]
    assert len(pd.read_csv(io.StringIO(csv.text))) == 2
    parquet = requests.get(f"{server.url}/api/export/neurons", params={"format": "parquet"}, headers=auth(tokens["vic"]))
    assert parquet.status_code == 200 and len(pd.read_parquet(io.BytesIO(parquet.content))) > 100
    assert requests.get(f"{server.url}/api/export/passwords", headers=auth(tokens["vic"])).status_code == 404
    assert requests.get(f"{server.url}/api/export/edges", params={"format": "xls"}, headers=auth(tokens["vic"])).status_code == 400


def test_admin_adds_users_who_log_in_to_their_own_viewer(served):
    server, tokens, _ = served
    created = requests.post(f"{server.url}/api/users", json={"name": "zoe", "role": "proofreader"}, headers=auth(tokens["boss"]))
    assert created.status_code == 201, created.text
    assert requests.post(f"{server.url}/api/users", json={"name": "zoe", "role": "viewer"}, headers=auth(tokens["boss"])).status_code == 409
    assert requests.post(f"{server.url}/api/users", json={"name": "x y", "role": "viewer"}, headers=auth(tokens["boss"])).status_code == 400
    assert requests.post(f"{server.url}/api/users", json={"name": "yan", "role": "god"}, headers=auth(tokens["boss"])).status_code == 400

    zoe = requests.Session()
    login = zoe.get(server.url + created.json()["login_path"], allow_redirects=False)
    assert login.status_code == 302 and login.headers["Location"].startswith("/v/")
    viewer_path = login.headers["Location"]
    assert created.json()["token"] not in viewer_path, "the secret token must not appear in the viewer URL"
    assert "httponly" in login.headers["Set-Cookie"].lower()
    assert zoe.get(server.url + viewer_path).status_code == 200
    assert requests.get(server.url + viewer_path).status_code == 401
    assert requests.get(server.url + viewer_path, headers=auth(tokens["ana"])).status_code == 403
    action = requests.post(f"{server.url}/action{viewer_path[2:-1]}", json={"action": "undo", "state": {}})
    assert action.status_code == 401, "no write through a viewer without its owner's token"
    assert requests.get(f"{server.url}/login", params={"token": "wrong"}).status_code == 401


class GraphWatcher:
    """A client of the server's neuron-graph websocket, as Neuroglancer's nggraph source speaks it."""

    def __init__(self, url: str):
        import asyncio
        import queue
        import threading

        from tornado.websocket import websocket_connect

        self.messages: "queue.Queue[dict | None]" = queue.Queue()
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        async def connect():
            return await websocket_connect(url)

        self.connection = asyncio.run_coroutine_threadsafe(connect(), self.loop).result(10)
        asyncio.run_coroutine_threadsafe(self._read(), self.loop)
        self.next_watch_id = 0

    async def _read(self) -> None:
        while True:
            message = await self.connection.read_message()
            self.messages.put(None if message is None else json.loads(message))
            if message is None:
                return

    def watch(self, segment: int) -> int:
        self.loop.call_soon_threadsafe(self.connection.write_message, json.dumps({"watch": {"segment_id": str(segment)}}))
        self.next_watch_id += 1
        return self.next_watch_id - 1

    def receive(self, timeout_s: float = 5.0) -> dict | None:
        return self.messages.get(timeout=timeout_s)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.connection.close)


def graph_session(server, token: str) -> str:
    """Log in with the cookie, as the viewer page does, and get a graph session token."""
    browser = requests.Session()
    assert browser.get(f"{server.url}/login", params={"token": token}, allow_redirects=False).status_code == 302
    same_origin = {"Origin": server.url}
    session_token = browser.post(f"{server.url}/token", headers=same_origin)
    assert session_token.status_code == 200, session_token.text
    entity = browser.post(f"{server.url}/entity_token", json={"entity": "segmentation"},
                          headers={**same_origin, "Authorization": session_token.text})
    assert entity.status_code == 200 and entity.json()["entity_type"] == "graph", entity.text
    config = browser.post(f"{server.url}/graph/config", headers={**same_origin, "Authorization": session_token.text})
    assert config.json()["datasource_url"] == f"precomputed://{server.url}/data/segmentation"
    assert browser.post(f"{server.url}/token").status_code == 403, "a cookie write from another origin is refused"
    assert requests.post(f"{server.url}/token").status_code == 401, "no session without a login"
    return session_token.text


def test_viewers_hear_of_edits_to_the_neurons_they_show_within_a_second(served):
    """The graph protocol: a watched supervoxel answers with its neuron; an edit to that neuron (over the API,
    or by another process) reaches the watcher within a second, and nothing else is sent."""
    from db import store
    from server.neuron_graph import GRAPH_BIT

    server, tokens, supervoxels = served
    a, b, c, far = supervoxels[30], supervoxels[31], supervoxels[32], supervoxels[-1]
    token = graph_session(server, tokens["ana"])
    watcher = GraphWatcher(f"ws://127.0.0.1:{server.port}/graph/watch/{token}")
    try:
        watches = {sv: watcher.watch(sv) for sv in (a, b, far)}
        answers = {}
        for _ in range(3):
            message = watcher.receive()
            answers[message["watch_id"]] = message
        for sv, watch_id in watches.items():
            info = answers[watch_id]["info"]
            assert answers[watch_id]["state"] == "ok" and sv in info["base_segment_ids"]
            assert int(info["id"]) == GRAPH_BIT | store.root_of(server.store, sv)
        assert watcher.watch(10**15) == 3 and watcher.receive() == {"watch_id": 3, "state": "invalid"}

        def updates_within(seconds: float) -> dict[int, dict]:
            deadline, seen = time.monotonic() + seconds, {}
            while time.monotonic() < deadline:
                try:
                    message = watcher.receive(timeout_s=max(0.01, deadline - time.monotonic()))
                except Exception:
                    break
                seen[message["watch_id"]] = message["info"]
            return seen

        started = time.monotonic()
        requests.post(f"{server.url}/api/edits/merge", json={"supervoxels": [a, b]}, headers=auth(tokens["ben"])).raise_for_status()
        seen = updates_within(1.0)
        assert set(seen) == {watches[a], watches[b]}, "the two merged neurons' watchers hear of it, the other does not"
        assert seen[watches[a]]["id"] == seen[watches[b]]["id"] and {a, b} <= set(seen[watches[a]]["base_segment_ids"])
        assert time.monotonic() - started < 1.0 + 1.0  # the merge's own round trip, then at most a second
        with store.open_store(server.workspace) as other_process_store:  # an edit that bypasses this server
            store.merge(other_process_store, b, c, user="ben")
        seen = updates_within(1.0)
        assert {a, b, c} <= set(seen[watches[a]]["base_segment_ids"]) and watches[far] not in seen
    finally:
        watcher.close()


def test_viewer_actions_merge_split_with_preview_and_undo(served):
    """The key bindings' actions, dispatched as Neuroglancer dispatches them (no browser needed)."""
    from db import store
    from server.auth import Caller
    from server.viewers import SEGMENTATION_LAYER

    from server.neuron_graph import viewer_segment_id
    from server.viewers import MARKS_LAYER, PREVIEW_LAYER

    server, tokens, supervoxels = served
    user_viewer = server.viewer_for(Caller("ben", "proofreader"))
    a, b, c = supervoxels[50:53]

    status, until = status_watch(user_viewer)

    def shows_latest_edit() -> bool:  # edits are judged against what the viewer showed, so let it catch up
        return user_viewer.shown_edit_id == store.latest_edit_id(server.store)

    def under_mouse(supervoxel: int) -> dict:
        return {"selectedValues": {SEGMENTATION_LAYER: {"value": str(supervoxel)}}, "mousePosition": [10.0, 20.0, 5.0]}

    for first, second in ((a, b), (b, c)):
        with user_viewer.viewer.txn() as state:
            state.layers[SEGMENTATION_LAYER].segments = [first, second]
        until(lambda: sorted(user_viewer.last_selected(2)) == sorted([first, second]), "selection tracked")
        user_viewer.viewer.actions.invoke("merge-selected", {})
        until(lambda: len(set(roots(server, tokens["ben"], first, second))) == 1, "merge")
        until(shows_latest_edit, "the viewer to show the merge")
    until(lambda: "merged neurons" in status(), "merge status")

    root = int(roots(server, tokens["ben"], a)[0])
    with user_viewer.viewer.txn() as state:  # the neuron selected, as the viewer shows it
        state.layers[SEGMENTATION_LAYER].segments = [viewer_segment_id(root)]
    user_viewer.viewer.actions.invoke("split-source", under_mouse(a))
    user_viewer.viewer.actions.invoke("split-sink", under_mouse(c))
    assert (user_viewer.split_sources, user_viewer.split_sinks) == ([a], [c])
    marks = user_viewer.viewer.state.layers[MARKS_LAYER].annotations
    assert [(mark.id, list(mark.props)) for mark in marks] == [(f"source-{a}", [0]), (f"sink-{c}", [1])], "split marks drawn"
    user_viewer.viewer.actions.invoke("split-preview", {})
    until(lambda: "split preview:" in status(), "split preview")
    preview = user_viewer.viewer.state.layers[PREVIEW_LAYER]
    assert not any(a in group and c in group for group in preview.equivalences.to_json()), "the preview shows the pieces apart"
    assert len(preview.segments) == 2 and viewer_segment_id(root) not in user_viewer.viewer.state.layers[SEGMENTATION_LAYER].segments
    assert len(set(roots(server, tokens["ben"], a, b, c))) == 1, "a preview changes nothing in the store"
    user_viewer.viewer.actions.invoke("split-run", {})
    until(lambda: len(set(roots(server, tokens["ben"], a, c))) == 2, "split")
    until(lambda: "split neuron" in status(), "split status")
    shown = {int(segment) for segment in user_viewer.viewer.state.layers[SEGMENTATION_LAYER].segments}
    assert shown == {viewer_segment_id(int(r)) for r in roots(server, tokens["ben"], a, b, c)}, "every piece stays on screen"
    assert PREVIEW_LAYER not in user_viewer.viewer.state.layers and MARKS_LAYER not in user_viewer.viewer.state.layers
    assert user_viewer.preview_root is None and not user_viewer.split_sources

    user_viewer.viewer.actions.invoke("undo", {})  # ben's latest edit: the split
    until(lambda: len(set(roots(server, tokens["ben"], a, b, c))) == 1, "undo of the split")
    until(lambda: "undo of edit" in status(), "undo status")
    undone = viewer_segment_id(int(roots(server, tokens["ben"], a)[0]))
    until(lambda: [int(s) for s in user_viewer.viewer.state.layers[SEGMENTATION_LAYER].segments] == [undone],
          "the viewer follows the undo: both pieces replaced by the neuron they make again")
    user_viewer.viewer.actions.invoke("split-run", {})  # no marks left: refused with a reason
    until(lambda: "mark at least one split source" in status(), "refusal")


DATA_ESCAPES = [
    "/data/image/../../connectome.toml",
    "/data/image/..%2F..%2Fconnectome.toml",
    "/data/image/%2e%2e/%2e%2e/connectome.toml",
    "/data/image/%2E%2E%2F%2E%2E%2Fconnectome.toml",
    "/data/%2e%2e/connectome.toml",
    "/data/..%2F..%2F/connectome.toml",
    "/data/image/%252e%252e/%252e%252e/connectome.toml",
    "/data/image//etc/passwd",
    "/data/image/%2Fetc%2Fpasswd",
    "/data/image/....//....//connectome.toml",
    "/data/image/leak",
    "/data/image/leak/../info",
    "/api/..%2F..%2Fconnectome.toml",
    "/v/{viewer}/..%2F..%2F..%2Fconnectome.toml",
    "/v/{viewer}/%2e%2e/%2e%2e/connectome.toml",
]


def test_no_route_reads_outside_the_workspace_layers(served):
    server, tokens, _ = served
    layer_dir = server.workspace.layer_path("image")
    leak = layer_dir / "leak"
    if not leak.exists():
        os.symlink(server.workspace.root / "connectome.toml", leak)  # a link inside a layer, pointing out of it
    login = requests.get(f"{server.url}/login", params={"token": tokens["ana"]}, allow_redirects=False)
    viewer_id = login.headers["Location"].split("/")[2]
    secret_text = (server.workspace.root / "connectome.toml").read_bytes()
    status, body = raw_get(server, "/data/image/info", cookie=tokens["ana"])
    assert status == 200 and json.loads(body)["type"] == "image"
    for path in DATA_ESCAPES:
        status, body = raw_get(server, path.format(viewer=viewer_id), cookie=tokens["ana"])
        assert status in (400, 403, 404), (path, status)
        assert secret_text not in body and b"root:" not in body, path


def test_chunks_are_served_gzip_encoded_with_cors(served, built):
    server, tokens, _ = served
    info = requests.get(f"{server.url}/data/image/info", headers=auth(tokens["vic"])).json()
    scale = info["scales"][0]
    x, y, z = (min(c, s) for c, s in zip(scale["chunk_sizes"][0], scale["size"]))  # the first chunk, clipped to the volume
    answer = requests.get(f"{server.url}/data/image/{scale['key']}/0-{x}_0-{y}_0-{z}", headers=auth(tokens["vic"]))
    assert answer.status_code == 200 and answer.headers["Access-Control-Allow-Origin"] == "*"
    assert answer.headers["Content-Encoding"] == "gzip"
    chunk = np.frombuffer(answer.content, dtype=np.uint8).reshape(z, y, x)  # requests undid the gzip encoding
    np.testing.assert_array_equal(chunk, built[3][:z, :y, :x])


@pytest.mark.slow
def test_schemathesis_finds_no_server_error(served, tmp_path):
    server, tokens, _ = served
    command = [str(Path(sys.executable).with_name("schemathesis")), "run", f"{server.url}/api/openapi.json",
               "-H", f"Authorization: Bearer {tokens['boss']}", "--checks", "not_a_server_error",
               "--max-examples", "25", "--workers", "1", "--seed", "7", "--no-color", "--generation-database", "none"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    tail = result.stdout[-3000:] + result.stderr[-2000:]
    assert result.returncode == 0, tail
    assert "Server error" not in result.stdout and "generated" in result.stdout, tail


def test_which_retired_neurons_a_viewer_state_push_replaces():
    """Only what the client cannot do itself: a merge with a neuron not on screen is renamed by the graph protocol
    (no push); a split's pieces are all selected; neurons that became one are selected once."""
    from server.neuron_graph import viewer_segment_id as v
    from server.viewers import _replaced

    assert _replaced([v(1), v(2)], {1: [10]}) == [v(1), v(2)]  # merged with something unseen: the client renames it
    assert _replaced([v(1), v(2)], {1: [10, 11]}) == [v(10), v(11), v(2)]  # split: both pieces stay on screen
    assert _replaced([v(1), v(2), v(3)], {1: [10], 2: [10]}) == [v(10), v(3)]  # two shown neurons merged
    assert _replaced([v(1), v(10)], {1: [10]}) == [v(10)]  # merged into one already shown
    assert _replaced([5, v(2)], {2: [20, 21]}) == [5, v(20), v(21)]  # a selected supervoxel id is kept as it is
