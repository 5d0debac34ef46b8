"""Segment a large volume as overlapping subvolumes on a Dask cluster, then stitch the ids.

Each task segments one subvolume (its core box grown by the overlap) as if it
were a whole volume, which is what google/ffn leaves to the user. Stitching
assigns every task's local ids a global range, joins two ids of neighbouring
tasks when their objects agree inside the shared overlap (IoU above a
threshold), and takes each voxel from the task whose core box holds it.

Finished tasks are saved under `<workspace>/ffn-runs/<out>/tasks/`, so an
interrupted run resumes with the tasks still missing.
"""
from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm import tqdm

from volumes.errors import InputError
from volumes.geometry import Block, Box
from volumes.atomic import atomic_path, write_text_atomically


def plan_tasks(volume_box: Box, core_shape: Sequence[int], overlap: Sequence[int]) -> list[Block]:
    """Tile `volume_box` with core (write) boxes of `core_shape`, each read with `overlap` voxels of context per side."""
    if any(int(c) <= 0 for c in core_shape):
        raise InputError(f"subvolume size must be positive, got {tuple(core_shape)}")
    if any(int(o) < 0 for o in overlap):
        raise InputError(f"overlap must be non-negative, got {tuple(overlap)}")
    return volume_box.blocks(core_shape, overlap)


class FFNSegmenter:
    """Picklable per-task FFN segmentation; each worker process loads the model once."""

    def __init__(self, model_path: str | Path, options_dict: dict, threads: int = 1,
                 image_mean_stddev: tuple[float, float] | None = None):
        """`image_mean_stddev`: the whole volume's statistics when the run normalises by them (not the task's own)."""
        self.model_path = str(model_path)
        self.options_dict = options_dict
        self.threads = threads
        self.image_mean_stddev = image_mean_stddev

    def __call__(self, image_zyx: np.ndarray) -> np.ndarray:
        import torch

        from ffn.inference import segment_subvolume
        from ffn.options import InferenceOptions

        torch.set_num_threads(self.threads)
        model, config = _load_model_cached(self.model_path)
        if self.image_mean_stddev is not None:
            config = dataclasses.replace(config, image_mean=self.image_mean_stddev[0],
                                         image_stddev=self.image_mean_stddev[1])
        labels, _ = segment_subvolume(image_zyx, model, config, InferenceOptions(**self.options_dict))
        return labels


@functools.lru_cache(maxsize=2)
def _load_model_cached(path: str):
    from ffn.model import load_model

    return load_model(path)


def run_task(image_spec: str, task: Block, segment: Callable[[np.ndarray], np.ndarray], result_path: str) -> str:
    """Worker side: read the task's box, segment it, save local labels atomically; returns the file path."""
    from volumes.io import open_volume

    labels = np.asarray(segment(open_volume(image_spec).read(task.read)), dtype=np.uint64)
    if labels.shape != task.read.shape:
        raise InputError(f"task {task.index}: segmentation shape {labels.shape} differs from its box {task.read.shape}")
    path = Path(result_path)
    with atomic_path(path) as temporary:
        np.save(temporary, labels)
    return str(path)


def overlap_matches(labels_a: np.ndarray, labels_b: np.ndarray, iou_threshold: float) -> np.ndarray:
    """(id_a, id_b) pairs whose objects agree inside a shared region: IoU within the region >= threshold."""
    both = (labels_a != 0) & (labels_b != 0)
    if not both.any():
        return np.zeros((0, 2), np.uint64)
    pairs, pair_counts = np.unique(np.stack([labels_a[both], labels_b[both]], axis=1), axis=0, return_counts=True)
    ids_a, counts_a = np.unique(labels_a[labels_a != 0], return_counts=True)
    ids_b, counts_b = np.unique(labels_b[labels_b != 0], return_counts=True)
    size_a = counts_a[np.searchsorted(ids_a, pairs[:, 0])]
    size_b = counts_b[np.searchsorted(ids_b, pairs[:, 1])]
    iou = pair_counts / (size_a + size_b - pair_counts)
    return pairs[iou >= iou_threshold]


def stitch(tasks: list[Block], task_labels: list[np.ndarray], volume_box: Box, iou_threshold: float = 0.5) -> np.ndarray:
    """Assemble task results into one uint64 volume with consecutive global ids (0 stays background)."""
    import fastremap
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    offsets, total = [], 0
    global_labels = []
    for labels in task_labels:
        offsets.append(total)
        shifted = np.where(labels != 0, labels.astype(np.uint64) + np.uint64(total), np.uint64(0))
        global_labels.append(shifted)
        total += int(labels.max()) if labels.size else 0
    edges = [np.zeros((0, 2), np.uint64)]
    for i, a in enumerate(tasks):
        for b in tasks[i + 1:]:
            shared = a.read.intersect(b.read)
            if shared.is_empty:
                continue
            edges.append(overlap_matches(global_labels[a.index][shared.slices(a.read.start)],
                                         global_labels[b.index][shared.slices(b.read.start)], iou_threshold))
    edges = np.concatenate(edges).astype(np.int64)
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(total + 1, total + 1))
    _, component = connected_components(graph, directed=False)
    # component ids are arbitrary; background (id 0) keeps 0 after renumbering below
    mapping = component.astype(np.uint64) + np.uint64(1)
    mapping[0] = 0
    out = np.zeros(volume_box.shape, np.uint64)
    for task, labels in zip(tasks, global_labels):
        core = labels[task.write_within_read()]
        out[task.write.slices(volume_box.start)] = mapping[core]
    out, _ = fastremap.renumber(out, in_place=True, preserve_zero=True)
    return out.astype(np.uint64)


def segment_distributed(image_spec: str, volume_box: Box, segment: Callable[[np.ndarray], np.ndarray], task_dir: Path,
                        core_shape: Sequence[int], overlap: Sequence[int], scheduler: str | None = None,
                        n_workers: int = 2, iou_threshold: float = 0.5, progress: bool = True) -> np.ndarray:
    """Run every unfinished task on Dask (a scheduler address, or a local cluster of `n_workers` processes) and stitch."""
    from dask.distributed import Client, LocalCluster, as_completed

    tasks = plan_tasks(volume_box, core_shape, overlap)
    task_dir.mkdir(parents=True, exist_ok=True)
    plan = {"image": image_spec, "box": str(volume_box), "core_shape": list(core_shape), "overlap": list(overlap)}
    plan_path = task_dir / "plan.json"
    if plan_path.exists() and json.loads(plan_path.read_text()) != plan:
        for stale in task_dir.glob("*.npy"):
            stale.unlink()  # another plan: earlier task results do not apply
    write_text_atomically(plan_path, json.dumps(plan))
    paths = [task_dir / f"task-{t.index:05d}.npy" for t in tasks]
    todo = [t for t, p in zip(tasks, paths) if not p.exists()]
    if todo:
        cluster = None if scheduler else LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                                                      dashboard_address=None, host="127.0.0.1")
        with Client(scheduler or cluster) as client:
            futures = [client.submit(run_task, image_spec, t, segment, str(paths[t.index]), pure=False) for t in todo]
            with tqdm(total=len(tasks), initial=len(tasks) - len(todo), unit="subvolume", desc="ffn subvolumes",
                      disable=not progress) as bar:
                for future in as_completed(futures):
                    future.result()
                    bar.update(1)
        if cluster is not None:
            cluster.close()
    task_labels = [np.load(p) for p in paths]
    shifted_tasks = [Block(t.index, t.write.translate(-volume_box.start), t.read.translate(-volume_box.start))
                     for t in tasks]
    return stitch(shifted_tasks, task_labels, Box.from_shape(volume_box.shape), iou_threshold)



def run_distributed_segmentation(workspace, image_name: str, model_path: str | Path, out_name: str, options,
                                 core_shape: Sequence[int], overlap: Sequence[int], bbox: Box | None = None,
                                 scheduler: str | None = None, n_workers: int = 2, overwrite: bool = False,
                                 progress: bool = True) -> Path:
    """`connectome ffn segment --subvolume-size ...`: FFN over subvolumes on Dask, written as layer `out_name`."""
    from dataclasses import asdict

    from ffn.model import load_model
    from ffn.normalization import image_statistics
    from ffn.segment_run import open_run
    from volumes.precomputed import write_layer

    out_layer, volume, box = open_run(workspace, image_name, out_name, bbox, overwrite)
    load_model(model_path)  # a bad model file fails here, before any worker starts
    if options.normalize == "clahe":
        raise InputError("--normalize clahe is not available with --subvolume-size yet; use volume, or segment "
                         "without subvolumes")
    statistics = image_statistics(volume.read, volume.box) if options.normalize == "volume" else None
    segmenter = FFNSegmenter(Path(model_path).resolve(), asdict(options), image_mean_stddev=statistics)
    labels = segment_distributed(volume.spec, box, segmenter, workspace.root / "ffn-runs" / out_name / "tasks",
                                 core_shape, overlap, scheduler=scheduler, n_workers=n_workers, progress=progress)
    return write_layer(out_layer, labels, volume.resolution_nm, layer_type="segmentation", overwrite=True,
                       voxel_offset=tuple(int(v) for v in np.add(volume.voxel_offset, box.start)), progress=progress)
