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
        self.set_header("Access-Control-Expose-Headers", "content-range, content-length, accept-ranges")

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
        size = file_path.stat().st_size
        start, stop = 0, size
        wanted = self.request.headers.get("Range")
        if wanted is not None and not gzipped:  # sharded meshes and annotations are read by byte range
            span = parse_byte_range(wanted, size)
            if span is None:
                self.set_header("Content-Range", f"bytes */{size}")
                raise tornado.web.HTTPError(416)
            start, stop = span
            self.set_status(206)
            self.set_header("Content-Range", f"bytes {start}-{stop - 1}/{size}")
        self.set_header("Accept-Ranges", "bytes")
        with open(file_path, "rb") as f:
            f.seek(start)
            remaining = stop - start
            while remaining > 0:  # a large shard file is sent piece by piece, never read whole
                piece = f.read(min(remaining, READ_PIECE_BYTES))
                if not piece:
                    break
                remaining -= len(piece)
                self.write(piece)
                await self.flush()
        self.finish()


READ_PIECE_BYTES = 1 << 20
_BYTE_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def parse_byte_range(header: str, size: int) -> tuple[int, int] | None:
    """[start, stop) of one HTTP byte range (`bytes=a-b`, `bytes=a-`, `bytes=-n`) within `size`, or None."""
    match = _BYTE_RANGE.match(header.strip())
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.group(1), match.group(2)
    if first == "":
        start, stop = max(0, size - int(last)), size
    else:
        start = int(first)
        stop = size if last == "" else min(size, int(last) + 1)
    return (start, stop) if start < stop else None
