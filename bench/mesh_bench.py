"""Mesh files and bytes: Neuroglancer's legacy format against the multi-resolution sharded one, same run.

    .venv/bin/python bench/mesh_bench.py [--sizes 250,500] [--chunk 256]

Volumes: the FIB-25 cube's NeuroProof oversegmentation (250³, 3,051 supervoxels; ../shared/data or
$CONNECTOME_DATA) and, for 500, that cube mirrored 2x2x2 with each copy's labels offset (so 8x the
supervoxels, shapes as real as the cube's). Each format is written by `mesh_segmentation` in a
child process of its own (peak RSS per run). Prints files, bytes, wall and CPU time per format,
and what a viewer fetches to draw the 20 largest supervoxels from far away (legacy: every
fragment; multires: the coarsest level of each octree) and close up (multires: the finest).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "tests"))
DATA = Path(os.environ.get("CONNECTOME_DATA", REPO_ROOT.parent / "shared" / "data"))
FIB25 = DATA / "fib25-training2" / "fib25_training2.h5"
RESOLUTION_NM = (10.0, 10.0, 10.0)


def build_volume(root: Path, size: int) -> tuple[Path, np.ndarray]:
    """A workspace whose segmentation is the cube (size 250) or the cube mirrored to size³."""
    import h5py

    from volumes.precomputed import write_layer
    from volumes.workspace import Workspace

    with h5py.File(FIB25, "r") as f:
        cube = f["volumes/labels/neuroproof_oversegmentation"][:].astype(np.uint64)
    copies = -(-size // cube.shape[0])
    step = int(cube.max()) + 1
    labels = np.zeros((cube.shape[0] * copies,) * 3, dtype=np.uint64)
    for index in np.ndindex(copies, copies, copies):
        copy = cube
        for axis, flip in enumerate(index):
            if flip % 2:
                copy = np.flip(copy, axis=axis)
        number = int(np.ravel_multi_index(index, (copies,) * 3))
        at = tuple(slice(i * cube.shape[0], (i + 1) * cube.shape[0]) for i in index)
        labels[at] = np.where(copy > 0, copy + number * step, 0)
    labels = labels[:size, :size, :size]
    workspace = Workspace.init(root)
    write_layer(workspace.layer_path("segmentation"), labels, RESOLUTION_NM, "segmentation", progress=False)
    return root, labels


def mesh_in_child(root: str, mesh_format: str, chunk: int, results_path: str) -> None:
    from volumes.meshing import mesh_segmentation
    from volumes.workspace import Workspace

    started_wall, started_cpu = time.perf_counter(), time.process_time()
    count = mesh_segmentation(Workspace(root), "segmentation", chunk_shape=(chunk,) * 3, mesh_format=mesh_format,
                              progress=False)
    Path(results_path).write_text(json.dumps({"supervoxels": count, "wall_s": time.perf_counter() - started_wall,
                 "cpu_s": time.process_time() - started_cpu,
                 "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def directory_figures(mesh_dir: Path) -> tuple[int, int]:
    files = [p for p in mesh_dir.iterdir() if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def fetched_bytes(legacy_dir: Path, multires_layer: Path, supervoxels: list[int]) -> dict[str, int]:
    """Bytes a viewer reads to draw these supervoxels: legacy manifests and fragments; multires
    manifests and the coarsest (far) or finest (close) level of each octree."""
    from test_server_meshing import mesh_nodes

    legacy = 0
    for supervoxel in supervoxels:
        manifest = legacy_dir / f"{supervoxel}:0"
        legacy += manifest.stat().st_size
        legacy += sum((legacy_dir / name).stat().st_size for name in json.loads(manifest.read_text())["fragments"])
    far = close = 0
    for supervoxel in supervoxels:
        manifest, _, nodes = mesh_nodes(multires_layer, supervoxel)
        coarsest = max(lod for lod, *_ in nodes)
        header = 28 + 20 * len(manifest.lod_scales) + 16 * len(nodes)  # the manifest's size
        far += header + sum(len(data) for lod, _, _, data in nodes if lod == coarsest)
        close += header + sum(len(data) for lod, _, _, data in nodes if lod == 0)
    return {"legacy": legacy, "multires_far": far, "multires_close": close}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="250,500", help="cube edges in voxels (250: the FIB-25 cube itself)")
    parser.add_argument("--chunk", type=int, default=256, help="meshing chunk edge in voxels (the default of `mesh`)")
    args = parser.parse_args()
    if not FIB25.is_file():
        print(f"mesh_bench: needs {FIB25} (set CONNECTOME_DATA)", file=sys.stderr)
        return 2
    context = multiprocessing.get_context("spawn")
    for size in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(prefix="mesh-bench-") as scratch:
            figures = {}
            _, labels = build_volume(Path(scratch) / "legacy", size)
            shutil.copytree(Path(scratch) / "legacy", Path(scratch) / "multires")
            for mesh_format in ("legacy", "multires"):
                root = Path(scratch) / mesh_format
                results_path = Path(scratch) / f"{mesh_format}.json"
                child = context.Process(target=mesh_in_child, args=(str(root), mesh_format, args.chunk, str(results_path)))
                child.start()
                child.join()
                if child.exitcode != 0:
                    print(f"mesh_bench: the {mesh_format} run failed (exit {child.exitcode})", file=sys.stderr)
                    return 1
                figures[mesh_format] = json.loads(results_path.read_text())
                files, size_bytes = directory_figures(root / "layers" / "segmentation" / "mesh")
                figures[mesh_format].update(files=files, bytes=size_bytes)
            ids, counts = np.unique(labels[labels > 0], return_counts=True)
            largest = [int(i) for i in ids[np.argsort(-counts)][:20]]
            fetched = fetched_bytes(Path(scratch) / "legacy" / "layers" / "segmentation" / "mesh",
                                    Path(scratch) / "multires" / "layers" / "segmentation", largest)
            legacy, multires = figures["legacy"], figures["multires"]
            print(f"{size}³ ({labels.size / 1e6:.0f} M voxels, {legacy['supervoxels']} supervoxels, chunk {args.chunk}³):")
            for name, row in figures.items():
                print(f"  {name:8s} {row['files']:>8,} files {row['bytes'] / 1e6:8.1f} MB  "
                      f"wall {row['wall_s']:6.1f} s  CPU {row['cpu_s']:6.1f} s  peak RSS {row['peak_rss_mb']:6.0f} MB")
            print(f"  multires / legacy: files {multires['files'] / legacy['files']:.5f}x, "
                  f"bytes {multires['bytes'] / legacy['bytes']:.2f}x, CPU {multires['cpu_s'] / legacy['cpu_s']:.2f}x")
            print(f"  the 20 largest supervoxels, bytes a viewer reads: legacy {fetched['legacy'] / 1e3:,.0f} KB; "
                  f"multires far {fetched['multires_far'] / 1e3:,.0f} KB "
                  f"({fetched['multires_far'] / fetched['legacy']:.2f}x), "
                  f"close {fetched['multires_close'] / 1e3:,.0f} KB ({fetched['multires_close'] / fetched['legacy']:.2f}x)")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
