"""`connectome demo`: builds a workspace end to end, reuses finished steps, and the served URL loads."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest
import requests

from conftest import REPO_ROOT

pytestmark = pytest.mark.slow


def run_cli(*argv: str, timeout_s: int = 1200) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.main", *argv], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout_s)


def check_built(workspace_dir, minimum_supervoxels: int) -> dict:
    from db import store
    from volumes.meshing import mesh_is_complete
    from volumes.workspace import Workspace

    workspace = Workspace(workspace_dir)
    assert {"image", "segmentation"} <= set(workspace.layer_names())
    assert mesh_is_complete(workspace.layer_path("segmentation"))
    with store.open_store(workspace) as proofreading_store:
        assert len(store.neuron_table(proofreading_store)) >= minimum_supervoxels
    logins = json.loads((workspace.root / "demo-logins.json").read_text())
    assert set(logins) == {"admin", "ana"}
    return logins


def serve_and_open(workspace_dir, token: str) -> None:
    """`connectome serve` on a free port: the printed URL and the login link load; then stop it."""
    server = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "-w", str(workspace_dir), "--port", "0"],
                              cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = server.stdout.readline()
        match = re.search(r"at (http://127\.0\.0\.1:\d+)/", line)
        assert match, line
        url = match.group(1)
        assert requests.get(url + "/", timeout=10).status_code == 200
        viewer = requests.get(f"{url}/login", params={"token": token}, timeout=10)
        assert viewer.status_code == 200 and "/v/" in viewer.url and "<html" in viewer.text.lower()
        assert requests.get(f"{url}/api/me", headers={"Authorization": f"Bearer {token}"}, timeout=10).json()["name"] == "admin"
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_offline_demo_builds_reuses_and_serves(tmp_path):
    workspace_dir = tmp_path / "demo-workspace"
    started = time.monotonic()
    first = run_cli("demo", "--workspace", str(workspace_dir), "--no-serve", "--offline")
    assert first.returncode == 0, first.stderr[-2000:]
    print(f"offline demo built in {time.monotonic() - started:.0f} s")
    assert "synthetic" in first.stdout and "using the small FFN model shipped" in first.stdout
    assert "detected with the small synapse model shipped" in first.stdout
    # The demo knows the truth and says how far its segmentation is from it.
    score = re.search(r"against the synthetic truth: VOI split/merge ([0-9.]+)/([0-9.]+), sum ([0-9.]+); (\d+) segments "
                      r"for (\d+) true neurons; the widest segment spans (\d+) true neurons", first.stdout)
    assert score, first.stdout[-2000:]
    split, merge, total = (float(v) for v in score.groups()[:3])
    assert abs(split + merge - total) < 0.002 and int(score.group(5)) >= 10 and int(score.group(6)) >= 1
    logins = check_built(workspace_dir, minimum_supervoxels=5)

    again = run_cli("demo", "--workspace", str(workspace_dir), "--no-serve", "--offline")
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("already done, reusing it") == 7  # every step
    serve_and_open(workspace_dir, logins["admin"])


def test_demo_on_the_fib25_cube_with_googles_checkpoint(tmp_path, shared_data, google_ffn_dir, fib25_h5):
    workspace_dir = tmp_path / "fib25-demo"
    box = "101,101,101,149,149,149"  # 48^3 keeps the FFN run short in the test suite
    result = run_cli("demo", "--data", str(shared_data), "--workspace", str(workspace_dir), "--bbox", box, "--no-serve")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Google's FFN checkpoint" in result.stdout and "FFN segmentation written as layer 'ffn'" in result.stdout
    assert "published FFN segmentation of the whole cube" in result.stdout
    logins = check_built(workspace_dir, minimum_supervoxels=200)  # Google's result has 254 segments
    serve_and_open(workspace_dir, logins["admin"])


def test_a_busy_port_is_reported_before_anything_is_built(tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("demo", "--workspace", str(tmp_path / "w"), "--offline", "--port", str(port), timeout_s=120)
    assert result.returncode == 2 and f"127.0.0.1:{port}" in result.stderr and "--port" in result.stderr, result.stderr
    assert not (tmp_path / "w").exists(), "nothing is built when the server could not start"
