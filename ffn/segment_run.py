"""`connectome ffn segment`: one resumable FFN run over an image in a workspace.

The run keeps its state in `<workspace>/ffn-runs/<out>/`: `state.npz` (the
segmentation so far and the position in the seed list, saved atomically after
segments at most every `checkpoint_seconds`, and on interruption) and `run.json` (what was asked for,
so a resumed run cannot silently mix settings). When it finishes it writes the
uint64 precomputed layer `<out>` and `origins.json` beside the state.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ffn.forward import ForwardRunner
from ffn.inference import Canvas, run_canvases
from ffn.model import load_model
from ffn.options import InferenceOptions
from volumes.errors import InputError
from volumes.geometry import Box
from volumes.atomic import atomic_path, write_json_atomically


def estimated_total_steps(steps_done: int, seeds_done: int, seeds_total: int) -> int | None:
    """FFN steps a run will take, judged from the seeds settled so far (None before the first)."""
    if seeds_done <= 0 or seeds_total <= 0:
        return None
    return int(round(steps_done * seeds_total / seeds_done))


def open_image(workspace, name: str):
    """A workspace layer by name, or any volume spec `open_volume` understands."""
    from volumes.io import open_volume

    try:
        is_layer = workspace.has_layer(name)
    except InputError:  # not a layer name, so a path or URL
        is_layer = False
    return open_volume(workspace.layer_url(name) if is_layer else name)


def open_run(workspace, image_name: str, out_name: str, bbox: Box | None, overwrite: bool):
    """Check a segmentation request before any work: (output layer path, image volume, box to segment)."""
    out_layer = workspace.layer_path(out_name)
    if (out_layer / "info").exists() and not overwrite:
        raise InputError(f"layer {out_name!r} already exists in the workspace; pass --overwrite to replace it")
    volume = open_image(workspace, image_name)
    box = bbox if bbox is not None else volume.box
    if not volume.box.contains(box):
        raise InputError(f"bbox {box.start}..{box.stop} lies outside the image of shape {volume.shape}")
    return out_layer, volume, box


def _file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def _save_state(path: Path, canvas: Canvas) -> None:
    state = canvas.state()
    with atomic_path(path) as temporary:
        np.savez_compressed(temporary, segmentation=state["segmentation"], seed_coords=state["seed_coords"],
                            seed_index=state["seed_index"], max_id=state["max_id"], steps=state["steps"],
                            origins=json.dumps(state["origins"]))


def _load_state(path: Path) -> dict:
    with np.load(path) as data:
        return {"segmentation": data["segmentation"], "seed_coords": data["seed_coords"],
                "seed_index": int(data["seed_index"]), "max_id": int(data["max_id"]), "steps": int(data["steps"]),
                "origins": json.loads(str(data["origins"]))}


def run_segmentation(workspace, image_name: str, model_path: str | Path, out_name: str, options: InferenceOptions,
                     bbox: Box | None = None, overwrite: bool = False, checkpoint_seconds: float = 60.0,
                     progress: bool = True, threads: int | None = None) -> dict:
    """Segment `image_name` (or its `bbox`, treated as the whole volume) and write layer `out_name`."""
    from volumes.precomputed import write_layer

    from ffn.normalization import prepare_image

    out_layer, volume, box = open_run(workspace, image_name, out_name, bbox, overwrite)
    model, config = load_model(model_path)
    image, config, normalization = prepare_image(volume.read, box, config, options.normalize,
                                                 statistics_box=volume.box, progress=progress)
    if threads:
        torch.set_num_threads(threads)
    run_dir = workspace.root / "ffn-runs" / out_name
    run_dir.mkdir(parents=True, exist_ok=True)
    request = {"image": image_name, "bbox": [list(box.start), list(box.stop)], "model": _file_digest(Path(model_path)),
               "options": {k: v for k, v in asdict(options).items() if k not in ("max_segments", "batch_size", "channels_last", "compile")},
               "normalization": normalization}
    state_path, request_path = run_dir / "state.npz", run_dir / "run.json"
    state = None
    if state_path.exists():
        previous = json.loads(request_path.read_text()) if request_path.exists() else None
        if previous != json.loads(json.dumps(request)):
            state_path.unlink()  # a different request: start afresh
        else:
            state = _load_state(state_path)
    write_json_atomically(request_path, request, indent=1)

    canvas = Canvas(image, config, options)
    if state is not None:
        canvas.restore(state)
    else:
        canvas.compute_seeds()
    # The bar counts FFN steps, the work itself: one seed can take most of a run (a large neuron)
    # while thousands of others are skipped in no time, so a bar over seeds stalls. Its total is
    # an estimate that sharpens as seeds settle: steps so far scaled by the share of seeds done.
    seeds_total = len(canvas.seed_coords)
    bar = tqdm(total=estimated_total_steps(canvas.steps, canvas.seed_index, seeds_total), initial=canvas.steps,
               unit="step", disable=not progress, desc=f"ffn segment {out_name}", dynamic_ncols=True)
    bar.set_postfix_str(f"seeds {canvas.seed_index}/{seeds_total}, segments {len(canvas.origins)}")
    last_save = [time.time()]

    def on_segment(c: Canvas) -> None:
        bar.total = max(estimated_total_steps(c.steps, c.seed_index, seeds_total) or 0, bar.n)
        bar.set_postfix_str(f"seeds {c.seed_index}/{seeds_total}, segments {len(c.origins)}", refresh=True)
        if time.time() - last_save[0] >= checkpoint_seconds:
            _save_state(state_path, c)
            last_save[0] = time.time()

    def on_step(count: int) -> None:
        bar.update(count)
        if bar.total is not None and bar.n > bar.total:  # the estimate was low: keep the bar below its end
            bar.total = bar.n

    forward = ForwardRunner.for_options(model, options)
    started = time.time()
    try:
        run_canvases([canvas.run(on_segment)], forward, on_step=on_step)
    finally:  # on interruption too, so the next run resumes from the last settled seed
        bar.close()
        _save_state(state_path, canvas)
    resolution = volume.resolution_nm
    write_layer(out_layer, canvas.labels(), resolution, layer_type="segmentation", overwrite=True,
                voxel_offset=tuple(int(v) for v in np.add(volume.voxel_offset, box.start)), progress=progress)
    origins = {"image": image_name, "bbox": request["bbox"], "steps": canvas.steps,
               "seconds": round(time.time() - started, 1), "complete": canvas.seed_index >= len(canvas.seed_coords),
               "segments": [o.to_dict() for o in canvas.origins.values()]}
    write_json_atomically(run_dir / "origins.json", origins, indent=1)
    return origins
