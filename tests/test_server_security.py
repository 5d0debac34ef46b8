"""Security and robustness of the server and the CLI, each finding as a test (issue: security findings).

On a synthetic workspace (no shared data needed), one server per module on 127.0.0.1 and a free port.
"""
from __future__ import annotations

import io
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pyarrow.parquet as pq
import pytest
import requests

from synth_workspace import adjacent_pair, build_synth_workspace

CONNECTOME = str(Path(sys.executable).with_name("connectome"))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from server.app import ProofreadingServer

    workspace, tokens, supervoxels = build_synth_workspace(tmp_path_factory.mktemp("security") / "ws")
    server = ProofreadingServer(workspace, port=0)
    yield server, tokens, supervoxels
    server.close()


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def cookie_session(server, token: str) -> requests.Session:
    session = requests.Session()
    answer = session.get(f"{server.url}/login", params={"token": token}, allow_redirects=False)
    assert answer.status_code == 302 and "connectome_token" in session.cookies
    return session


def root_of(server, token: str, supervoxel: int) -> str:
    answer = requests.get(f"{server.url}/api/roots", params={"supervoxels": str(supervoxel)}, headers=bearer(token))
    assert answer.status_code == 200, answer.text
    return answer.json()["roots"][str(supervoxel)]


# ------------------------------------------------------------------ 1. cross-site request forgery

def test_cookie_writes_from_another_origin_are_refused(served):
    server, tokens, supervoxels = served
    from db import store

    a, b = adjacent_pair(server.store, supervoxels)
    session = cookie_session(server, tokens["ana"])
    before = store.latest_edit_id(server.store)
    own = f"http://127.0.0.1:{server.port}"
    other_port = f"http://127.0.0.1:{server.port + 1 if server.port < 65535 else 1}"
    body = json.dumps({"supervoxels": [str(a), str(b)]})
    # The attack as found: cookie only, text/plain (a "simple" request, no preflight), another port of the host.
    forged = session.post(f"{server.url}/api/edits/merge", data=body,
                          headers={"Content-Type": "text/plain", "Origin": other_port})
    assert forged.status_code == 403, forged.text
    assert forged.json()["status"] == 403 and "cross-origin" in forged.json()["error"]
    for headers in ({"Content-Type": "application/json", "Origin": other_port},
                    {"Content-Type": "application/json", "Origin": "null"},
                    {"Content-Type": "application/json"},  # neither Origin nor Referer
                    {"Content-Type": "application/json", "Referer": f"{other_port}/page"}):
        assert session.post(f"{server.url}/api/edits/merge", data=body, headers=headers).status_code == 403, headers
    # From the server's own page but not JSON: refused too (a form post cannot send JSON).
    assert session.post(f"{server.url}/api/edits/merge", data=body,
                        headers={"Content-Type": "text/plain", "Origin": own}).status_code == 415
    assert store.latest_edit_id(server.store) == before, "a refused request must not edit"
    assert root_of(server, tokens["ana"], a) != root_of(server, tokens["ana"], b)

    # The same request from the server's own page works, with Origin or (older browsers) Referer only.
    merged = session.post(f"{server.url}/api/edits/merge", data=body,
                          headers={"Content-Type": "application/json", "Origin": own})
    assert merged.status_code == 200, merged.text
    assert root_of(server, tokens["ana"], a) == root_of(server, tokens["ana"], b)
    undone = session.post(f"{server.url}/api/edits/undo", data="{}",
                          headers={"Content-Type": "application/json", "Referer": f"{own}/v/x/"})
    assert undone.status_code == 200, undone.text
    # A bearer token is never attached by a browser on its own: no origin needed.
    assert requests.post(f"{server.url}/api/edits/redo", json={}, headers=bearer(tokens["ana"])).status_code == 200
    assert requests.post(f"{server.url}/api/edits/undo", json={}, headers=bearer(tokens["ana"])).status_code == 200


def test_neuroglancer_action_and_state_posts_need_the_viewer_s_own_origin(served):
    server, tokens, _ = served
    session = cookie_session(server, tokens["ben"])
    viewer_path = server.viewer_for(server.auth.caller_for_token(tokens["ben"])).path  # /v/<viewer-id>/
    viewer_id = viewer_path.strip("/").split("/")[1]
    own = f"http://127.0.0.1:{server.port}"
    action = json.dumps({"action": "no-such-action", "state": {}})
    for route in (f"/action/{viewer_id}", f"/state/{viewer_id}"):
        forged = session.post(server.url + route, data=action, headers={"Origin": "http://127.0.0.1:1"})
        assert forged.status_code == 403, (route, forged.text)
    accepted = session.post(f"{server.url}/action/{viewer_id}", data=action, headers={"Origin": own})
    assert accepted.status_code == 200, accepted.text
    nested = session.post(f"{server.url}/action/{viewer_id}", data="[" * 100_000, headers={"Origin": own})
    assert nested.status_code == 400, nested.text


# ------------------------------------------------------------------ 2. bodies bounded before they are read

def _rss_bytes() -> int:
    return psutil.Process().memory_info().rss


def _post_raw(server, path: str, declared: int, send: int, headers: dict | None = None) -> tuple[int | None, int]:
    """POST `send` bytes of a body declared as `declared` bytes; (status or None, bytes the server took)."""
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{server.port}", "Content-Type: application/json",
             f"Content-Length: {declared}"] + [f"{k}: {v}" for k, v in (headers or {}).items()]
    connection = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sent = 0
    chunk = b" " * (1 << 20)
    try:
        connection.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        while sent < send:
            connection.sendall(chunk[:min(len(chunk), send - sent)])
            sent += min(len(chunk), send - sent)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server answered and closed the connection instead of reading on
    try:
        reply = connection.recv(65536)
    except (ConnectionResetError, socket.timeout):
        reply = b""
    finally:
        connection.close()
    status = int(reply.split()[1]) if reply.startswith(b"HTTP/1.1") else None
    return status, sent


def test_an_oversized_unauthenticated_body_is_refused_unread(served):
    server, tokens, _ = served
    body_mb = 96
    baseline = _rss_bytes()
    status, _ = _post_raw(server, "/api/edits/merge", declared=body_mb << 20, send=body_mb << 20)
    time.sleep(0.2)
    grown_mb = (_rss_bytes() - baseline) / 2**20
    assert status == 413, status
    assert grown_mb < 8, f"the server grew by {grown_mb:.0f} MB for a refused {body_mb} MB body"
    # Under the route's cap but without a token: refused on the headers, before the body.
    status, _ = _post_raw(server, "/api/edits/merge", declared=200_000, send=200_000)
    assert status == 401
    # The same cap holds for an authenticated caller (an edit is a few KB), and on Neuroglancer's routes.
    status, _ = _post_raw(server, "/api/edits/merge", declared=8 << 20, send=8 << 20, headers=bearer(tokens["ana"]))
    assert status == 413
    status, _ = _post_raw(server, "/state/no-such-viewer", declared=body_mb << 20, send=body_mb << 20)
    assert status == 404
    # Any other route keeps the small default cap: the connection is closed, nothing buffered.
    baseline = _rss_bytes()
    _post_raw(server, "/neuroglancer/info/x", declared=body_mb << 20, send=body_mb << 20)
    assert (_rss_bytes() - baseline) / 2**20 < 8


# ------------------------------------------------------------------ 3. ids: ASCII digits only

@pytest.mark.parametrize("bad", ["¹", "³", "٥", "５", "1_0", "-5", "0x5", "9" * 5000, "9" * 20])
def test_ids_and_integers_take_ascii_digits_only(served, bad):
    server, tokens, supervoxels = served
    headers = bearer(tokens["boss"])
    url = server.url
    answers = [
        requests.get(f"{url}/api/roots", params={"supervoxels": bad}, headers=headers),
        requests.get(f"{url}/api/roots", params={"supervoxels": str(supervoxels[0]), "at": bad}, headers=headers),
        requests.get(f"{url}/api/history", params={"limit": bad}, headers=headers),
        requests.get(f"{url}/api/history", params={"since_edit": bad}, headers=headers),
        requests.get(f"{url}/api/neurons/{requests.utils.quote(bad)}/synapses", headers=headers),
        requests.get(f"{url}/api/export/synapses", params={"at": bad}, headers=headers),
        requests.post(f"{url}/api/edits/merge", json={"supervoxels": [bad, str(supervoxels[1])]}, headers=headers),
        requests.post(f"{url}/api/edits/undo", json={"edit_id": bad}, headers=headers),
    ]
    assert [answer.status_code for answer in answers] == [400] * len(answers), [a.text[:200] for a in answers]
    assert all(answer.json()["status"] == 400 for answer in answers)


def test_deeply_nested_json_is_a_bad_request(served):
    server, tokens, _ = served
    for body in ("[" * 100_000, '{"supervoxels": ' + "[" * 50_000 + "]" * 50_000 + "}"):
        answer = requests.post(f"{server.url}/api/edits/merge", data=body, headers=bearer(tokens["ana"]))
        assert answer.status_code == 400, answer.text


def test_cli_ids_take_ascii_digits_only(tmp_path):
    from volumes.ids import parse_id, parse_int

    assert parse_id("12", "id") == 12 and parse_id(12, "id") == 12 and parse_int("0", "n") == 0
    for bad in ("¹", "٥", "５", "1_0", "", "9" * 20, "-1"):
        with pytest.raises(Exception) as caught:
            parse_id(bad, "supervoxel")
        assert type(caught.value).__name__ == "InputError" and "supervoxel" in str(caught.value)


# ------------------------------------------------------------------ 4. a missing, emptied or damaged store

@pytest.fixture(scope="module")
def built_workspace(tmp_path_factory):
    workspace, tokens, supervoxels = build_synth_workspace(tmp_path_factory.mktemp("store") / "ws", seed=5)
    return workspace


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CONNECTOME, *args], capture_output=True, text=True, timeout=300)


def _copy_workspace(source, target: Path):
    import shutil

    shutil.copytree(source.root, target, ignore=shutil.ignore_patterns("*.db-wal", "*.db-shm", "*.writelock"))
    return target


NON_INIT_COMMANDS = (
    ("edit", "history"), ("edit", "roots", "1"), ("user", "add", "eve", "--role", "viewer"), ("user", "list"),
    ("export", "--format", "csv", "--out", "{tmp}/out"),
)


def test_an_emptied_or_missing_store_is_refused_by_every_non_init_command(built_workspace, tmp_path):
    workspace = _copy_workspace(built_workspace, tmp_path / "ws")
    database = workspace / "connectome.db"
    for damage in ("empty", "missing"):
        if damage == "empty":
            database.write_bytes(b"")
        else:
            database.unlink()
        for command in NON_INIT_COMMANDS:
            result = _cli(*[part.format(tmp=tmp_path) for part in command], "-w", str(workspace))
            assert result.returncode == 2, (command, result.stdout, result.stderr)
            assert result.stderr.count("\n") == 1 and str(database) in result.stderr, result.stderr
            assert "Traceback" not in result.stderr
        assert not database.exists() or database.stat().st_size == 0, "nothing may recreate the store"
    from server.app import ProofreadingServer
    from volumes.errors import InputError
    from volumes.workspace import Workspace

    with pytest.raises(InputError, match="does not exist"):
        ProofreadingServer(Workspace(workspace), port=0)
    # init is the command that makes a new one.
    assert _cli("init", str(workspace)).returncode == 0
    assert _cli("edit", "history", "-w", str(workspace)).returncode == 0


def test_a_store_damaged_in_the_middle_is_refused_at_open(built_workspace, tmp_path):
    workspace = _copy_workspace(built_workspace, tmp_path / "ws")
    database = workspace / "connectome.db"
    with sqlite3.connect(database) as connection:  # fold the WAL in, so the file holds every page
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = connection.execute("PRAGMA page_size").fetchone()[0]
        pages = connection.execute("PRAGMA page_count").fetchone()[0]
        # a page of the supervoxel table's B-tree, half-way into the file
        root_page = connection.execute("SELECT rootpage FROM sqlite_master WHERE name = 'supervoxels'").fetchone()[0]
    assert pages > 8
    data = bytearray(database.read_bytes())
    offset = (root_page - 1) * page_size
    data[offset:offset + page_size] = bytes([0xA5]) * page_size
    database.write_bytes(bytes(data))
    result = _cli("edit", "history", "-w", str(workspace))
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert str(database) in result.stderr and ("corrupt" in result.stderr or "malformed" in result.stderr), result.stderr
    assert result.stderr.count("\n") == 1


def test_a_damaged_layer_info_is_named(built_workspace, tmp_path):
    workspace = _copy_workspace(built_workspace, tmp_path / "ws")
    info = workspace / "layers" / "segmentation" / "info"
    info.write_text("{ not json")
    result = _cli("layers", "-w", str(workspace))
    assert result.returncode == 2 and str(info) in result.stderr, result.stderr
    from server.app import ProofreadingServer
    from volumes.errors import InputError
    from volumes.workspace import Workspace

    with pytest.raises(InputError, match="not valid JSON"):
        ProofreadingServer(Workspace(workspace), port=0)


# ------------------------------------------------------------------ 5. binding and ports

def test_ports_out_of_range_are_refused(built_workspace):
    for port in ("99999", "-1", "65536", "٥", "80x"):
        result = _cli("serve", "-w", str(built_workspace.root), "--port", port)
        assert result.returncode == 2 and "--port" in result.stderr, (port, result.stderr)


def test_a_non_loopback_bind_is_warned_about(capsys):
    from server.app import check_bind_address
    from volumes.errors import InputError

    check_bind_address("127.0.0.1", 8080)
    check_bind_address("::1", 0)
    check_bind_address("localhost", 1)
    assert capsys.readouterr().err == ""
    check_bind_address("0.0.0.0", 8080)
    warning = capsys.readouterr().err
    assert "0.0.0.0" in warning and "TLS" in warning
    with pytest.raises(InputError):
        check_bind_address("127.0.0.1", 99999)


def test_a_bad_port_in_the_config_is_one_line(built_workspace, tmp_path):
    workspace = _copy_workspace(built_workspace, tmp_path / "ws")
    config = workspace / "connectome.toml"
    config.write_text(config.read_text().replace("port = 8080", 'port = "eighty"'))
    result = _cli("serve", "-w", str(workspace))
    assert result.returncode == 2 and "connectome.toml" in result.stderr and "port" in result.stderr, result.stderr


# ------------------------------------------------------------------ 6. tokens

def test_login_cookie_is_secure_over_https(served):
    server, tokens, _ = served
    plain = requests.get(f"{server.url}/login", params={"token": tokens["vic"]}, allow_redirects=False)
    proxied = requests.get(f"{server.url}/login", params={"token": tokens["vic"]}, allow_redirects=False,
                           headers={"X-Forwarded-Proto": "https"})
    assert plain.status_code == proxied.status_code == 302
    assert "secure" not in plain.headers["Set-Cookie"].lower()
    assert "secure" in proxied.headers["Set-Cookie"].lower() and "httponly" in proxied.headers["Set-Cookie"].lower()


def test_removed_expired_and_reset_tokens(built_workspace, tmp_path):
    from datetime import datetime, timedelta, timezone

    from db import store
    from volumes.errors import ConnectomeError

    workspace = _copy_workspace(built_workspace, tmp_path / "ws")
    token = _cli("user", "add", "eve", "--role", "viewer", "-w", str(workspace)).stdout.strip()
    with store.open_store(workspace, create=False) as opened:
        assert store.user_for_token(opened, token).name == "eve"
        short = store.add_user(opened, "old", "viewer", expires_at=datetime.now(timezone.utc) - timedelta(seconds=1))
        with pytest.raises(ConnectomeError, match="expired"):
            store.user_for_token(opened, short)
    listing = _cli("user", "list", "-w", str(workspace))
    assert listing.returncode == 0 and "eve\tviewer" in listing.stdout and "active" in listing.stdout
    new_token = _cli("user", "reset-token", "eve", "-w", str(workspace)).stdout.strip()
    assert new_token and new_token != token
    assert _cli("user", "remove", "eve", "-w", str(workspace)).returncode == 0
    with store.open_store(workspace, create=False) as opened:
        for old in (token, new_token):
            with pytest.raises(ConnectomeError):
                store.user_for_token(opened, old)
    assert "removed" in _cli("user", "list", "-w", str(workspace)).stdout
    again = _cli("user", "remove", "eve", "-w", str(workspace))
    assert again.returncode == 1 and "already removed" in again.stderr


# ------------------------------------------------------------------ 7. exports: the API and the CLI write the same files

def test_api_exports_match_the_cli_and_read_back(served, tmp_path):
    server, tokens, _ = served
    out = tmp_path / "cli"
    result = _cli("export", "-w", str(server.workspace.root), "--format", "csv", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert _cli("export", "-w", str(server.workspace.root), "--format", "parquet", "--out", str(out)).returncode == 0
    for table in ("synapses", "edges", "neurons"):
        csv = requests.get(f"{server.url}/api/export/{table}", params={"format": "csv"}, headers=bearer(tokens["vic"]))
        assert csv.status_code == 200 and csv.content == (out / f"{table}.csv").read_bytes(), table
        parquet = requests.get(f"{server.url}/api/export/{table}", params={"format": "parquet"}, headers=bearer(tokens["vic"]))
        assert parquet.status_code == 200
        from_api = pd.read_parquet(io.BytesIO(parquet.content))
        pd.testing.assert_frame_equal(from_api, pd.read_parquet(out / f"{table}.parquet"))
        assert pq.read_table(io.BytesIO(parquet.content)).equals(pq.read_table(out / f"{table}.parquet"))
    synapses = pd.read_csv(io.StringIO(requests.get(f"{server.url}/api/export/synapses",
                                                    headers=bearer(tokens["vic"])).text))
    assert len(synapses) == 2 and all(", " in text for text in synapses["pre_pt_position"])


# ------------------------------------------------------------------ 8. CLI errors are sentences

def test_cli_failures_are_sentences_with_exit_2(tmp_path):
    import numpy as np

    assert _cli("init", str(tmp_path / "w")).returncode == 0
    bad_model = tmp_path / "model.pt"
    bad_model.write_bytes(os.urandom(4096))
    image = tmp_path / "image.npy"
    np.save(image, np.zeros((8, 8, 8), np.uint8))
    for command in (("serve", "-w", str(tmp_path / "w"), "--port", "99999"),
                    ("synapses", "detect", "-w", str(tmp_path / "w"), "--model", str(bad_model), "--image", "x",
                     "--segmentation", "y")):
        result = _cli(*command)
        assert result.returncode == 2, (command, result.stderr)
        assert "Error:" not in result.stderr and "Traceback" not in result.stderr, result.stderr


# ------------------------------------------------------------------ the whole API, fuzzed

def test_schemathesis_with_an_admin_token_finds_no_server_error(served, tmp_path):
    """Every documented route, with generated valid and invalid input: 0 answers of 500 or more."""
    server, tokens, _ = served
    command = [str(Path(sys.executable).with_name("schemathesis")), "run", f"{server.url}/api/openapi.json",
               "-H", f"Authorization: Bearer {tokens['boss']}", "--checks", "not_a_server_error",
               "--max-examples", "60", "--workers", "1", "--seed", "11", "--no-color", "--generation-database", "none",
               "--mode", "all"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    tail = result.stdout[-4000:] + result.stderr[-2000:]
    print(result.stdout[-1200:])
    assert result.returncode == 0, tail
    assert "Server error" not in result.stdout and "generated" in result.stdout, tail
