"""Serve the workspace's layers to Neuroglancer, and nothing else.

`GET /data/<layer>/<path>` reads `W/layers/<layer>/<path>`, or for an external local layer
(volumes/external_layers.py, inside the data roots) its registered directory. The resolved file
must lie inside that layer's directory, so no `..`, encoded separator or symbolic link reaches a
file outside it. cloud-volume stores chunks
gzip-compressed as `<chunk>.gz`; those are sent as they are with `Content-Encoding: gzip`,
which is what the browser expects for the plain chunk name.
"""
from __future__ import annotations

import mimetypes
import re
from pathlib import Path

import tornado.web

from server.guard import GuardedHandler
from volumes.workspace import LAYER_NAME

DATA_ROUTE = r"/data/(?P<layer>[^/]+)/(?P<path>.*)"
# Precomputed names are plain: chunk keys (0-64_0-64_0-64), scale keys (10.0_10.0_10.0), mesh ids (12:0:...).
SAFE_PATH = re.compile(r"^(?:[A-Za-z0-9_.:,-]+/)*[A-Za-z0-9_.:,-]+$")


def resolve_layer_file(layers_dir: Path, layer: str, path: str,
                       external_dirs: dict[str, Path] | None = None) -> tuple[Path, bool] | None:
    """The file to send for a request and whether it is gzip-encoded, or None (404) for anything else."""
    if not LAYER_NAME.match(layer) or not SAFE_PATH.match(path) or any(part in ("", ".", "..") for part in path.split("/")):
        return None
    if external_dirs and layer in external_dirs:
        layer_dir = external_dirs[layer].resolve()
    else:
        layer_dir = (layers_dir / layer).resolve()
        if layer_dir.parent != layers_dir.resolve():
            return None
    for candidate, gzipped in ((layer_dir / path, False), (layer_dir / (path + ".gz"), True)):
        resolved = candidate.resolve()
        if resolved.is_file() and resolved.is_relative_to(layer_dir):
            return resolved, gzipped
    return None


class LayerFileHandler(GuardedHandler):
    """Static files of one workspace's layers with CORS, for Neuroglancer's precomputed source (viewers and up)."""

    def initialize(self, layers_dir: Path, authenticator, external_dirs: dict[str, Path] | None = None):
        self.layers_dir = layers_dir
        self.authenticator = authenticator
        self.external_dirs = external_dirs or {}

    def set_default_headers(self) -> None:
        self.set_header("Access-Control-Allow-Origin", "*")
        self.set_header("Access-Control-Allow-Headers", "range, authorization")

    def options(self, layer: str, path: str) -> None:
        self.set_status(204)
        self.finish()

    async def get(self, layer: str, path: str) -> None:
        found = resolve_layer_file(self.layers_dir, layer, path, self.external_dirs)
        if found is None:
            raise tornado.web.HTTPError(404)
        file_path, gzipped = found
        if gzipped:
            self.set_header("Content-Encoding", "gzip")
            content_type = "application/octet-stream"
        else:
            content_type = "application/json" if file_path.name == "info" else (mimetypes.guess_type(file_path.name)[0] or "application/octet-stream")
        self.set_header("Content-Type", content_type)
        self.set_header("Cache-Control", "no-cache")
        self.finish(file_path.read_bytes())
