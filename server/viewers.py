"""One Neuroglancer viewer per user: their own camera and selection, the shared agglomeration, edit actions.

Key and mouse bindings (chosen not to clash with Neuroglancer's defaults):

    m                 merge the two segments selected last (double-click selects)
    q / alt+click     mark the supervoxel under the mouse as a split source
    w / alt+shift+click  mark it as a split sink
    p                 preview the split (the neuron is drawn as the pieces it would become)
    k                 run the split
    c                 clear split marks and preview
    ctrl+z / ctrl+y   undo / redo (this user's own latest edit; an admin undoes others' by id)
    n                 show the neuron under the mouse: root id, status, cell type, name, notes
    shift+n           set that neuron's status to the next one of the vocabulary
    alt+r             next merge-review task: the view moves to it, its two supervoxels selected
    alt+a / alt+x / alt+s   accept (merge) / reject / skip the task shown

The status line at the bottom says what happened, who did it, and why an edit was refused.
Edits themselves run on the server's worker threads, never on the tornado thread.
"""
from __future__ import annotations

import logging
import secrets
import threading
from typing import Callable

import neuroglancer

from db import store
from server.auth import Caller
from server.services import ServerServices
from volumes.errors import ConnectomeError

LOG = logging.getLogger(__name__)


IMAGE_LAYER = "image"
SEGMENTATION_LAYER = "segmentation"
PRE_SYNAPSE_LAYER = "pre-synapses"
POST_SYNAPSE_LAYER = "post-synapses"
STATUS_KEY = "proofreading"  # this user's own actions and refusals
EDITS_STATUS_KEY = "edits"  # the latest edit of the dataset, by anyone
SYNAPSE_RADIUS_NM = 40.0
MAX_SYNAPSES_SHOWN = 20000
VIEW_PIXELS = 400  # the image fills about this many pixels of a panel at first

KEY_BINDINGS = {
    "keym": "merge-selected",
    "keyq": "split-source",
    "keyw": "split-sink",
    "keyp": "split-preview",
    "keyk": "split-run",
    "keyc": "split-clear",
    "control+keyz": "undo",
    "control+keyy": "redo",
    "keyn": "neuron-info",
    "shift+keyn": "next-status",
    "alt+keyr": "review-next",
    "alt+keya": "review-accept",
    "alt+keyx": "review-reject",
    "alt+keys": "review-skip",
}
MOUSE_BINDINGS = {"alt+click0": "split-source", "alt+shift+click0": "split-sink"}


def selected_supervoxel(action_state) -> int | None:
    """The supervoxel under the mouse when an action fired (the raw label, not its neuron's representative)."""
    selected = action_state.selected_values.get(SEGMENTATION_LAYER)
    value = getattr(selected, "value", None)
    if value is None:
        return None
    supervoxel = getattr(value, "key", value)
    return int(supervoxel) or None


class UserViewer:
    """A user's viewer; the viewer id in its URL is random and unrelated to the user's token."""

    def __init__(self, server: ServerServices, caller: Caller):
        self.server = server
        self.caller = caller
        self.viewer_id = secrets.token_hex(16)
        self.viewer = neuroglancer.Viewer(token=self.viewer_id)
        self._lock = threading.Lock()
        self._show_lock = threading.Lock()  # one agglomeration write at a time, each with the preview current then
        self._selection_order: list[int] = []  # selected segments, oldest first
        self.split_sources: list[int] = []
        self.split_sinks: list[int] = []
        self.preview_groups: list[list[int]] | None = None
        self.shown_edit_id: int | None = None
        self.review_task: store.Task | None = None  # the merge-review task this viewer shows
        self._build_state()
        self._bind_actions()
        self.viewer.shared_state.add_changed_callback(self._track_selection)

    @property
    def path(self) -> str:
        return f"/v/{self.viewer_id}/"

    # ------------------------------------------------------------------ state

    def _build_state(self) -> None:
        layers = self.server.layers
        resolution_xyz, size_xyz, offset_xyz = self.server.image_geometry()
        with self.viewer.txn() as s:
            dimensions = neuroglancer.CoordinateSpace(names=["x", "y", "z"], units="nm", scales=resolution_xyz)
            s.dimensions = dimensions
            s.position = [offset + size / 2 for offset, size in zip(offset_xyz, size_xyz)]
            s.cross_section_scale = max(size_xyz) / VIEW_PIXELS
            s.projection_scale = max(size_xyz) * 1.5
            s.layers[IMAGE_LAYER] = neuroglancer.ImageLayer(source=self.server.layer_source(layers.image))
            s.layers[SEGMENTATION_LAYER] = neuroglancer.SegmentationLayer(source=self.server.layer_source(layers.segmentation))
            for name, color, positions in self.server.synapse_annotations():
                s.layers[name] = neuroglancer.LocalAnnotationLayer(
                    dimensions=dimensions,
                    annotations=positions,
                    annotation_color=color,
                    annotation_relationships=["pre_segment", "post_segment"],
                    linked_segmentation_layer={"pre_segment": SEGMENTATION_LAYER, "post_segment": SEGMENTATION_LAYER},
                    filter_by_segmentation=["pre_segment", "post_segment"],
                )
            s.selected_layer.layer = SEGMENTATION_LAYER
        with self.viewer.config_state.txn() as s:
            for key, action in KEY_BINDINGS.items():
                s.input_event_bindings.viewer[key] = action
            for key, action in MOUSE_BINDINGS.items():
                s.input_event_bindings.data_view[key] = action
            s.status_messages[STATUS_KEY] = f"{self.caller.name} ({self.caller.role}): double-click two segments and press m to merge"

    def _bind_actions(self) -> None:
        handlers: dict[str, Callable] = {
            "merge-selected": self._on_merge,
            "split-source": lambda action_state: self._on_mark(action_state, self.split_sources, "source"),
            "split-sink": lambda action_state: self._on_mark(action_state, self.split_sinks, "sink"),
            "split-preview": lambda action_state: self._submit(self._split, True),
            "split-run": lambda action_state: self._submit(self._split, False),
            "split-clear": self._on_clear_split,
            "undo": lambda action_state: self._submit(self._undo_or_redo, "undo"),
            "redo": lambda action_state: self._submit(self._undo_or_redo, "redo"),
            "neuron-info": lambda action_state: self._on_neuron(action_state, self._neuron_info),
            "next-status": lambda action_state: self._on_neuron(action_state, self._next_status),
            "review-next": lambda action_state: self._submit(self._review_next),
            "review-accept": lambda action_state: self._submit(self._review_answer, "accept"),
            "review-reject": lambda action_state: self._submit(self._review_answer, "reject"),
            "review-skip": lambda action_state: self._submit(self._review_answer, "skip"),
        }
        for name, handler in handlers.items():
            self.viewer.actions.add(name, handler)

    def show_agglomeration(self, groups: list[list[int]], edit_id: int,
                           shared: "neuroglancer.EquivalenceMap | None" = None) -> None:
        """Replace the segmentation's equivalences (called after every edit, from any thread).

        `shared`: the same groups already built into an EquivalenceMap, which every viewer without a
        split preview can take as it is (building one costs ~5x assigning it; nobody mutates it).
        """
        with self._show_lock:
            with self._lock:
                preview = self.preview_groups
            equivalences = _with_preview(groups, preview) if preview else shared if shared is not None else groups
            with self.viewer.txn() as s:
                s.layers[SEGMENTATION_LAYER].equivalences = equivalences
            self.shown_edit_id = edit_id

    def set_status(self, text: str, key: str = STATUS_KEY) -> None:
        with self.viewer.config_state.txn() as s:
            s.status_messages[key] = text

    def _track_selection(self) -> None:
        layer = self.viewer.state.layers[SEGMENTATION_LAYER]
        current = [int(segment) for segment in layer.segments]
        with self._lock:
            kept = [segment for segment in self._selection_order if segment in current]
            self._selection_order = kept + [segment for segment in current if segment not in kept]

    def last_selected(self, count: int) -> list[int]:
        with self._lock:
            return self._selection_order[-count:]

    # ------------------------------------------------------------------ actions

    def _submit(self, job: Callable, *args) -> None:
        """Run an edit on a worker thread; its outcome (or refusal) goes to the status line."""
        def run() -> None:
            try:
                message = job(*args)
            except ConnectomeError as exc:
                message = f"refused: {exc}"
            except Exception as exc:  # the viewer must stay usable whatever the store does
                LOG.exception("%s's viewer action failed", self.caller.name)
                message = f"failed: {type(exc).__name__}: {exc}"
            self.set_status(f"{self.caller.name}: {message}")

        self.server.executor.submit(run)

    def _on_merge(self, action_state) -> None:
        selected = self.last_selected(2)
        if len(selected) < 2:
            self.set_status(f"{self.caller.name}: select two segments (double-click) before merging")
            return
        self._submit(self._merge, selected[0], selected[1])

    def _merge(self, supervoxel_a: int, supervoxel_b: int) -> str:
        result = self.server.edit_merge(self.caller, supervoxel_a, supervoxel_b, seen_edit_id=self.shown_edit_id).result()
        return f"merged {supervoxel_a} and {supervoxel_b} (edit {result.edit_id})"

    def _on_mark(self, action_state, marks: list[int], side: str) -> None:
        supervoxel = selected_supervoxel(action_state)
        if supervoxel is None:
            self.set_status(f"{self.caller.name}: no segment under the mouse to mark as split {side}")
            return
        with self._lock:
            if supervoxel not in marks:
                marks.append(supervoxel)
        self.set_status(f"{self.caller.name}: split sources {self.split_sources}, sinks {self.split_sinks}; p previews, k splits, c clears")

    def _on_clear_split(self, action_state) -> None:
        with self._lock:
            self.split_sources.clear()
            self.split_sinks.clear()
            self.preview_groups = None
        self.server.refresh_viewer(self)
        self.set_status(f"{self.caller.name}: split marks cleared")

    def _split(self, preview: bool) -> str:
        with self._lock:
            sources, sinks = list(self.split_sources), list(self.split_sinks)
        if not sources or not sinks:
            return "mark at least one split source (q) and one sink (w) first"
        result = self.server.edit_split(self.caller, sources, sinks, preview=preview, seen_edit_id=self.shown_edit_id).result()
        with self._lock:
            self.preview_groups = [list(group) for group in result.groups] if preview else None
            if not preview:
                self.split_sources.clear()
                self.split_sinks.clear()
        if preview:
            self.server.refresh_viewer(self)
            return f"split preview: {len(result.removed_edges)} edges would be cut into {len(result.groups)} pieces; k splits, c cancels"
        return f"split into {len(result.resulting_roots)} neurons (edit {result.edit_id})"

    def _on_neuron(self, action_state, job: Callable[[int], str]) -> None:
        supervoxel = selected_supervoxel(action_state)
        if supervoxel is None:
            self.set_status(f"{self.caller.name}: no segment under the mouse")
            return
        self._submit(job, supervoxel)

    def _neuron_info(self, supervoxel: int) -> str:
        """Root id, fields and notes of the neuron holding `supervoxel`, flagged where set on an earlier version."""
        root = self.server.known_roots([supervoxel])[supervoxel]
        found = store.annotations(self.server.store, root=root)
        parts = [f"neuron {root}"]
        for item in found:
            flag = " (set before the last change)" if item.earlier_version else ""
            parts.append(f"{item.kind} {item.value!r} by {item.user}{flag}")
        if not found:
            parts.append("no status, type, name or notes yet")
        return "; ".join(parts + _top_partners(store.synapses_of_root(self.server.store, root), root))

    def _next_status(self, supervoxel: int) -> str:
        statuses = list(self.server.statuses)
        root = self.server.known_roots([supervoxel])[supervoxel]
        current = [a.value for a in store.annotations(self.server.store, root=root, kinds=["status"])]
        following = statuses[(statuses.index(current[-1]) + 1) % len(statuses)] if current and current[-1] in statuses \
            else statuses[0]
        outcome = self.server.edit_as(self.caller, store.set_neuron_field, supervoxel=supervoxel, kind="status",
                                      value=following, statuses=self.server.statuses).result()
        return f"neuron {root} status {following!r} (edit {outcome.edit_id})"

    def _review_next(self) -> str:
        """Lease the next merge candidate and show it: camera at it, the two supervoxels selected."""
        task = self.server.edit_as(self.caller, store.next_task).result()
        with self._lock:
            self.review_task = task
        if task is None:
            return "the merge-review queue is empty ('connectome review build' fills it)"
        resolution_xyz = self.server.image_geometry()[0]
        with self.viewer.txn() as s:
            s.position = [v / r for v, r in zip(reversed(task.position_nm), resolution_xyz)]
            s.layers[SEGMENTATION_LAYER].segments = list(task.supervoxels)
        a, b = task.supervoxels
        return f"task {task.id}: are {a} and {b} one neuron? alt+a accept (merge), alt+x reject, alt+s skip"

    def _review_answer(self, answer: str) -> str:
        with self._lock:
            task = self.review_task
        if task is None:
            return "no review task shown: alt+r asks for the next one"
        edit_id = self.server.edit_as(self.caller, store.answer_task, task_id=task.id, answer=answer).result()
        with self._lock:
            self.review_task = None
        done = {"accept": f"merged (edit {edit_id})", "reject": "rejected", "skip": "skipped"}[answer]
        return f"task {task.id} {done}; alt+r for the next"

    def _undo_or_redo(self, operation: str) -> str:
        target_edit_id, result = self.server.edit_undo_or_redo(self.caller, operation).result()
        return f"{operation} of edit {target_edit_id} (edit {result.edit_id})"


TOP_PARTNERS = 3


def _top_partners(synapses, root: int) -> list[str]:
    """'outputs to R (n synapses), ...' and 'inputs from ...': the neuron's strongest partners."""
    parts = []
    for label, mine, theirs in (("outputs to", "pre_pt_root_id", "post_pt_root_id"),
                                ("inputs from", "post_pt_root_id", "pre_pt_root_id")):
        counts = synapses[synapses[mine] == root][theirs].value_counts().head(TOP_PARTNERS)
        if len(counts):
            parts.append(f"{label} " + ", ".join(f"{partner} ({count})" for partner, count in counts.items()))
    return parts


def _with_preview(groups: list[list[int]], preview: list[list[int]]) -> list[list[int]]:
    """The agglomeration with the previewed neuron drawn as the pieces the split would leave."""
    previewed = {supervoxel for group in preview for supervoxel in group}
    kept = [group for group in groups if not previewed.intersection(group)]
    return kept + [group for group in preview if len(group) > 1]
