"""Inference as independent subvolume tasks with overlap: the unit a cluster scheduler distributes.

`plan_subvolumes` tiles a volume into overlapping boxes; `segment_subvolumes`
runs several of them in one process with their FOVs batched into shared forward
passes. Each task's result depends only on its own image box, so tasks can run
anywhere, in any order; reconciling ids across overlaps is left to the caller.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ffn.forward import ForwardRunner
from ffn.inference import Canvas, Origin, run_canvases
from ffn.model import ConvStack3DFFN, FFNConfig
from ffn.options import InferenceOptions
from volumes.errors import InputError
from volumes.geometry import Box


@dataclass
class SubvolumeResult:
    box: Box  # in volume voxel coordinates
    labels: np.ndarray  # uint64, local ids from 1
    origins: list[Origin]  # seeds in volume coordinates
    steps: int


def plan_subvolumes(volume: Box, size: tuple[int, int, int], overlap: tuple[int, int, int]) -> list[Box]:
    """Boxes of `size` (clipped at the volume's end) whose neighbours share `overlap` voxels, z-major order."""
    if any(o >= s for o, s in zip(overlap, size)):
        raise InputError(f"subvolume overlap {overlap} must be smaller than the subvolume size {size}")
    starts = []
    for axis in range(3):
        stride = size[axis] - overlap[axis]
        axis_starts = list(range(volume.start[axis], max(volume.stop[axis] - overlap[axis], volume.start[axis] + 1), stride))
        starts.append(axis_starts)
    boxes = []
    for z in starts[0]:
        for y in starts[1]:
            for x in starts[2]:
                start = (z, y, x)
                stop = tuple(min(a + s, b) for a, s, b in zip(start, size, volume.stop))
                boxes.append(Box(start, stop))
    return boxes


def segment_subvolumes(image_zyx: np.ndarray, boxes: list[Box], model: ConvStack3DFFN, config: FFNConfig,
                       options: InferenceOptions, forward=None) -> list[SubvolumeResult]:
    """Segment each box of `image_zyx` as its own volume, `options.batch_size` canvases per forward pass."""
    forward = forward or ForwardRunner.for_options(model, options)
    canvases = [Canvas(image_zyx[box.slices()], config, options) for box in boxes]
    run_canvases([c.run() for c in canvases], forward, batch_size=options.batch_size)
    results = []
    for box, canvas in zip(boxes, canvases):
        origins = [Origin(o.id, tuple(int(a + b) for a, b in zip(o.start_zyx, box.start)), o.iters, o.voxels, o.seconds,
                          o.overlaps)
                   for o in canvas.origins.values()]
        results.append(SubvolumeResult(box, canvas.labels(), origins, canvas.steps))
    return results
