"""How viewers learn which supervoxels make each neuron: Neuroglancer's segmentation-graph protocol
("nggraph", src/datasource/nggraph in Neuroglancer's source), answered from the store.

Why this design (each alternative read in Neuroglancer's source):

* Equivalences in the viewer state (what we did before): Neuroglancer's Python server sends a
  viewer its *whole* state on every change, so each edit re-sent every neuron of several
  supervoxels to every viewer, and opening a viewer sent the whole dataset's agglomeration.
* Chunks remapped to root ids: a source's chunk cache can only be dropped whole (a new source
  URL, or `LocalVolume.invalidate`), so every edit would make every viewer refetch every chunk on
  screen, changed or not.
* graphene (CAVE's protocol): its client decodes chunk coordinates from the bits of supervoxel
  ids (PyChunkedGraph's id layout), which an imported or FFN segmentation does not have.
* nggraph: the segmentation chunks stay supervoxel labels (immutable, cached by the browser); for
  each neuron a viewer *displays*, Neuroglancer's client asks over one websocket which supervoxels
  it has and keeps the answer as equivalences in its memory, not in the state; the server answers
  again when that neuron changes (a merge renames it, a split leaves the watched piece). So a
  viewer is sent what it shows and what changed, never the dataset.

Protocol, as the client speaks it: `POST /token` (our login cookie) gives a session token;
`POST /entity_token {"entity": layer}` names the entity a graph; `POST /graph/config` gives the
supervoxel segmentation's URL; the websocket `/graph/watch/<session token>` takes
`{"watch": {"segment_id": id}}` (watch ids count from 0 per connection, in arrival order) and
`{"unwatch": {"watch_id": n}}`, and answers `{"watch_id": n, "state": "ok", "info": {...}}` or
`"state": "invalid"`; `POST /graph/mutate` merges or splits. Neuron ids in the viewer are the
root id with the top bit set (`2**63 + root`): the client takes ids without it for supervoxels.
The API, exports and our status line name neurons by the root id itself.

A client race to know of: the nggraph source loads its base segmentation once per page, with the
options of the layer that asked first; a state pushed to the viewer during that first load recreates
the layer, aborts the load, and leaves the source failed until the page reloads. So a viewer's state
is prepared before its page opens (viewer_for), and pushes after the first load are harmless.
"""
from __future__ import annotations

import asyncio
import json
import logging
import secrets
import threading
from collections import OrderedDict
from concurrent.futures import Executor
from dataclasses import dataclass

import tornado.web
import tornado.websocket

from db import store
from server.auth import Caller
from server.guard import GuardedHandler
from volumes.errors import ConnectomeError, InputError, NotFoundError

LOG = logging.getLogger(__name__)
GRAPH_BIT = 1 << 63
MAX_WATCH_MESSAGE_BYTES = 4096  # {"watch": {"segment_id": "..."}} is ~60 bytes
SUMMARY_CACHE_NEURONS = 256
MAX_JSON_SAFE_ID = 2**53  # larger ids travel as strings (JavaScript numbers are doubles)


def viewer_segment_id(root: int) -> int:
    """The id a viewer shows for a neuron."""
    return GRAPH_BIT | int(root)


def root_of_segment(segment: int) -> int | None:
    """The root id behind a viewer's neuron id; None for a supervoxel id."""
    return int(segment) & ~GRAPH_BIT if int(segment) & GRAPH_BIT else None


def parse_segment_id(value: object) -> int:
    """A uint64 segment id from the client (a decimal string or number)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InputError(f"a segment id is a decimal number, not {value!r}")
    text = str(value).strip()
    if not text.isdigit() or not 0 < int(text) < 2**64:
        raise InputError(f"a segment id is a positive 64-bit integer, not {value!r}")
    return int(text)


def _json_id(value: int) -> int | str:
    return value if value < MAX_JSON_SAFE_ID else str(value)


def neuron_info(summary: store.NeuronSummary) -> dict:
    """The protocol's description of one neuron. Each supervoxel's parent is the neuron's first one: the
    client's own split tool reads parents as a spanning forest; our splits are min cuts on the server."""
    members = [_json_id(sv) for sv in summary.supervoxels]
    z0, y0, x0, z1, y1, x1 = summary.bbox_zyx
    return {"id": str(viewer_segment_id(summary.root)), "base_segment_ids": members,
            "base_segment_parent_ids": [members[0]] * len(members) if members else [],
            "name": f"neuron {summary.root}", "tags": [], "num_voxels": summary.size_voxels,
            "bounds": [x0, y0, z0, x1, y1, z1], "last_log_id": str(summary.created_edit)}


@dataclass
class Watch:
    """One neuron a viewer displays: the root it was last told, and a supervoxel of it to follow edits by."""

    root: int
    anchor: int


class NeuronGraph:
    """Session tokens, watches and neuron answers; `follow()` after edits tells each watcher what changed."""

    def __init__(self, proofreading_store: store.Store, executor: Executor, entity: str, datasource_url: str):
        self.store = proofreading_store
        self.executor = executor
        self.entity = entity
        self.datasource_url = datasource_url
        self._lock = threading.Lock()
        self._sessions: dict[str, Caller] = {}
        self._watches: dict["WatchSocket", dict[int, Watch]] = {}
        self._next_watch_id: dict["WatchSocket", int] = {}
        self._summaries: OrderedDict[int, tuple[str, int]] = OrderedDict()  # root -> (encoded info, a member)
        self._pointed: dict[str, dict[int, int]] = {}  # user -> {root: the supervoxel their viewer asked about}
        self.followed_edit = store.latest_edit_id(proofreading_store)
        self.bytes_sent = 0  # websocket payload bytes, for the viewer benchmark

    # ------------------------------------------------------------------ sessions

    def issue_session(self, caller: Caller) -> str:
        token = secrets.token_hex(16)
        with self._lock:
            self._sessions[token] = caller
        return token

    def session_caller(self, token: str) -> Caller | None:
        with self._lock:
            return self._sessions.get(token)

    # ------------------------------------------------------------------ watches

    def connect(self, socket: "WatchSocket") -> None:
        with self._lock:
            self._watches[socket] = {}
            self._next_watch_id[socket] = 0

    def disconnect(self, socket: "WatchSocket") -> None:
        with self._lock:
            self._watches.pop(socket, None)
            self._next_watch_id.pop(socket, None)

    def watch(self, socket: "WatchSocket", segment: int) -> None:
        """Number the watch now (the client counts in send order), answer it on a worker thread."""
        with self._lock:
            watch_id = self._next_watch_id[socket]
            self._next_watch_id[socket] = watch_id + 1
        self.executor.submit(self._answer, socket, watch_id, segment)

    def unwatch(self, socket: "WatchSocket", watch_id: int) -> None:
        with self._lock:
            self._watches.get(socket, {}).pop(watch_id, None)

    def watched_roots(self) -> set[int]:
        with self._lock:
            return {watch.root for watches in self._watches.values() for watch in watches.values()}

    def pointed_supervoxel(self, user: str, root: int) -> int | None:
        """The supervoxel by which `user`'s viewer first asked about neuron `root` (where they double-clicked)."""
        with self._lock:
            return self._pointed.get(user, {}).get(int(root))

    def _answer(self, socket: "WatchSocket", watch_id: int, segment: int) -> None:
        started = self.followed_edit
        try:
            root = root_of_segment(segment)
            if root is None:  # a supervoxel the user selected: its neuron
                anchor = segment
                root = store.roots_of(self.store, [segment])[segment]
                with self._lock:
                    self._pointed.setdefault(socket.caller.name, {})[root] = segment
                info, _ = self._info(root)
            else:
                info, anchor = self._info(root)
                if store.retired_among(self.store, [root]):  # an old id (a restored state): its successor
                    root = store.roots_of(self.store, [anchor])[anchor]
                    info, _ = self._info(root)
        except NotFoundError:
            socket.send(json.dumps({"watch_id": watch_id, "state": "invalid"}))
            return
        except Exception:
            LOG.exception("answering a neuron watch failed")
            socket.send(json.dumps({"watch_id": watch_id, "state": "error"}))
            return
        with self._lock:
            watches = self._watches.get(socket)
            if watches is None:
                return
            watches[watch_id] = Watch(root, anchor)
        self._send_info(socket, watch_id, info)
        if self.followed_edit != started:  # edits were followed while this answer was made: check it again
            self._follow_watches({socket: {watch_id: Watch(root, anchor)}})

    def _info(self, root: int) -> tuple[str, int]:
        """(encoded info, a supervoxel of it) for a root, cached: a root's supervoxel set never changes."""
        with self._lock:
            cached = self._summaries.get(root)
            if cached is not None:
                self._summaries.move_to_end(root)
                return cached
        summary = store.neuron_summary(self.store, root)
        answer = json.dumps(neuron_info(summary), separators=(",", ":")), summary.supervoxels[0]
        with self._lock:
            self._summaries[root] = answer
            while len(self._summaries) > SUMMARY_CACHE_NEURONS:
                self._summaries.popitem(last=False)
        return answer

    def _send_info(self, socket: "WatchSocket", watch_id: int, info: str) -> None:
        message = f'{{"watch_id":{watch_id},"state":"ok","info":{info}}}'
        self.bytes_sent += len(message)
        socket.send(message)

    # ------------------------------------------------------------------ edits

    def follow(self, latest_edit: int) -> None:
        """After edits: every watch whose neuron an edit retired is told its supervoxel's neuron now."""
        self.followed_edit = latest_edit
        with self._lock:
            snapshot = {socket: dict(watches) for socket, watches in self._watches.items() if watches}
        self._follow_watches(snapshot)

    def _follow_watches(self, snapshot: dict["WatchSocket", dict[int, Watch]]) -> None:
        roots = {watch.root for watches in snapshot.values() for watch in watches.values()}
        if not roots:
            return
        retired = store.retired_among(self.store, roots)
        moved = [(socket, watch_id, watch) for socket, watches in snapshot.items()
                 for watch_id, watch in watches.items() if watch.root in retired]
        if not moved:
            return
        now = store.roots_of(self.store, [watch.anchor for _, _, watch in moved])
        for socket, watch_id, watch in moved:
            root = now[watch.anchor]
            with self._lock:
                current = self._watches.get(socket, {}).get(watch_id)
                if current is None:
                    continue
                current.root = root
            self._send_info(socket, watch_id, self._info(root)[0])


# ---------------------------------------------------------------------- handlers


class GraphHandler(GuardedHandler):
    """The protocol's HTTP routes: authenticated by the login cookie, same-origin writes (server/guard.py)."""

    max_body_bytes = 4096

    def initialize(self, graph: NeuronGraph, authenticator, edits=None):
        self.graph = graph
        self.authenticator = authenticator
        self.edits = edits

    def write_error_body(self, status_code: int, message: str | None) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": message or self._reason, "status": status_code}))

    def json_body(self) -> dict:
        try:
            body = json.loads(self.body_bytes() or b"{}")
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise InputError("the request body must be a JSON object") from None
        if not isinstance(body, dict):
            raise InputError("the request body must be a JSON object")
        return body


class SessionTokenHandler(GraphHandler):
    """`POST /token`: a token for this browser session's websocket (its URL carries it)."""

    def post(self) -> None:
        self.set_header("Content-Type", "text/plain")
        self.finish(self.graph.issue_session(self.caller_))


class EntityTokenHandler(GraphHandler):
    def post(self) -> None:
        entity = self.json_body().get("entity")
        if entity != self.graph.entity:
            raise NotFoundError(f"no graph {entity!r} here; this server's graph is {self.graph.entity!r}")
        token = self.request.headers.get("Authorization", "")
        if self.graph.session_caller(token) is None:
            token = self.graph.issue_session(self.caller_)
        self.finish({"token": token, "entity_type": "graph", "role": self.caller_.role})


class GraphConfigHandler(GraphHandler):
    def post(self) -> None:
        self.finish({"datasource_url": self.graph.datasource_url})


class GraphMutateHandler(GraphHandler):
    """`POST /graph/mutate`: the client's own merge and split tools, as store edits of the caller."""

    required_role = "proofreader"

    async def post(self) -> None:
        body = self.json_body()
        if "merge" in body and isinstance(body["merge"], dict):
            first, second = (parse_segment_id(body["merge"].get(k)) for k in ("anchor", "other"))
            result = await asyncio.wrap_future(self.edits.merge_segments(self.caller_, first, second))
            self.finish({"merged": str(viewer_segment_id(result.resulting_roots[0]))})
        elif "split" in body and isinstance(body["split"], dict):
            include, exclude = (parse_segment_id(body["split"].get(k)) for k in ("include", "exclude"))
            if root_of_segment(include) is not None or root_of_segment(exclude) is not None:
                raise InputError("a split takes two supervoxels: include and exclude")
            await asyncio.wrap_future(self.edits.edit_split(self.caller_, [include], [exclude]))
            now = await asyncio.get_running_loop().run_in_executor(
                self.graph.executor, store.roots_of, self.graph.store, [include, exclude])
            self.finish({"include": str(viewer_segment_id(now[include])), "exclude": str(viewer_segment_id(now[exclude]))})
        else:
            raise InputError('the body is {"merge": {"anchor": id, "other": id}} or {"split": {"include": id, "exclude": id}}')


class WatchSocket(tornado.websocket.WebSocketHandler):
    """`/graph/watch/<session token>`: one per open viewer; same-origin only (tornado's default check)."""

    def initialize(self, graph: NeuronGraph):
        self.graph = graph
        self.caller: Caller | None = None
        self._loop = asyncio.get_event_loop()

    @property
    def max_message_size(self) -> int:
        return MAX_WATCH_MESSAGE_BYTES

    def open(self, token: str) -> None:
        self.caller = self.graph.session_caller(token)
        if self.caller is None:
            self.close(4401, "unknown session token")
            return
        self.graph.connect(self)

    def on_message(self, message: str | bytes) -> None:
        try:
            request = json.loads(message)
            if "watch" in request:
                self.graph.watch(self, parse_segment_id(request["watch"]["segment_id"]))
            elif "unwatch" in request:
                watch_id = request["unwatch"]["watch_id"]
                if isinstance(watch_id, bool) or not isinstance(watch_id, int):
                    raise InputError("watch_id must be an integer")
                self.graph.unwatch(self, watch_id)
            else:
                raise InputError("expected a watch or unwatch message")
        except (ValueError, KeyError, TypeError, ConnectomeError) as exc:
            self.close(4400, f"bad message: {exc}"[:120])

    def on_close(self) -> None:
        self.graph.disconnect(self)

    def send(self, message: str) -> None:
        """From any thread: queue the message on the server's event loop."""
        def write() -> None:
            if self.ws_connection is not None and not self.ws_connection.is_closing():
                self.write_message(message)

        self._loop.call_soon_threadsafe(write)


def graph_routes(graph: NeuronGraph, authenticator, edits) -> list[tuple]:
    common = dict(graph=graph, authenticator=authenticator)
    return [
        (r"/token", SessionTokenHandler, common),
        (r"/entity_token", EntityTokenHandler, common),
        (r"/graph/config", GraphConfigHandler, common),
        (r"/graph/mutate", GraphMutateHandler, dict(common, edits=edits)),
        (r"/graph/watch/(?P<token>[0-9a-f]{32})", WatchSocket, dict(graph=graph)),
    ]
