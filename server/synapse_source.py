"""The store's synapses as Neuroglancer precomputed annotation sources, answered from memory.

`GET /synapses/<pre|post>/...` speaks Neuroglancer's precomputed annotation format
(src/datasource/precomputed/annotations.md in Neuroglancer's source): `info`, `by_id/<id>`,
the related-object indices `pre_segment/<id>` and `post_segment/<id>`, and a multi-level spatial
index `spatial<level>/<x>_<y>_<z>`. The two sources hold the same synapses, drawn at the
presynaptic and at the postsynaptic point.

Why served from the store and not files: the viewer state used to carry up to 20,000 ellipsoids
per viewer. Files written at detection would be a second copy that the store's synapses (what the
API and exports use) can drift from. Here the synapse columns are read once from the store's
blocks (~90 bytes a synapse in memory: 2 million synapses, ~180 MB) and each request is a binary
search; the set is re-read when the store's synapses change.

Why the related-object index is keyed by supervoxel and still never goes stale: with the nggraph
source (server/neuron_graph.py) the client asks for each *supervoxel* of each neuron it shows, and
resolves an annotation's related supervoxels to neurons through the equivalences it was told, so
merges and splits need nothing from this index. A neuron id (2**63 + root) is answered too, as the
union of its supervoxels' synapses, for clients that ask by neuron.

Spatial index: per the format's recipe, level 0 is one cell over the whole volume, each finer level
halves the longer cell sides, and each level emits a uniformly random share (limit / fullest cell)
of the synapses not yet emitted, so any zoom level shows a uniform sample. A synapse is placed in
cells by its point, not its sphere (a sphere crossing a cell face is drawn when its own cell is).
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass

import numpy as np
import tornado.ioloop
import tornado.web

from db import store
from server.guard import GuardedHandler
from server.neuron_graph import root_of_segment

SPATIAL_LIMIT = 1000  # annotations per spatial cell, the format's `limit`
MAX_SPATIAL_LEVELS = 24
RECHECK_SECONDS = 5.0  # how stale the served synapse set may be after a detection replaced it
RECORD = np.dtype([("center", "<f4", 3), ("radii", "<f4", 3), ("score", "<f4"), ("size", "<u4")])  # 32 bytes
POINTS = {"pre": "pre", "post": "post"}  # source name -> the store's point column


@dataclass
class SpatialLevel:
    chunk_size_nm: np.ndarray  # x, y, z
    grid_shape: np.ndarray
    keys: np.ndarray  # flat cell index of each emitted synapse, sorted
    rows: np.ndarray  # row of each, in the same order


class SynapseIndex:
    """One snapshot of the store's synapses, with every lookup the annotation format needs."""

    def __init__(self, columns: dict[str, np.ndarray], radius_nm: float, bounds_nm: tuple[np.ndarray, np.ndarray]):
        self.ids = np.asarray(columns["id"], dtype=np.uint64)
        order = np.argsort(self.ids)
        self.ids = self.ids[order]
        self.supervoxels = {"pre_segment": np.asarray(columns["pre_sv"], dtype=np.uint64)[order],
                            "post_segment": np.asarray(columns["post_sv"], dtype=np.uint64)[order]}
        self.by_supervoxel = {name: np.argsort(values, kind="stable") for name, values in self.supervoxels.items()}
        self.sorted_supervoxels = {name: self.supervoxels[name][rows] for name, rows in self.by_supervoxel.items()}
        self.records: dict[str, np.ndarray] = {}
        self.spatial: dict[str, list[SpatialLevel]] = {}
        points = {side: np.asarray(columns[side], dtype=np.float64)[order][:, ::-1] for side in POINTS}  # z,y,x -> x,y,z
        lower = np.minimum(bounds_nm[0], np.min([p.min(axis=0) - radius_nm for p in points.values()], axis=0)) \
            if len(self.ids) else bounds_nm[0]
        upper = np.maximum(bounds_nm[1], np.max([p.max(axis=0) + radius_nm for p in points.values()], axis=0) + 1) \
            if len(self.ids) else bounds_nm[1]
        self.lower_nm, self.upper_nm = np.floor(lower), np.ceil(upper)
        for side, xyz in points.items():
            records = np.zeros(len(self.ids), dtype=RECORD)
            records["center"] = xyz
            records["radii"] = radius_nm
            records["score"] = np.asarray(columns["score"])[order]
            records["size"] = np.asarray(columns["size"])[order]
            self.records[side] = records
            self.spatial[side] = _spatial_levels(xyz, self.lower_nm, self.upper_nm)

    def info(self, side: str) -> dict:
        return {
            "@type": "neuroglancer_annotations_v1",
            "dimensions": {axis: [1e-9, "m"] for axis in "xyz"},
            "lower_bound": self.lower_nm.tolist(), "upper_bound": self.upper_nm.tolist(),
            "annotation_type": "ELLIPSOID",
            "properties": [{"id": "score", "type": "float32", "description": "detector score"},
                           {"id": "size", "type": "uint32", "description": "site voxels at the detector's resolution"}],
            "relationships": [{"id": name, "key": name} for name in self.supervoxels],
            "by_id": {"key": "by_id"},
            "spatial": [{"key": f"spatial{level}", "grid_shape": spec.grid_shape.tolist(),
                         "chunk_size": spec.chunk_size_nm.tolist(), "limit": SPATIAL_LIMIT}
                        for level, spec in enumerate(self.spatial[side])],
        }

    def encode_many(self, side: str, rows: np.ndarray) -> bytes:
        """The format's multiple-annotation encoding: count, records, ids."""
        return np.uint64(len(rows)).tobytes() + self.records[side][rows].tobytes() + self.ids[rows].astype("<u8").tobytes()

    def by_id(self, side: str, annotation_id: int) -> bytes | None:
        row = int(np.searchsorted(self.ids, np.uint64(annotation_id)))
        if row >= len(self.ids) or int(self.ids[row]) != annotation_id:
            return None
        parts = [self.records[side][row:row + 1].tobytes()]
        for values in self.supervoxels.values():
            parts += [np.uint32(1).tobytes(), values[row:row + 1].astype("<u8").tobytes()]
        return b"".join(parts)

    def related(self, relationship: str, supervoxels: np.ndarray) -> np.ndarray:
        """Rows of the synapses whose `relationship` supervoxel is one of `supervoxels`."""
        ordered = self.sorted_supervoxels[relationship]
        wanted = np.unique(np.asarray(supervoxels, dtype=np.uint64))
        starts, stops = np.searchsorted(ordered, wanted, "left"), np.searchsorted(ordered, wanted, "right")
        picked = [self.by_supervoxel[relationship][a:b] for a, b in zip(starts, stops) if b > a]
        return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)

    def cell(self, side: str, level: int, cell_xyz: tuple[int, int, int]) -> np.ndarray | None:
        levels = self.spatial[side]
        if not 0 <= level < len(levels) or any(not 0 <= c < g for c, g in zip(cell_xyz, levels[level].grid_shape)):
            return None
        spec = levels[level]
        key = np.ravel_multi_index(tuple(np.asarray(cell_xyz)[:, None]), tuple(spec.grid_shape))[0]
        return spec.rows[np.searchsorted(spec.keys, key, "left"):np.searchsorted(spec.keys, key, "right")]


def _spatial_levels(xyz: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> list[SpatialLevel]:
    """The format's multi-level spatial index, as the recipe in the module docstring."""
    extent = upper - lower
    chunk, grid = extent.astype(np.float64), np.ones(3, dtype=np.int64)
    remaining = np.random.default_rng(0).permutation(len(xyz))  # random order within every cell
    levels: list[SpatialLevel] = []
    while True:
        cells = np.clip(np.floor((xyz[remaining] - lower) / chunk).astype(np.int64), 0, grid - 1)
        keys = np.ravel_multi_index(tuple(cells.T), tuple(grid)) if len(remaining) else np.zeros(0, np.int64)
        fullest = int(np.bincount(np.unique(keys, return_inverse=True)[1]).max()) if len(keys) else 0
        last = fullest <= SPATIAL_LIMIT or len(levels) == MAX_SPATIAL_LEVELS - 1
        emit = np.ones(len(remaining), bool) if last else \
            np.random.default_rng(len(levels) + 1).random(len(remaining)) < SPATIAL_LIMIT / fullest
        order = np.argsort(keys[emit], kind="stable")
        levels.append(SpatialLevel(chunk.copy(), grid.copy(), keys[emit][order], remaining[emit][order]))
        if last:
            return levels
        remaining = remaining[~emit]
        halve = chunk > chunk.max() / 2 * (1 + 1e-9)  # the longer sides: cells stay near isotropic
        chunk = np.where(halve, chunk / 2, chunk)
        grid = np.where(halve, grid * 2, grid)


class SynapseSource:
    """The store's synapses as an index, re-read when they change (checked at most every RECHECK_SECONDS)."""

    def __init__(self, proofreading_store: store.Store, radius_nm: float, bounds_nm: tuple[np.ndarray, np.ndarray]):
        self.store = proofreading_store
        self.radius_nm = radius_nm
        self.bounds_nm = bounds_nm
        self._lock = threading.Lock()
        self._index: SynapseIndex | None = None
        self._signature: tuple | None = None
        self._checked = 0.0

    def index(self) -> SynapseIndex:
        with self._lock:
            if self._index is not None and time.monotonic() - self._checked < RECHECK_SECONDS:
                return self._index
            signature = store.synapse_signature(self.store)
            if signature != self._signature or self._index is None:
                self._index = SynapseIndex(store.synapse_columns(self.store), self.radius_nm, self.bounds_nm)
                self._signature = signature
            self._checked = time.monotonic()
            return self._index

    def has_synapses(self) -> bool:
        return len(self.index().ids) > 0

    def supervoxels_of_segment(self, segment: int) -> np.ndarray:
        root = root_of_segment(segment)
        if root is None:
            return np.asarray([segment], dtype=np.uint64)
        return np.asarray(store.supervoxels_of(self.store, root), dtype=np.uint64)


class SynapseAnnotationHandler(GuardedHandler):
    """`GET /synapses/<pre|post>/<path>`: read-only, for viewers and up; computed on a worker thread."""

    def initialize(self, source: SynapseSource, authenticator, executor):
        self.source = source
        self.authenticator = authenticator
        self.executor = executor

    def set_default_headers(self) -> None:
        self.set_header("Access-Control-Allow-Origin", "*")
        self.set_header("Cache-Control", "no-cache")

    async def get(self, side: str, path: str) -> None:
        body = await tornado.ioloop.IOLoop.current().run_in_executor(self.executor, self._answer, side, path)
        if body is None:
            raise tornado.web.HTTPError(404)
        if isinstance(body, dict):
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps(body))
        else:
            self.set_header("Content-Type", "application/octet-stream")
            self.finish(body)

    def _answer(self, side: str, path: str) -> dict | bytes | None:
        index = self.source.index()
        parts = path.split("/")
        if path == "info":
            return index.info(side)
        if len(parts) != 2 or not parts[1].replace("_", "").isdigit():
            return None
        kind, key = parts
        if kind == "by_id":
            return index.by_id(side, int(key)) if key.isdigit() and int(key) < 2**64 else None
        if kind in index.supervoxels:
            if not key.isdigit() or not 0 < int(key) < 2**64:
                return None
            return index.encode_many(side, index.related(kind, self.source.supervoxels_of_segment(int(key))))
        if kind.startswith("spatial") and kind[7:].isdigit():
            cell = tuple(int(c) for c in key.split("_"))
            if len(cell) != 3:
                return None
            rows = index.cell(side, int(kind[7:]), cell)
            return None if rows is None else index.encode_many(side, rows)
        return None


SYNAPSE_ROUTE = r"/synapses/(?P<side>pre|post)/(?P<path>[A-Za-z0-9_/]+)"
