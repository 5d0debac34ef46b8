"""`connectome demo`: build a workspace end to end and serve it.

Steps, each skipped when its output already exists (so a re-run resumes):

    1. image        the EM volume as a precomputed layer
    2. model        the FFN model (Google's FIB-25 checkpoint converted, or the shipped synthetic one)
    3. segment      our FFN segmentation of a bounded box (a whole-cube run takes hours on a CPU)
    4. proofread    the layer to proofread: for FIB-25, Google's published FFN segmentation of the
                    whole cube (same checkpoint; our box result stays as layer 'ffn'), else our result
    5. mesh         one mesh per supervoxel (merged neurons render as the union)
    6. graph        supervoxels and their adjacency graph in the store
    7. synapses     detection where a model matched to the data exists (the shipped synthetic one), else
                    skipped with advice
    8. users        an admin and a proofreader, their login links kept in W/demo-logins.json

Data: --data DIR laid out as the published files (fib25-training2/, ffn-fib25-google/), else the
same files downloaded from where they are published into a cache (demo.fib25_download), else
(offline, or --offline) a synthetic volume from `connectome synth` with the small FFN and synapse
models that ship in ffn/models and synapses/models (made by `python -m demo.models`, see their
README.md).
Every step calls the same Python function as the owning package's command (import_volume,
convert_checkpoint, run_segmentation, mesh_segmentation, build_workspace_graph,
detect_in_workspace, add_user), so the demo and the CLI cannot drift apart.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from volumes.errors import InputError, RefusedError
from volumes.workspace import Workspace
from volumes.atomic import write_json_atomically

FIB25_IMAGE = "fib25-training2/fib25_training2.h5:volumes/raw"
FIB25_CHECKPOINT = "ffn-fib25-google/models/fib25/model.ckpt-27465036"
FIB25_OPTIONS = "ffn-fib25-google/configs/inference_training_sample2.pbtxt"
FIB25_PUBLISHED_SEGMENTATION = "ffn-fib25-google/results/fib25/sample-training2.npz"
DEFAULT_FIB25_BBOX = "93,93,93,157,157,157"  # 64^3 in the middle: a few minutes of FFN on 2 cores
SYNTHETIC_SHAPE = (96, 96, 96)  # voxels z, y, x of the offline demo's volume, as `connectome synth` writes it
SYNTHETIC_SEED = 1
SYNTHETIC_RESOLUTION_NM = (8.0, 8.0, 8.0)
REPOSITORY = Path(__file__).resolve().parent.parent
SHIPPED_SYNTHETIC_MODEL = REPOSITORY / "ffn" / "models" / "synthetic.pt"
SHIPPED_SYNTHETIC_OPTIONS = REPOSITORY / "ffn" / "models" / "synthetic-inference.toml"
SHIPPED_SYNAPSE_MODEL = REPOSITORY / "synapses" / "models" / "synthetic.pt"
LOGINS_FILE = "demo-logins.json"
GRAPH_MARKER = ".demo-graph-built"
SOURCE_FILE = ".demo-source"
DEMO_USERS = (("admin", "admin"), ("ana", "proofreader"))


@dataclass(frozen=True)
class DemoPlan:
    """Where the demo's inputs come from."""

    image_spec: str
    checkpoint: Path | None  # a Google TF checkpoint prefix to convert, or None
    options: Path | None
    bbox: str | None
    published_segmentation: str | None  # a volume spec of a published whole-volume segmentation to proofread
    description: str


def plan_demo(data_dir: str | None, workspace: Workspace, bbox: str | None, download: bool = True) -> DemoPlan:
    """FIB-25 from --data when given, else downloaded into the cache, else a synthetic volume (written into the workspace)."""
    if data_dir:
        root = Path(data_dir).resolve()
        for relative in (FIB25_IMAGE.split(":")[0], FIB25_CHECKPOINT + ".index", FIB25_OPTIONS, FIB25_PUBLISHED_SEGMENTATION):
            if not (root / relative).is_file():
                raise InputError(f"--data {data_dir}: {relative} is missing (expected the published FIB-25 layout)")
        return _fib25_plan(root, bbox, f"FIB-25 cube from {root} with Google's FFN checkpoint")
    if download:
        from demo.fib25_download import default_cache, fetch_fib25

        try:
            root = fetch_fib25(default_cache())
        except RefusedError as exc:
            print(f"connectome demo: FIB-25 is not available offline: {exc}; using a synthetic volume instead", flush=True)
        else:
            return _fib25_plan(root, bbox, f"FIB-25 cube downloaded into {root}, with Google's FFN checkpoint")
    synthetic = workspace.root / "synthetic.h5"
    shipped = [name for name, path in (("FFN", SHIPPED_SYNTHETIC_MODEL), ("synapse", SHIPPED_SYNAPSE_MODEL)) if path.is_file()]
    models = f" with the small {' and '.join(shipped)} model{'s' if len(shipped) > 1 else ''} shipped for it" if shipped else " (no shipped models found)"
    options = SHIPPED_SYNTHETIC_OPTIONS if SHIPPED_SYNTHETIC_OPTIONS.is_file() else None
    return DemoPlan(image_spec=f"{synthetic}:volumes/raw", checkpoint=None, options=options,
                    bbox=bbox, published_segmentation=None,
                    description=f"a synthetic volume from 'connectome synth'{models} (no --data given; works offline)")


def _fib25_plan(root: Path, bbox: str | None, description: str) -> DemoPlan:
    return DemoPlan(image_spec=str(root / FIB25_IMAGE), checkpoint=root / FIB25_CHECKPOINT,
                    options=root / FIB25_OPTIONS, bbox=bbox or DEFAULT_FIB25_BBOX,
                    published_segmentation=f"{root / FIB25_PUBLISHED_SEGMENTATION}:segmentation", description=description)


def _remember_source(workspace: Workspace, source: str) -> None:
    """Refuse to resume a workspace built from other data (its finished steps would be reused)."""
    marker = workspace.root / SOURCE_FILE
    if marker.is_file() and marker.read_text().strip() != source:
        raise InputError(f"workspace {workspace.root} holds a {marker.read_text().strip()} demo; "
                         f"build the {source} one with another --workspace")
    marker.write_text(source + "\n")


# Seconds each step took on a quiet 2-core machine (2026-12-02, `connectome demo --no-serve` on a fresh
# workspace; README quotes the totals). A loaded machine takes several times longer.
MEASURED_STEP_SECONDS = {
    "synthetic": {"image": 3, "model": 0, "segment": 58, "proofread": 0, "mesh": 4, "graph": 2, "synapses": 3, "users": 0},
    "FIB-25": {"image": 3, "model": 3, "segment": 23, "proofread": 1, "mesh": 55, "graph": 3, "synapses": 0, "users": 0},
}


def expected(kind: str, key: str) -> str:
    seconds = MEASURED_STEP_SECONDS[kind][key]
    return "seconds" if seconds < 10 else f"~{seconds} s" if seconds < 90 else f"~{round(seconds / 60)} min"


def step(number: int, total: int, title: str, done: bool, action: Callable[[], str | None], took: str = "") -> None:
    """Print one step's header (with what it took when measured), run it unless done, and say how long it took."""
    print(f"[{number}/{total}] {title}" + (f" (measured: {took} on 2 quiet cores)" if took and not done else ""), flush=True)
    if done:
        print("      already done, reusing it", flush=True)
        return
    started = time.time()
    message = action()
    print(f"      {message or 'done'} ({time.time() - started:.0f} s)", flush=True)


def build_demo(workspace_dir: str, data_dir: str | None = None, bbox: str | None = None,
               download: bool = True) -> Workspace:
    """Run steps 1-8; returns the workspace, ready to serve."""
    workspace = Workspace.init(workspace_dir)
    plan = plan_demo(data_dir, workspace, bbox, download)
    _remember_source(workspace, "FIB-25" if plan.checkpoint is not None else "synthetic")
    print(f"connectome demo: {plan.description}; workspace {workspace.root}", flush=True)
    model_path = workspace.root / "models" / "ffn.pt"
    ffn_layer = "ffn" if plan.published_segmentation else "segmentation"
    total = 8

    def make_image() -> str:
        from volumes.importer import import_volume
        from volumes.synth import synthesize, write_cremi

        synthetic = Path(plan.image_spec.split(":")[0])
        if plan.checkpoint is None and not synthetic.is_file():
            write_cremi(synthetic, synthesize(SYNTHETIC_SHAPE, SYNTHETIC_SEED, SYNTHETIC_RESOLUTION_NM))
        import_volume(workspace, plan.image_spec, "image")
        return "imported as layer 'image'"

    def make_model() -> str:
        model_path.parent.mkdir(exist_ok=True)
        if plan.checkpoint is not None:
            from ffn.tf_checkpoint import convert_checkpoint

            convert_checkpoint(plan.checkpoint, model_path, plan.options)
            return f"converted Google's checkpoint to {model_path}"
        if not SHIPPED_SYNTHETIC_MODEL.is_file():
            return f"no FFN model ships at {SHIPPED_SYNTHETIC_MODEL}; the synthetic ground-truth labels will stand in"
        model_path.write_bytes(SHIPPED_SYNTHETIC_MODEL.read_bytes())
        return f"using the small FFN model shipped for synthetic data ({SHIPPED_SYNTHETIC_MODEL})"

    def segment() -> str:
        from ffn.options import load_options
        from ffn.segment_run import run_segmentation
        from volumes.geometry import Box
        from volumes.importer import import_volume

        if not model_path.is_file():
            labels = plan.image_spec.split(":")[0] + ":volumes/labels/neuron_ids"
            import_volume(workspace, labels, "segmentation", labels=True)
            return "imported the synthetic volume's own labels as 'segmentation' (NOT an FFN result: no model)"
        options = load_options(str(plan.options) if plan.options is not None else None)
        result = run_segmentation(workspace, "image", str(model_path), ffn_layer, options,
                                  bbox=Box.parse(plan.bbox) if plan.bbox else None)
        print(f"      {len(result['segments'])} segments, {result['steps']} FFN steps", flush=True)
        return f"FFN segmentation written as layer '{ffn_layer}'" + (f" (box {plan.bbox})" if plan.bbox else "")

    def proofreading_layer() -> str:
        from volumes.importer import import_volume

        import_volume(workspace, plan.published_segmentation, "segmentation", labels=True,
                      resolution_nm=open_image_resolution(workspace))
        return (f"proofreading Google's published FFN segmentation of the whole cube (layer 'segmentation'); "
                f"our own FFN run on the box is layer '{ffn_layer}' (serve it with --segmentation-layer {ffn_layer})")

    def mesh() -> str:
        from volumes.meshing import mesh_segmentation

        count = mesh_segmentation(workspace, "segmentation")
        return f"meshed {count} supervoxels"

    def graph() -> str:
        return build_graph(workspace, "segmentation")

    def users() -> str:
        create_demo_users(workspace)
        return f"login links in {workspace.root / LOGINS_FILE}"

    from volumes.meshing import mesh_is_complete

    kind = "FIB-25" if plan.checkpoint is not None else "synthetic"
    whole = sum(MEASURED_STEP_SECONDS[kind].values())
    print(f"connectome demo: {total} steps; on a quiet 2-core machine the whole {kind} build took {whole} s "
          "(several times longer on a loaded one); finished steps are reused", flush=True)
    step(1, total, "import the EM image", workspace.has_layer("image"), make_image, expected(kind, "image"))
    step(2, total, "FFN model", model_path.is_file() or workspace.has_layer(ffn_layer), make_model, expected(kind, "model"))
    step(3, total, "FFN segmentation", workspace.has_layer(ffn_layer), segment, expected(kind, "segment"))
    if plan.published_segmentation:
        step(4, total, "segmentation to proofread", workspace.has_layer("segmentation"), proofreading_layer,
             expected(kind, "proofread"))
    else:
        step(4, total, "segmentation to proofread", False, lambda: "the FFN result, layer 'segmentation'")
    step(5, total, "meshes", mesh_is_complete(workspace.layer_path("segmentation")), mesh, expected(kind, "mesh"))
    step(6, total, "adjacency graph", graph_is_built(workspace), graph, expected(kind, "graph"))
    step(7, total, "synapse detection", workspace.has_layer("segmentation_synapses"), lambda: detect_synapses(workspace, plan),
         expected(kind, "synapses"))
    step(8, total, "users", (workspace.root / LOGINS_FILE).is_file(), users, expected(kind, "users"))
    if plan.checkpoint is None:
        truth = plan.image_spec.split(":")[0] + ":volumes/labels/neuron_ids"
        print(f"connectome demo: segmentation {describe_score(score_against_truth(workspace, truth))}", flush=True)
    return workspace


SPAN_MIN_VOXELS = 100  # a segment spans a true neuron when it holds at least this many of its voxels


def score_against_truth(workspace: Workspace, truth_spec: str) -> dict:
    """The segmentation layer against the synthetic volume's own neuron labels (the demo knows the truth).

    Returns the VOI figures and, for the segment that touches the most true neurons, how many it
    touches (each with at least SPAN_MIN_VOXELS voxels): a sponge-like merger shows there at once.
    """
    from ffn.evaluation import contingency_table, evaluate_segmentation
    from volumes.io import open_volume

    segmentation = np.asarray(open_volume(workspace.layer_url("segmentation")).read())
    truth = np.asarray(open_volume(truth_spec).read())
    report = evaluate_segmentation(segmentation, truth)
    table = contingency_table(segmentation, truth)
    spans = (table.seg_ids != 0) & (table.gt_ids != 0) & (table.counts >= SPAN_MIN_VOXELS)
    _, neurons_per_segment = np.unique(table.seg_ids[spans], return_counts=True)
    report["max_true_neurons_per_segment"] = int(neurons_per_segment.max()) if neurons_per_segment.size else 0
    return report


def describe_score(report: dict) -> str:
    return (f"against the synthetic truth: VOI split/merge {report['voi_split']:.3f}/{report['voi_merge']:.3f}, "
            f"sum {report['voi_sum']:.3f}; {report['n_segments']} segments for {report['n_gt_objects']} true neurons; "
            f"the widest segment spans {report['max_true_neurons_per_segment']} true neurons "
            f"(each with >= {SPAN_MIN_VOXELS} voxels)")


def open_image_resolution(workspace: Workspace) -> tuple[float, float, float]:
    """The image layer's voxel size (z, y, x nm), for label files that do not record one."""
    from volumes.io import open_volume

    return open_volume(workspace.layer_url("image")).resolution_nm


def graph_is_built(workspace: Workspace) -> bool:
    return (workspace.root / GRAPH_MARKER).is_file()


def build_graph(workspace: Workspace, layer: str) -> str:
    """Load the segmentation's supervoxels and adjacency graph into the store (once; a marker records it)."""
    from db.workspace_graph import build_workspace_graph

    build_workspace_graph(workspace, layer)
    (workspace.root / GRAPH_MARKER).write_text(layer)
    return f"graph of layer '{layer}' in the store"


def detect_synapses(workspace: Workspace, plan: DemoPlan) -> str:
    """Synapse detection needs a model trained for this modality and voxel size; only the synthetic one ships."""
    if plan.checkpoint is None and SHIPPED_SYNAPSE_MODEL.is_file():
        from synapses.workspace_detection import detect_in_workspace

        detection = detect_in_workspace(workspace, "image", "segmentation", SHIPPED_SYNAPSE_MODEL)
        for line in detection.summary():
            print(f"      {line}", flush=True)
        return f"detected with the small synapse model shipped for synthetic data ({SHIPPED_SYNAPSE_MODEL})"
    return ("skipped: no synapse model matched to this data's modality and voxel size ships with connectome; "
            "train one on annotated data of the same kind with 'connectome synapses train', then run "
            f"'connectome synapses detect -w {workspace.root} --image image --segmentation segmentation --model MODEL.pt'")


def create_demo_users(workspace: Workspace) -> dict[str, str]:
    """Create the demo users once and keep their tokens (shown once by the store) in a private file."""
    from db import store

    logins: dict[str, str] = {}
    with store.open_store(workspace) as proofreading_store:
        for name, role in DEMO_USERS:
            logins[name] = store.add_user(proofreading_store, name, role)
    write_json_atomically(workspace.root / LOGINS_FILE, logins, indent=1, mode=0o600)
    return logins


def demo_logins(workspace: Workspace) -> dict[str, str]:
    path = workspace.root / LOGINS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}
