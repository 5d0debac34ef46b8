"""FFN inference with Google's semantics, on one subvolume at a time.

A `Canvas` holds one subvolume's state (seed logits, segmentation, origins) and
its flood-filling loop is a generator: it yields the FOV it wants evaluated and
receives the network's logits back. `run_canvases` drives one or several
canvases, batching their pending FOVs into a single forward pass; because each
canvas only ever waits for its own result, batching never changes what a canvas
computes (up to floating-point differences of the batched kernels).

Google's rules reproduced here (ffn/inference/inference.py, movement.py):
- the seed canvas is float32 logits, NaN where not visited; FOV crops replace
  NaN with logit(pad_value); predictions overwrite the FOV (no averaging);
- with disco_seed_threshold >= 0 (the proto default 0), voxels below 0.5 that
  were already visited cannot rise again once any voxel of the FOV is above
  the move threshold;
- face-max movement: on each of the 6 faces at +/-delta the argmax is queued if
  it reaches the move threshold (best first within one step, FIFO across
  steps); positions are de-duplicated on a delta grid centred on the seed;
- a seed is skipped if a segmented voxel lies within +/-min_boundary_dist;
  flooding stops when the seed voxel falls below the move threshold;
- voxels at or above segment_threshold in the visited bounding box that no
  earlier segment owns become the new segment (first come wins), if there are
  at least min_segment_size of them; ids count up from 1.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Generator, Iterable

import numpy as np

from ffn.model import ConvStack3DFFN, FFNConfig
from ffn.options import InferenceOptions, Thresholds
from ffn.seeds import get_seed_policy
from volumes.errors import InputError

Zyx = tuple[int, int, int]
SKIPPED = -1  # segmentation marker for seeds that were tried (or too close) and rejected


@dataclass
class Origin:
    """How a segment was made: its seed, the FFN steps it took and its size."""

    id: int
    start_zyx: Zyx
    iters: int
    voxels: int
    seconds: float = 0.0
    overlaps: dict[int, int] = field(default_factory=dict)  # earlier segment id -> voxels above threshold it kept

    def to_dict(self) -> dict:
        return {"id": self.id, "start_zyx": [int(v) for v in self.start_zyx], "iters": self.iters,
                "voxels": self.voxels, "seconds": round(self.seconds, 3),
                "overlaps": {str(k): v for k, v in self.overlaps.items()}}


@dataclass
class FOVRequest:
    """One FFN step wanted by a canvas: image and seed patches of the FOV, float32 (z, y, x)."""

    image: np.ndarray
    seed: np.ndarray


def normalize_image(image_zyx: np.ndarray, config: FFNConfig) -> np.ndarray:
    """(uint8 - mean) / stddev in float32, as Google's Runner does."""
    return (image_zyx.astype(np.float32) - float(config.image_mean)) / float(config.image_stddev)


def face_max_moves(logits: np.ndarray, deltas: np.ndarray, threshold: float) -> list[tuple[np.float32, Zyx]]:
    """Candidate moves (score, offset from the FOV centre): the best voxel of each face at +/-delta, best first."""
    center = np.array(logits.shape) // 2
    box = [slice(c - d, c + d + 1) for c, d in zip(center, deltas)]
    found = set()
    for axis, delta in enumerate(deltas):
        if delta == 0:
            continue
        for offset in (-delta, delta):
            face_sel = list(box)
            face_sel[axis] = center[axis] + offset
            face = logits[tuple(face_sel)]
            face_pos = np.unravel_index(face.argmax(), face.shape)
            score = face[face_pos]
            if score < threshold:
                continue
            relative = [int(face_pos[0] - face.shape[0] // 2), int(face_pos[1] - face.shape[1] // 2)]
            relative.insert(axis, int(offset))
            found.add((score, tuple(relative)))
    return sorted(found, reverse=True)


class Canvas:
    """One subvolume being segmented: Google's Canvas, restructured as a generator of FOV requests."""

    def __init__(self, image_zyx: np.ndarray, config: FFNConfig, options: InferenceOptions,
                 mask: np.ndarray | None = None):
        fov = np.array(config.fov_size)
        if any(s < f for s, f in zip(image_zyx.shape, fov)):
            raise InputError(f"image of shape {tuple(image_zyx.shape)} is smaller than the FFN field of view {tuple(config.fov_size)}")
        self.config = config
        self.options = options
        self.thresholds = Thresholds.from_options(options)
        self.image = normalize_image(image_zyx, config)
        self.shape = self.image.shape
        self.mask = mask
        self.fov = fov
        self.margin = fov // 2
        self.deltas = np.array(config.deltas)
        self.seed = np.full(self.shape, np.nan, dtype=np.float32)
        self.segmentation = np.zeros(self.shape, dtype=np.int32)
        self.origins: dict[int, Origin] = {}
        self.max_id = 0
        self.steps = 0  # FFN steps, including those of rejected segments
        self.seed_coords: np.ndarray | None = None
        self.seed_index = 0

    # --- positions ----------------------------------------------------------------------------
    def inside_margin(self, pos: Zyx) -> bool:
        p = np.array(pos)
        return bool(np.all(p - self.margin >= 0) and np.all(p + self.margin < self.shape))

    def is_valid_pos(self, pos: Zyx, ignore_move_threshold: bool = False) -> bool:
        if not ignore_move_threshold and self.seed[pos] < self.thresholds.move_threshold:
            return False
        if not self.inside_margin(pos):
            return False
        if self.mask is not None and self.mask[pos]:
            return False
        return self.segmentation[pos] <= 0

    def _fov_slices(self, pos: Zyx) -> tuple[slice, ...]:
        start = np.array(pos) - self.margin
        return tuple(slice(int(s), int(s + f)) for s, f in zip(start, self.fov))

    # --- one segment ----------------------------------------------------------------------------
    def _quantize(self, pos: Zyx, start: Zyx) -> Zyx:
        relative = np.array(pos) - np.array(start)
        return tuple(int(v) for v in (relative + self.deltas // 2) // np.maximum(self.deltas, 1))

    def _update_at(self, pos: Zyx, logits: np.ndarray) -> np.ndarray:
        """Write the FOV's logits into the canvas; returns them as written (movement reads those)."""
        sel = self._fov_slices(pos)
        if self.thresholds.disco_seed_threshold >= 0:
            old = self.seed[sel]
            if np.mean(logits >= self.thresholds.move_threshold) > self.thresholds.disco_seed_threshold:
                with np.errstate(invalid="ignore"):
                    frozen = (old < 0.0) & (logits > old)  # NaN (unvisited) never freezes
                logits = np.where(frozen, old, logits)
        self.seed[sel] = logits
        return logits

    def segment_at(self, start: Zyx) -> Generator[FOVRequest, np.ndarray, tuple[int, np.ndarray, np.ndarray]]:
        """Flood from `start`; returns (steps, min visited position, max visited position)."""
        self.seed[...] = np.nan
        self.seed[start] = self.thresholds.init_activation
        queue: deque = deque([(None, start)])
        done: set = set()
        low, high = np.array(start), np.array(start)
        steps = 0
        while True:
            pos = None
            while queue:
                _, candidate = queue.popleft()
                if self._quantize(candidate, start) in done:
                    continue
                if self.is_valid_pos(candidate):
                    pos = candidate
                    break
            if pos is None or self.seed[start] < self.thresholds.move_threshold:
                break
            sel = self._fov_slices(pos)
            seed_patch = np.array(self.seed[sel])
            seed_patch[np.isnan(seed_patch)] = self.thresholds.pad_value
            logits = yield FOVRequest(self.image[sel], seed_patch)
            logits = self._update_at(pos, logits)
            low, high = np.minimum(low, pos), np.maximum(high, pos)
            steps += 1
            done.add(self._quantize(pos, start))
            for score, offset in face_max_moves(logits, self.deltas, self.thresholds.move_score_threshold):
                queue.append((score, tuple(int(p + o) for p, o in zip(pos, offset))))
        return steps, low, high

    # --- all segments -------------------------------------------------------------------------
    def set_seeds(self, coords: np.ndarray) -> None:
        self.seed_coords = np.asarray(coords, dtype=np.int64).reshape(-1, 3)
        self.seed_index = 0

    def compute_seeds(self) -> None:
        policy = get_seed_policy(self.options.seed_policy)
        self.set_seeds(policy(self, **self.options.seed_policy_args))

    def run(self, on_segment: Callable[["Canvas"], None] | None = None) -> Generator[FOVRequest, np.ndarray, None]:
        """Try every seed in order; `on_segment` is called after each seed is settled (for progress/checkpoints)."""
        if self.seed_coords is None:
            self.compute_seeds()
        while self.seed_index < len(self.seed_coords):
            if self.options.max_segments is not None and len(self.origins) >= self.options.max_segments:
                break
            pos = tuple(int(v) for v in self.seed_coords[self.seed_index])
            yield from self._try_seed(pos)
            self.seed_index += 1  # only once the seed is settled, so a saved state never skips one
            if on_segment is not None:
                on_segment(self)

    def _try_seed(self, pos: Zyx) -> Generator[FOVRequest, np.ndarray, None]:
        if not self.inside_margin(pos) or not self.is_valid_pos(pos, ignore_move_threshold=True):
            return
        mbd = np.array(self.options.min_boundary_dist)
        near = tuple(slice(int(a), int(b)) for a, b in zip(np.array(pos) - mbd, np.array(pos) + mbd + 1))
        if np.any(self.segmentation[near] > 0):
            self.segmentation[pos] = SKIPPED
            return
        started = time.time()
        steps, low, high = yield from self.segment_at(pos)
        self.steps += steps
        self._settle(pos, steps, low, high, time.time() - started)

    def _settle(self, pos: Zyx, steps: int, low: np.ndarray, high: np.ndarray, seconds: float) -> None:
        """Turn the flooded seed into a segment, or mark the seed as rejected."""
        if steps <= 0:
            return
        if self.seed[pos] < self.thresholds.move_threshold:
            if self.segmentation[pos] == 0:
                self.segmentation[pos] = SKIPPED
            return
        half = self.fov // 2  # prediction size == FOV
        sel = tuple(slice(max(int(s), 0), int(e) + 1) for s, e in zip(low - half, high + half))
        mask = self.seed[sel] >= self.thresholds.segment_threshold
        existing = self.segmentation[sel]
        overlapped, counts = np.unique(existing[mask], return_counts=True)
        mask &= existing <= 0
        voxels = int(mask.sum())
        if voxels < self.options.min_segment_size:
            if self.segmentation[pos] == 0:
                self.segmentation[pos] = SKIPPED
            return
        self.max_id += 1
        while self.max_id in self.origins:
            self.max_id += 1
        existing[mask] = self.max_id
        overlaps = {int(i): int(c) for i, c in zip(overlapped, counts) if i > 0}
        self.origins[self.max_id] = Origin(self.max_id, pos, steps, voxels, seconds, overlaps)

    def labels(self) -> np.ndarray:
        """The segmentation without the rejected-seed markers."""
        return np.where(self.segmentation > 0, self.segmentation, 0).astype(np.uint64)

    # --- resumable state -------------------------------------------------------------------------
    def state(self) -> dict:
        return {"segmentation": self.segmentation, "seed_coords": self.seed_coords, "seed_index": self.seed_index,
                "max_id": self.max_id, "steps": self.steps,
                "origins": [o.to_dict() for o in self.origins.values()]}

    def restore(self, state: dict) -> None:
        if tuple(state["segmentation"].shape) != tuple(self.shape):
            raise InputError(f"saved inference state has shape {tuple(state['segmentation'].shape)}, not {tuple(self.shape)}")
        self.segmentation[...] = state["segmentation"]
        self.seed_coords = np.asarray(state["seed_coords"], dtype=np.int64).reshape(-1, 3)
        self.seed_index = int(state["seed_index"])
        self.max_id = int(state["max_id"])
        self.steps = int(state["steps"])
        self.origins = {int(o["id"]): Origin(int(o["id"]), tuple(o["start_zyx"]), int(o["iters"]), int(o["voxels"]),
                                             float(o.get("seconds", 0.0)),
                                             {int(k): int(v) for k, v in o.get("overlaps", {}).items()})
                        for o in state["origins"]}


def run_canvases(runs: Iterable[Generator[FOVRequest, np.ndarray, None]], forward: Callable[[np.ndarray, np.ndarray], np.ndarray],
                 batch_size: int = 1, on_step: Callable[[int], None] | None = None) -> None:
    """Drive canvas generators to completion, evaluating up to `batch_size` pending FOVs per forward pass."""
    waiting: list[tuple[Generator, FOVRequest]] = []
    pending = list(runs)
    while waiting or pending:
        while pending and len(waiting) < batch_size:
            generator = pending.pop(0)
            request = next(generator, None)
            if request is not None:
                waiting.append((generator, request))
        if not waiting:
            continue
        batch, waiting = waiting[:batch_size], waiting[batch_size:]
        logits = forward(np.stack([r.image for _, r in batch]), np.stack([r.seed for _, r in batch]))
        for (generator, _), result in zip(batch, logits):
            try:
                waiting.append((generator, generator.send(result)))
            except StopIteration:
                pass
        if on_step is not None:
            on_step(len(batch))


def segment_subvolume(image_zyx: np.ndarray, model: ConvStack3DFFN, config: FFNConfig, options: InferenceOptions,
                      forward: Callable | None = None, mask: np.ndarray | None = None,
                      state: dict | None = None, on_segment: Callable[[Canvas], None] | None = None,
                      on_step: Callable[[int], None] | None = None) -> tuple[np.ndarray, list[Origin]]:
    """Segment one subvolume as a whole volume: returns uint64 labels (z, y, x) and the segment origins.

    This is the unit of work for distributed inference: it depends only on its
    arguments. `state` (from `Canvas.state()`) resumes an interrupted run.
    """
    from ffn.forward import ForwardRunner

    canvas = Canvas(image_zyx, config, options, mask=mask)
    if state is not None:
        canvas.restore(state)
    if forward is None:
        forward = ForwardRunner.for_options(model, options)
    run_canvases([canvas.run(on_segment)], forward, batch_size=1, on_step=on_step)
    return canvas.labels(), list(canvas.origins.values())
