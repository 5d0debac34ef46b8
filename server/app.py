"""The proofreading server: Neuroglancer's own tornado server, one viewer per user, our API and data routes.

    /login?token=T        sets the user's cookie, redirects to their viewer /v/<viewer-id>/
    /v/<viewer-id>/...    Neuroglancer (bundled client; only its owner's cookie opens it)
    /data/<layer>/...     the workspace's precomputed layers (read-only, confined to W/layers)
    /api/...              the HTTP API, documented at /api/openapi.json

    /token, /entity_token, /graph/...   Neuroglancer's segmentation-graph protocol (server/neuron_graph.py)

The store is the source of truth. Viewers learn the supervoxels of the neurons they display over
the graph protocol's websocket, never the whole agglomeration. A background thread polls the
store's latest edit id and, when it changes (an edit here, through the API, or by another
process), tells each watcher whose neuron changed, and puts the pieces of a split neuron on
screen in every viewer that showed it.
"""
from __future__ import annotations

import inspect
import ipaddress
import logging
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import neuroglancer
import neuroglancer.server as ng_server
import tornado.web

from db import store
from server.api import api_routes
from server.auth import Authenticator, Caller, request_token
from server.data_files import DATA_ROUTE, LayerFileHandler
from server.edit_queue import EditQueue
from server.guard import DEFAULT_MAX_BODY_BYTES, MIB, GuardedHandler
from server.neuron_graph import NeuronGraph, graph_routes, root_of_segment
from server.synapse_source import SYNAPSE_ROUTE, SynapseAnnotationHandler, SynapseSource
from server.viewers import EDITS_STATUS_KEY, POST_SYNAPSE_LAYER, PRE_SYNAPSE_LAYER, SYNAPSE_RADIUS_NM, UserViewer
from volumes.external_layers import ExternalLayer, external_layers
from volumes.errors import ForbiddenError, InputError, RefusedError, UnauthorizedError
from volumes.workspace import Workspace

LOG = logging.getLogger(__name__)
POLL_INTERVAL_S = 0.1
# Pushing the agglomeration to every viewer costs each viewer a state rebuild: under a stream of
# edits, push the latest at most this often (still well within the 1 s a proofreader waits).
MIN_PUSH_INTERVAL_S = 0.25
STORE_THREADS = 8
UNDO_SEARCH_DEPTH = 1000


def check_bind_address(host: str, port: int) -> None:
    """Refuse a port outside 0-65535 (0: any free port); warn when other machines can reach the server.

    Tokens and cookies travel in clear over plain HTTP, so a team on a network puts a TLS proxy in front.
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise InputError(f"port must be from 1 to 65535 (or 0 for any free port), not {port}")
    if not is_loopback(host):
        print(f"connectome serve: warning: listening on {host}, reachable from other machines over plain HTTP; "
              "user tokens travel in clear: put a TLS proxy in front (see README, Security)", file=sys.stderr, flush=True)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServedLayers:
    image: str
    segmentation: str


def choose_layers(workspace: Workspace, image: str | None = None, segmentation: str | None = None) -> ServedLayers:
    """The image and segmentation layers to show: the named ones, else 'image'/'segmentation', else the first of each type."""
    by_type: dict[str, list[str]] = {}
    for name in workspace.layer_names():
        layer_type = workspace.layer_info(name).get("type")
        by_type.setdefault(layer_type, []).append(name)

    def pick(requested: str | None, layer_type: str) -> str:
        if requested:
            workspace.require_layer(requested)
            return requested
        candidates = by_type.get(layer_type, [])
        if not candidates:
            raise InputError(f"workspace {workspace.root} has no {layer_type} layer; import one with 'connectome import'")
        return layer_type if layer_type in candidates else candidates[0]

    return ServedLayers(image=pick(image, "image"), segmentation=pick(segmentation, "segmentation"))


class ProofreadingServer:
    """Owns the Neuroglancer server of this process; create one, `close()` it when done."""

    def __init__(self, workspace: Workspace, host: str = "127.0.0.1", port: int = 8080,
                 image_layer: str | None = None, segmentation_layer: str | None = None):

        self.workspace = workspace
        self.statuses = workspace.statuses  # the neuron status vocabulary, checked before anything runs
        self.layers = choose_layers(workspace, image_layer, segmentation_layer)
        self._external = external_layers(workspace)
        self.store = store.open_store(workspace, create=False)
        self.executor = ThreadPoolExecutor(max_workers=STORE_THREADS, thread_name_prefix="connectome-store")
        self._wake = threading.Event()  # set after an edit here, so the push does not wait for the next poll
        # Edits to the store run one at a time anyway (one writer); one thread takes them in arrival
        # order (threads racing for the write lock left some callers behind many later ones) and
        # commits those that queued up together.
        self.edits = EditQueue(self.store, after_commit=self._wake.set)
        self.auth = Authenticator(self.store, self.executor)
        self._viewers: dict[str, UserViewer] = {}  # by user name
        self._viewers_lock = threading.Lock()
        self._follow_lock = threading.Lock()
        self.edit_id = store.latest_edit_id(self.store)  # the latest edit the viewers were told about

        if ng_server.is_server_running():
            raise RefusedError("a Neuroglancer server already runs in this process")
        check_bind_address(host, port)
        neuroglancer.set_server_bind_address(host, port)
        try:
            ng_server.start()
        except OSError as exc:
            raise InputError(f"cannot listen on {host}:{port} ({exc.strerror}); choose another --port") from None
        self._ng = ng_server.global_server
        # Neuroglancer's server would buffer request bodies of up to 1 GiB before any handler runs;
        # routes that take a body raise this per request, after checking the caller (server/guard.py).
        self._ng.http_server.conn_params.max_body_size = DEFAULT_MAX_BODY_BYTES
        self.port = self._ng.port
        self.url = self._ng.server_url  # for 0.0.0.0, this machine's name, so other machines can fetch the layers
        self.graph = NeuronGraph(self.store, self.executor, entity=self.layers.segmentation,
                                 datasource_url=self.layer_source(self.layers.segmentation))
        router = self._ng.app.wildcard_router
        resolution_xyz, size_xyz, offset_xyz = self.image_geometry()
        self.synapses = SynapseSource(self.store, SYNAPSE_RADIUS_NM, (np.multiply(offset_xyz, resolution_xyz),
                                                                       np.multiply(np.add(offset_xyz, size_xyz), resolution_xyz)))
        router.add_rules(api_routes(self) + graph_routes(self.graph, self.auth, self) +
                         [(DATA_ROUTE, LayerFileHandler, dict(layers_dir=self.workspace.layers_dir, authenticator=self.auth,
                                                              external_dirs=self._external_dirs())),
                          (SYNAPSE_ROUTE, SynapseAnnotationHandler, dict(source=self.synapses, authenticator=self.auth,
                                                                         executor=self.executor))])
        router.rules[0:0] = [router.process_rule(tornado.web.url(*rule)) for rule in _viewer_guard_rules(self)]

        self._stopping = threading.Event()
        self._poller = threading.Thread(target=self._poll_store, name="connectome-store-poll", daemon=True)
        self._poller.start()

    def close(self) -> None:
        self._stopping.set()
        self._wake.set()
        self._poller.join(timeout=5)
        ng_server.stop()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.edits.close()
        self.store.close()

    def __enter__(self) -> "ProofreadingServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ viewers

    def layer_source(self, layer: str) -> str:
        return f"precomputed://{self.url}/data/{layer}"

    def external_layers(self) -> list[ExternalLayer]:
        """Layers registered with `connectome layers add`, as of the server's start."""
        return list(self._external.values())

    def _external_dirs(self) -> dict[str, Path]:
        return {name: layer.local_dir for name, layer in self._external.items() if layer.local_dir is not None}

    def segmentation_source(self) -> str:
        """The neurons: the supervoxel segmentation with the store's agglomeration, over the graph protocol."""
        return f"nggraph://{self.url}/{self.layers.segmentation}"

    def image_geometry(self) -> tuple[list[float], list[int], list[int]]:
        """Voxel size (nm), size and voxel offset of the image layer, x, y, z as Neuroglancer orders them."""
        info = self.workspace.layer_info(self.layers.image)
        scale = info["scales"][0]
        return [float(r) for r in scale["resolution"]], [int(s) for s in scale["size"]], [int(o) for o in scale.get("voxel_offset", [0, 0, 0])]

    def viewer_for(self, caller: Caller) -> UserViewer:
        """The caller's viewer, created on first use."""
        with self._viewers_lock:
            user_viewer = self._viewers.get(caller.name)
            if user_viewer is None:
                user_viewer = UserViewer(self, caller)
                user_viewer.shown_edit_id = self.edit_id
                self._viewers[caller.name] = user_viewer
        return user_viewer

    def viewer_owner(self, viewer_id: str) -> str | None:
        with self._viewers_lock:
            for name, user_viewer in self._viewers.items():
                if user_viewer.viewer_id == viewer_id:
                    return name
        return None

    def open_viewers(self) -> list[UserViewer]:
        with self._viewers_lock:
            return list(self._viewers.values())

    def synapse_layers(self) -> list[tuple[str, str, str]]:
        """(layer name, colour, source URL) for the synapses drawn at their pre- and postsynaptic points;
        empty without synapses. Served from the store (server/synapse_source.py), nothing per synapse in the state."""
        if not self.synapses.has_synapses():
            return []
        return [(PRE_SYNAPSE_LAYER, "#ff4040", f"precomputed://{self.url}/synapses/pre"),
                (POST_SYNAPSE_LAYER, "#40a0ff", f"precomputed://{self.url}/synapses/post")]

    # ------------------------------------------------------------------ following the edits

    def follow_edits(self) -> None:
        """After edits (anyone's, any process's): each watched neuron that changed is sent again, and each
        viewer that showed a neuron an edit retired shows what holds its supervoxels now (all pieces of a split)."""
        with self._follow_lock:
            latest = store.latest_edit_id(self.store)
            previous = self.edit_id
            if latest == previous:
                return
            self.graph.follow(latest)
            viewers = self.open_viewers()
            shown = {root for user_viewer in viewers for root in user_viewer.shown_neurons()}
            retired = store.retired_among(self.store, shown) if shown else set()
            replacements = {root: store.successors(self.store, root) for root in retired}
            self.edit_id = latest
        for user_viewer in viewers:
            user_viewer.follow_edits(replacements, latest)
        if viewers:
            message = self._describe_edits(previous, latest)
            for user_viewer in viewers:
                user_viewer.set_status(message, key=EDITS_STATUS_KEY)

    def _describe_edits(self, after_edit_id: int, latest_edit_id: int) -> str:
        """The status line after a push: the latest edit (reading only that one keeps pushes cheap)."""
        records = store.history(self.store, since_edit=latest_edit_id - 1, limit=1)
        if not records:
            return "the agglomeration changed"
        last = records[-1]
        what = {"merge": "merged", "split": "split"}.get(last.operation, f"{last.operation} of edit {last.parent_id}")
        roots = ", ".join(str(root) for root in last.resulting_roots) or "none"
        more = f" (after edits since {after_edit_id})" if last.id > after_edit_id + 1 else ""
        return f"edit {last.id} by {last.user}: {what}, now neuron(s) {roots}{more}"

    def _poll_store(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(POLL_INTERVAL_S)
            self._wake.clear()
            started = time.monotonic()
            try:
                self.follow_edits()
            except Exception as exc:  # a database hiccup must not stop live updates for good
                LOG.warning("store poll failed, retrying in 1 s: %s: %s", type(exc).__name__, exc)
                time.sleep(1.0)
            self._stopping.wait(max(0.0, MIN_PUSH_INTERVAL_S - (time.monotonic() - started)))

    # ------------------------------------------------------------------ edits (each returns a Future of its result)

    def known_roots(self, supervoxels: list[int], at=None) -> dict[int, int]:
        """Each supervoxel's root now or as of `at`; the store raises NotFoundError for an unknown one."""
        return store.roots_of(self.store, supervoxels, at=at)

    def _edit(self, supervoxels: list[int], seen_edit_id: int | None, seen_roots: list[int] | None, apply) -> Future:
        """Queue apply(session, seen_roots); a viewer's edit is judged against the roots as of the edit it showed.

        The store checks the caller's role and raises each refusal with its own HTTP status.
        A split preview queues too: it then sees every edit before it, and a viewer's worker
        thread waiting for it never waits on another worker thread.
        """
        def edit(session):
            seen = seen_roots
            if seen is None and seen_edit_id is not None:
                seen = sorted(set(self.known_roots(supervoxels, at=seen_edit_id).values()))
            return apply(session, seen)

        return self.edits.submit(edit)

    def edit_merge(self, caller: Caller, supervoxel_a: int, supervoxel_b: int, seen_roots: list[int] | None = None,
                   seen_edit_id: int | None = None) -> "Future[store.EditResult]":
        """Merge; conflicts are judged against `seen_roots`, or the roots as of the edit the viewer showed."""
        return self._edit([supervoxel_a, supervoxel_b], seen_edit_id, seen_roots,
                          lambda session, seen: store.merge(self.store, supervoxel_a, supervoxel_b, user=caller.name,
                                                            seen_roots=seen, session=session))

    def merge_segments(self, caller: Caller, segment_a: int, segment_b: int,
                       seen_edit_id: int | None = None) -> "Future[store.EditResult]":
        """Merge two segments a viewer selected: neurons (by their viewer id) or supervoxels.

        The link joins the supervoxels the user pointed at (double-clicked), else the two that touch
        most; a neuron id is also the version the user saw, so a neuron changed since is a conflict.
        """
        def edit(session):
            pair, seen = [], []
            for segment in (segment_a, segment_b):
                root = root_of_segment(segment)
                if root is None:
                    pair.append(segment)
                    if seen_edit_id is not None:
                        seen.append(self.known_roots([segment], at=seen_edit_id)[segment])
                    continue
                seen.append(root)
                pair.append(self.graph.pointed_supervoxel(caller.name, root))
            if None in pair:
                roots = [root_of_segment(s) or self.known_roots([s])[s] for s in (segment_a, segment_b)]
                if roots[0] == roots[1]:
                    raise RefusedError(f"both segments are already neuron {roots[0]}")
                contact = store.strongest_contact(self.store, roots[0], roots[1])
                if contact is None:
                    raise RefusedError(f"neurons {roots[0]} and {roots[1]} do not touch: double-click each where they should join")
                pair = list(contact)
            return store.merge(self.store, pair[0], pair[1], user=caller.name,
                               seen_roots=seen if len(seen) == 2 else None, session=session)

        return self.edits.submit(edit)

    def edit_split(self, caller: Caller, sources: list[int], sinks: list[int], preview: bool = False,
                   seen_roots: list[int] | None = None, seen_edit_id: int | None = None) -> "Future[store.EditResult]":
        return self._edit(sources + sinks, seen_edit_id, seen_roots,
                          lambda session, seen: store.split(self.store, sources=sources, sinks=sinks, user=caller.name,
                                                            preview=preview, seen_roots=seen, session=session))

    def edit_as(self, caller: Caller, function, **arguments) -> Future:
        """Queue `function(store, user=caller, session=..., **arguments)` behind the other edits (group commit):
        any store write that acts for a user (annotations, review answers); the Future gives its outcome."""
        return self.edits.submit(lambda session: function(self.store, user=caller.name, session=session, **arguments))

    def edit_undo_or_redo(self, caller: Caller, operation: str,
                          edit_id: int | None = None) -> "Future[tuple[int, store.EditResult]]":
        """Undo or redo `edit_id`, or the latest edit the caller may undo / redo; the Future gives (target edit, result).

        The target is looked up inside the edit's transaction, so it sees the edits queued before it;
        the store refuses an edit that is not a merge or split, or another user's for a proofreader.
        """

        def edit(session):
            target_id = edit_id
            if target_id is None:
                latest = store.latest_edit_id(self.store, session=session)
                target_id = _latest_target(store.history(self.store, since_edit=max(0, latest - UNDO_SEARCH_DEPTH),
                                                         session=session), operation, caller).id
            apply = store.undo if operation == "undo" else store.redo
            return target_id, apply(self.store, target_id, user=caller.name, session=session)

        return self.edits.submit(edit)


def _latest_target(records: list, operation: str, caller: Caller):
    """The caller's own latest edit to undo (latest one in effect) or redo (latest one undone).

    Own edits only, admins too: a key press must never silently reverse a colleague's work;
    an admin undoes someone else's edit by its id.
    """
    by_id = {record.id: record for record in records}
    wanted_undone = operation == "redo"
    for record in reversed(records):
        original = record if record.operation in ("merge", "split", "annotate") else by_id.get(record.parent_id)
        if original is None or original.undone != wanted_undone:
            continue
        if original.user == caller.name:
            return original
    raise RefusedError(f"there is no edit for {caller.name} to {operation}")


def _viewer_guard_rules(server: ProofreadingServer) -> list[tuple]:
    """Neuroglancer's per-viewer routes, each opened only by the viewer's owner (cookie or bearer token)."""
    guarded = [
        (ng_server.STATIC_PATH_REGEX, ng_server.StaticPathHandler),
        (ng_server.ACTION_PATH_REGEX, ng_server.ActionHandler),
        (ng_server.EVENTS_PATH_REGEX, ng_server.EventStreamHandler),
        (ng_server.SET_STATE_PATH_REGEX, ng_server.SetStateHandler),
        (ng_server.CREDENTIALS_PATH_REGEX, ng_server.CredentialsHandler),
        (ng_server.VOLUME_INFO_RESPONSE_PATH_REGEX, ng_server.VolumeInfoResponseHandler),
        (ng_server.VOLUME_CHUNK_RESPONSE_PATH_REGEX, ng_server.VolumeChunkResponseHandler),
    ]
    return [(regex, _owner_only(handler, server), dict(server=server._ng)) for regex, handler in guarded]


# Neuroglancer's viewer state travels in these posts (and today it holds the agglomeration's
# equivalences), so they get a cap of their own; only the viewer's owner may send one.
VIEWER_POST_MAX_BODY_BYTES = 64 * MIB


def _owner_only(handler_class: type, server: ProofreadingServer) -> type:
    class OwnerOnly(GuardedHandler, handler_class):
        max_body_bytes = VIEWER_POST_MAX_BODY_BYTES
        authenticator = server.auth

        async def prepare(self):
            owner = server.viewer_owner(self.path_kwargs.get("viewer_token", ""))
            if owner is None:
                raise tornado.web.HTTPError(404)
            if request_token(self) is None:
                raise UnauthorizedError("open your login link /login?token=... first")
            await super().prepare()  # size, token, origin: all before the body is read
            if self.caller_.name != owner:
                raise ForbiddenError("this viewer belongs to another user")

        async def post(self, *args, **kwargs):
            # Neuroglancer's handlers read request.body, which a streamed request fills only here.
            self.request.body = self.body_bytes()
            try:
                result = super().post(*args, **kwargs)
                if inspect.isawaitable(result):
                    await result
            except (ValueError, RecursionError):  # json.loads of a malformed or too deeply nested body
                raise InputError("the request body must be JSON of a Neuroglancer message") from None

    OwnerOnly.__name__ = f"OwnerOnly{handler_class.__name__}"
    return OwnerOnly
