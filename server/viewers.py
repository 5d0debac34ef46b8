"""One Neuroglancer viewer per user: their own camera and selection, the shared agglomeration, edit actions.

Key and mouse bindings (chosen not to clash with Neuroglancer's defaults):

    m                 merge the two neurons selected last (double-click selects; the link joins the
                      supervoxels double-clicked, else where the neurons touch most)
    q / alt+click     mark the supervoxel under the mouse as a split source
    w / alt+shift+click  mark it as a split sink
    p                 preview the split (a "split preview" layer draws the pieces it would make)
    k                 run the split
    c                 clear split marks and preview
    ctrl+z / ctrl+y   undo / redo (this user's own latest edit; an admin undoes others' by id)
    n                 show the neuron under the mouse: root id, status, cell type, name, notes
    shift+n           set that neuron's status to the next one of the vocabulary
    alt+r             next merge-review task: the view moves to it, its two supervoxels selected
    alt+a / alt+x / alt+s   accept (merge) / reject / skip the task shown

The status line at the bottom says what happened, who did it, and why an edit was refused; it
names neurons by root id (the viewer shows a neuron as 2**63 + its root id, see server/neuron_graph.py).
Split marks are drawn as points (sources red, sinks blue) in this viewer only.
Edits themselves run on the server's worker threads, never on the tornado thread.
"""
from __future__ import annotations

import logging
import secrets
import threading
from collections import Counter
from typing import Callable

import neuroglancer

from db import store
from server.auth import Caller
from server.neuron_graph import root_of_segment, viewer_segment_id
from server.services import ServerServices
from volumes.errors import ConnectomeError

LOG = logging.getLogger(__name__)


IMAGE_LAYER = "image"
SEGMENTATION_LAYER = "segmentation"
PREVIEW_LAYER = "split preview"
MARKS_LAYER = "split marks"
PRE_SYNAPSE_LAYER = "pre-synapses"
POST_SYNAPSE_LAYER = "post-synapses"
STATUS_KEY = "proofreading"  # this user's own actions and refusals
EDITS_STATUS_KEY = "edits"  # the latest edit of the dataset, by anyone
SYNAPSE_RADIUS_NM = 40.0  # the contact sphere drawn at each synaptic point
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
        self._mark_points: list[tuple[str, int, list[float]]] = []  # (source/sink, supervoxel, x, y, z voxels)
        self.preview_root: int | None = None  # the neuron a split preview shows as pieces
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
            s.layers[SEGMENTATION_LAYER] = neuroglancer.SegmentationLayer(source=self.server.segmentation_source())
            for external in self.server.external_layers():  # registered with `connectome layers add`
                layer_type = neuroglancer.SegmentationLayer if external.kind == "segmentation" else neuroglancer.ImageLayer
                s.layers[external.name] = layer_type(source=external.viewer_source(self.server.url))
            for name, color, source in self.server.synapse_layers():  # a selected neuron's synapses, drawn from the server
                s.layers[name] = neuroglancer.AnnotationLayer(
                    source=source, annotation_color=color,
                    linked_segmentation_layer={"pre_segment": SEGMENTATION_LAYER, "post_segment": SEGMENTATION_LAYER},
                    filter_by_segmentation=["pre_segment", "post_segment"])
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

    def shown_neurons(self) -> list[int]:
        """Root ids of the neurons this viewer has selected."""
        segments = self.viewer.state.layers[SEGMENTATION_LAYER].segments
        return [root for root in (root_of_segment(int(segment)) for segment in segments) if root is not None]

    def follow_edits(self, replacements: dict[int, list[int]], edit_id: int) -> None:
        """Show, for each selected neuron an edit retired, every neuron now holding its supervoxels.

        The graph protocol renames a watched neuron to one successor; the others (the pieces of a
        split) are selected here, so no piece disappears from any viewer that showed the neuron.
        """
        if replacements:
            with self._show_lock, self.viewer.txn() as s:
                layer = s.layers[SEGMENTATION_LAYER]
                current = [int(segment) for segment in layer.segments]
                wanted = _replaced(current, replacements)
                if wanted != current:
                    layer.segments = wanted
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

    def _merge(self, segment_a: int, segment_b: int) -> str:
        result = self.server.merge_segments(self.caller, segment_a, segment_b, seen_edit_id=self.shown_edit_id).result()
        self.follow_edits({root: result.resulting_roots for root in result.affected_roots}, self.shown_edit_id)
        return f"merged neurons {' and '.join(map(str, result.affected_roots))} into neuron {result.resulting_roots[0]} (edit {result.edit_id})"

    def _on_mark(self, action_state, marks: list[int], side: str) -> None:
        supervoxel = selected_supervoxel(action_state)
        if supervoxel is None:
            self.set_status(f"{self.caller.name}: no segment under the mouse to mark as split {side}")
            return
        position = [float(v) for v in action_state.mouse_voxel_coordinates] \
            if getattr(action_state, "mouse_voxel_coordinates", None) is not None else None
        with self._lock:
            if supervoxel not in marks:
                marks.append(supervoxel)
                if position is not None:
                    self._mark_points.append((side, supervoxel, position))
        self._draw_marks()
        self.set_status(f"{self.caller.name}: split sources {self.split_sources}, sinks {self.split_sinks}; p previews, k splits, c clears")

    def _draw_marks(self) -> None:
        """The split marks as points in a layer of this viewer's own (sources red, sinks blue)."""
        with self._lock:
            points = list(self._mark_points)
        with self.viewer.txn() as s:
            if not points:
                if MARKS_LAYER in s.layers:
                    del s.layers[MARKS_LAYER]
                return
            s.layers[MARKS_LAYER] = neuroglancer.LocalAnnotationLayer(
                dimensions=s.dimensions, shader=MARKS_SHADER,
                annotation_properties=[neuroglancer.AnnotationPropertySpec(id="sink", type="uint8", default=0)],
                annotations=[neuroglancer.PointAnnotation(id=f"{side}-{supervoxel}", point=position,
                                                          props=[int(side == "sink")])
                             for side, supervoxel, position in points])

    def _on_clear_split(self, action_state) -> None:
        self._clear_marks()
        self.set_status(f"{self.caller.name}: split marks cleared")

    def _clear_marks(self) -> None:
        """Forget this viewer's split marks and preview, and stop drawing them."""
        with self._lock:
            self.split_sources.clear()
            self.split_sinks.clear()
            self._mark_points.clear()
        self._end_preview()
        self._draw_marks()

    def _split(self, preview: bool) -> str:
        with self._lock:
            sources, sinks = list(self.split_sources), list(self.split_sinks)
        if not sources or not sinks:
            return "mark at least one split source (q) and one sink (w) first"
        result = self.server.edit_split(self.caller, sources, sinks, preview=preview, seen_edit_id=self.shown_edit_id).result()
        if preview:
            self._show_preview(result.affected_roots[0], result.groups)
            return f"split preview: {len(result.removed_edges)} edges would be cut into {len(result.groups)} pieces; k splits, c cancels"
        self._clear_marks()
        self.follow_edits({root: result.resulting_roots for root in result.affected_roots}, self.shown_edit_id)
        return f"split neuron {result.affected_roots[0]} into neurons {', '.join(map(str, result.resulting_roots))} (edit {result.edit_id})"

    def _show_preview(self, root: int, pieces: list[list[int]]) -> None:
        """Draw the pieces a split would make in a layer of their own; the neuron itself is hidden meanwhile."""
        with self._show_lock, self.viewer.txn() as s:
            s.layers[PREVIEW_LAYER] = neuroglancer.SegmentationLayer(
                source=self.server.layer_source(self.server.layers.segmentation),
                equivalences=[list(piece) for piece in pieces], segments=[min(piece) for piece in pieces])
            layer = s.layers[SEGMENTATION_LAYER]
            layer.segments = [segment for segment in map(int, layer.segments) if segment != viewer_segment_id(root)]
        with self._lock:
            self.preview_root = root

    def _end_preview(self) -> None:
        with self._lock:
            root, self.preview_root = self.preview_root, None
        with self._show_lock, self.viewer.txn() as s:
            if PREVIEW_LAYER in s.layers:
                del s.layers[PREVIEW_LAYER]
            if root is not None:
                layer = s.layers[SEGMENTATION_LAYER]
                layer.segments = sorted(set(map(int, layer.segments)) | {viewer_segment_id(root)})

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


def _replaced(segments: list[int], replacements: dict[int, list[int]]) -> list[int]:
    """Selected segment ids with retired neurons replaced by what holds their supervoxels now (viewer ids, no repeats).

    A neuron whose one successor no other selected segment leads to (a merge with a neuron not on
    screen) is left alone: the graph protocol renames it in the client, and a state pushed for it
    would make the client ask again for every neuron it shows. A split's pieces, and neurons that
    became one (a merge of two selected, an undo of a split), are replaced here.
    """
    single = Counter(replacements[root][0] for root in map(root_of_segment, segments)
                     if len(replacements.get(root, [])) == 1)
    wanted: list[int] = []
    for segment in segments:
        root = root_of_segment(segment)
        pieces = replacements.get(root, [])
        renamed_by_client = (len(pieces) == 1 and single[pieces[0]] == 1
                             and viewer_segment_id(pieces[0]) not in segments)
        for kept in ([segment] if not pieces or renamed_by_client else [viewer_segment_id(r) for r in pieces]):
            if kept not in wanted:
                wanted.append(kept)
    return wanted


MARKS_SHADER = """
void main() {
  setColor(prop_sink() == 1u ? vec3(0.25, 0.6, 1.0) : vec3(1.0, 0.25, 0.25));
  setPointMarkerSize(12.0);
}
"""
