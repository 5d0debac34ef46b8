"""Layers shown without importing them (`connectome layers add`): a local precomputed volume outside the
workspace (inside a data root), one on a web server, refusals, and both rendered in Chromium."""
from __future__ import annotations

import functools
import http.server
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import requests

from test_server_browser import open_viewer, rendered_panel, start_chromium, wait_for

CONNECTOME = str(Path(sys.executable).with_name("connectome"))


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CONNECTOME, *args], capture_output=True, text=True, timeout=300)


class GzipAwareHandler(http.server.SimpleHTTPRequestHandler):
    """A static web server as a bucket behaves: CORS, and `NAME.gz` sent for NAME with Content-Encoding gzip."""

    def end_headers(self) -> None:
        self.send_header("Access-Control-Allow-Origin", "*")
        super().end_headers()

    def do_GET(self) -> None:
        path = Path(self.translate_path(self.path))
        if not path.exists() and path.with_name(path.name + ".gz").is_file():
            body = path.with_name(path.name + ".gz").read_bytes()
            self.send_response(200)
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def external(tmp_path_factory):
    """A synthetic workspace, a data root outside it holding a copy of its image (flipped, so it differs), a web
    server holding another, both registered; yields (workspace, tokens, local layer dir, web URL)."""
    from synth_workspace import RESOLUTION_NM, build_synth_workspace

    from volumes.external_layers import add_external_layer
    from volumes.precomputed import write_layer
    from volumes.workspace import Workspace

    base = tmp_path_factory.mktemp("external")
    workspace, tokens, _ = build_synth_workspace(base / "ws")
    from cloudvolume import CloudVolume

    image = np.asarray(CloudVolume(workspace.layer_url("image"))[:, :, :])[..., 0].transpose(2, 1, 0)
    root = base / "lab-data"
    write_layer(root / "em-flipped", image[:, ::-1].copy(), RESOLUTION_NM, "image", progress=False)
    web = base / "web"
    write_layer(web / "em-web", image[::-1].copy(), RESOLUTION_NM, "image", progress=False)
    handler = functools.partial(GzipAwareHandler, directory=str(web))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    web_url = f"http://127.0.0.1:{httpd.server_address[1]}/em-web"
    workspace.set_config("data", "roots", [str(root)])
    workspace = Workspace(workspace.root)
    add_external_layer(workspace, "local-em", f"file://{root / 'em-flipped'}")
    add_external_layer(workspace, "web-em", f"precomputed://{web_url}")
    yield workspace, tokens, root, web_url
    httpd.shutdown()


def test_layers_add_registers_checks_and_refuses(external, tmp_path):
    workspace, _, root, web_url = external
    listing = cli("layers", "-w", str(workspace.root))
    assert listing.returncode == 0, listing.stderr
    lines = {line.split("\t")[0]: line.split("\t") for line in listing.stdout.splitlines()}
    assert lines["local-em"][1:3] == ["image", "external precomputed"]
    assert lines["web-em"][3] == f"precomputed://{web_url}"

    outside = tmp_path / "elsewhere"
    shutil.copytree(root / "em-flipped", outside / "em")
    bad_info = root / "broken"
    bad_info.mkdir()
    (bad_info / "info").write_text("{not json")
    config_before = (workspace.root / "connectome.toml").read_text()
    for args, message in [
        (["x1", str(outside / "em")], "outside the workspace's data roots"),
        (["x2", f"file://{root}/../elsewhere/em"], "outside the workspace's data roots"),
        (["x3", "precomputed://http://127.0.0.1:9/nothing"], "cannot open"),
        (["x4", str(bad_info)], "broken"),
        (["x5", str(root / "missing")], "no such directory"),
        (["local-em", str(root / "em-flipped")], "exists already"),
        (["image", str(root / "em-flipped")], "exists already"),
        (["bad/name", str(root / "em-flipped")], "invalid layer name"),
    ]:
        result = cli("layers", "add", *args, "-w", str(workspace.root))
        assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr, (args, result.stderr)
    assert (workspace.root / "connectome.toml").read_text() == config_before, "a refused layer was registered"

    copy = tmp_path / "ws-copy"
    shutil.copytree(workspace.root, copy, ignore=shutil.ignore_patterns("*.db*"))
    added = cli("layers", "-w", str(copy), "add", "again", str(root / "em-flipped"))
    assert added.returncode == 0 and "external precomputed image" in added.stdout, added.stderr
    removed = cli("layers", "remove", "again", "-w", str(copy))
    assert removed.returncode == 0, removed.stderr
    assert "again" not in cli("layers", "-w", str(copy)).stdout


def test_local_external_layer_is_served_inside_its_directory_only(external):
    from server.app import ProofreadingServer
    from server.auth import Caller

    workspace, tokens, root, _ = external
    (root / "em-flipped" / "escape").symlink_to(workspace.root / "connectome.toml")
    server = ProofreadingServer(workspace, port=0)
    try:
        headers = {"Authorization": f"Bearer {tokens['vic']}"}
        info = requests.get(f"{server.url}/data/local-em/info", headers=headers)
        assert info.status_code == 200 and info.json()["type"] == "image"
        assert requests.get(f"{server.url}/data/local-em/info").status_code == 401
        assert requests.get(f"{server.url}/data/local-em/escape", headers=headers).status_code == 404
        assert requests.get(f"{server.url}/data/web-em/info", headers=headers).status_code == 404, \
            "a remote layer is read by the viewer itself, never through the server"
        state = server.viewer_for(Caller("vic", "viewer")).viewer.state.to_json()
        sources = {layer["name"]: layer["source"] for layer in state["layers"]}
        assert sources["local-em"][0]["url"] == f"precomputed://{server.url}/data/local-em"
        assert sources["web-em"][0]["url"].startswith("precomputed://http://127.0.0.1:")
    finally:
        server.close()
        (root / "em-flipped" / "escape").unlink()


EXTERNAL_LOADED_JS = """
const layer = viewer.layerManager.getLayerByName(arguments[0]);
return !!(layer && layer.layer && layer.layer.dataSources.length && layer.layer.dataSources[0].loadState
          && !layer.layer.dataSources[0].loadState.error);
"""


@pytest.mark.parametrize("layer", ["local-em", "web-em"])
def test_external_layers_render_in_chromium(external, chromium_driver, tmp_path, layer):
    from server.app import ProofreadingServer
    from server.auth import Caller

    workspace, tokens, _, _ = external
    server = ProofreadingServer(workspace, port=0)
    browser = start_chromium(chromium_driver, tmp_path / "profile")

    def only_the_external_layer(state) -> None:
        for name in ("image", "segmentation", "local-em", "web-em"):
            state.layers[name].visible = name == layer

    try:
        open_viewer(server, browser, tokens["ben"], Caller("ben", "proofreader"), only_the_external_layer)
        wait_for(lambda: browser.execute_script(EXTERNAL_LOADED_JS, layer), 30, f"{layer}'s data source")
        wait_for(lambda: rendered_panel(browser)[0].std() > 15, 60, f"{layer}'s EM in the panel")
        (tmp_path / f"{layer}.png").write_bytes(rendered_panel(browser)[1])
    finally:
        browser.quit()
        server.close()
