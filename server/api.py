"""The HTTP API beside the viewers (documented in server/openapi.json, served at /api/openapi.json).

Every route answers JSON; errors are {"error": "<one line>", "status": <code>}: 400 bad input,
401 no or unknown token, 403 role too low, 404 unknown id, 409 refused or conflicting edit,
413 body too large, 415 not JSON, 503 shutting down. The status is the `http_status` of the
`volumes.errors` class the store or the handler raised: nothing here maps one error to another.
64-bit ids are written as strings so JavaScript clients keep them exact; either form is accepted.
Store calls run on the server's worker threads, never on the tornado thread.
"""
from __future__ import annotations

import asyncio
import io
import json
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Callable

from db import store
from db.export import write_table
from server.auth import TOKEN_COOKIE, Caller
from server.guard import KIB, GuardedHandler
from server.services import ServerServices
from volumes import ids
from volumes.errors import InputError, NotFoundError, UnauthorizedError

OPENAPI_PATH = Path(__file__).with_name("openapi.json")
MAX_SEEDS = 1000
EDIT_MAX_BODY_BYTES = 256 * KIB  # two lists of MAX_SEEDS ids as strings, with room to spare
EXPORT_TABLES = {"synapses": store.synapse_table, "edges": store.edge_table, "neurons": store.neuron_table}
EXPORT_FORMATS = {"csv": "text/csv", "parquet": "application/vnd.apache.parquet"}


def parse_id_list(value: Any, what: str) -> list[int]:
    if not isinstance(value, list) or not value or len(value) > MAX_SEEDS:
        raise InputError(f"{what} must be a list of 1 to {MAX_SEEDS} ids")
    return [ids.parse_id(item, what) for item in value]


def parse_int(text: str | None, what: str, default: int, minimum: int) -> int:
    """An integer query argument in ASCII digits; HTTP 400 otherwise."""
    if text is None or text == "":
        return default
    return ids.parse_int(text, what, minimum=minimum)


def parse_at(value: str | None) -> int | str | None:
    """`at`: an edit id (ASCII digits) or an ISO-8601 time; the store validates the time."""
    if value is None or value == "":
        return None
    if value.isascii() and value.isdigit():
        return parse_int(value, "at", default=0, minimum=0)
    if len(value) > 64:
        raise InputError("at must be an edit id or an ISO-8601 time")
    return value


def edit_result_json(result: store.EditResult, target_edit_id: int | None = None) -> dict:
    body = {  # ids as strings: JSON numbers lose 64-bit precision in browsers
        "edit_id": result.edit_id,
        "operation": result.operation,
        "affected_roots": [str(root) for root in result.affected_roots],
        "resulting_roots": [str(root) for root in result.resulting_roots],
        "added_edges": [[str(a), str(b)] for a, b in result.added_edges],
        "removed_edges": [[str(a), str(b)] for a, b in result.removed_edges],
        "groups": [[str(supervoxel) for supervoxel in group] for group in result.groups],
        "sizes": list(result.sizes),
    }
    if target_edit_id is not None:
        body["target_edit_id"] = target_edit_id
    return body


class ApiHandler(GuardedHandler):
    """JSON in, JSON out, store work on worker threads; an error answers its own HTTP status as JSON.

    The caller is authenticated from the headers before the body is read (see server/guard.py);
    `required_role` is the least role any method of the route needs.
    """

    json_writes = True

    def initialize(self, server: ServerServices):
        self.server = server
        self.authenticator = server.auth

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")

    def write_error_body(self, status_code: int, message: str | None) -> None:
        self.set_header("Content-Type", "application/json")
        self.clear_header("Content-Disposition")
        self.finish(json.dumps({"error": message or self._reason, "status": status_code}))

    async def caller(self, role: str = "viewer") -> Caller:
        """The caller `prepare` authenticated, if their role allows `role` (HTTP 403 otherwise)."""
        caller = self.caller_ or await self.server.auth.require(self, role)
        caller.require(role)
        return caller

    async def call(self, function: Callable, *args, **kwargs) -> Any:
        """Run a blocking store read on a worker thread; its errors reach the client with their own status."""
        return await asyncio.wrap_future(self.server.executor.submit(function, *args, **kwargs))

    async def edit(self, function: Callable[..., Future], *args, **kwargs) -> Any:
        """Queue a store edit (the server's `edit_*`, which return Futures) and wait for its outcome."""
        return await asyncio.wrap_future(function(*args, **kwargs))

    def json_body(self) -> dict:
        try:
            body = json.loads(self.body_bytes() or b"{}")
        except (ValueError, UnicodeDecodeError):
            raise InputError("the request body must be JSON") from None
        except RecursionError:
            raise InputError("the request body nests too deeply") from None
        if not isinstance(body, dict):
            raise InputError("the request body must be a JSON object")
        return body

    def send(self, data: Any) -> None:
        self.finish(json.dumps(data))


class OpenApiHandler(ApiHandler):
    required_role = None

    def get(self) -> None:
        self.finish(OPENAPI_PATH.read_bytes())


class MeHandler(ApiHandler):
    async def get(self) -> None:
        caller = await self.caller()
        user_viewer = self.server.viewer_for(caller)
        self.send({"name": caller.name, "role": caller.role, "viewer_url": self.server.url + user_viewer.path})


class RootsHandler(ApiHandler):
    async def get(self) -> None:
        await self.caller()
        text = self.get_query_argument("supervoxels", "")
        supervoxels = parse_id_list([part for part in text.split(",") if part] or None, "supervoxels")
        at = parse_at(self.get_query_argument("at", None))
        edit_id = await self.call(store.resolve_at, self.server.store, at)  # a bad `at` is a 400, before the ids' 404
        roots = await self.call(self.server.known_roots, supervoxels, at=edit_id)
        self.send({"edit_id": edit_id, "roots": {str(supervoxel): str(root) for supervoxel, root in roots.items()}})


class MergeHandler(ApiHandler):
    required_role = "proofreader"
    max_body_bytes = EDIT_MAX_BODY_BYTES

    async def post(self) -> None:
        caller = await self.caller("proofreader")
        body = self.json_body()
        supervoxels = parse_id_list(body.get("supervoxels"), "supervoxels")
        if len(supervoxels) != 2:
            raise InputError("supervoxels must hold exactly two ids")
        seen_roots = parse_id_list(body["seen_roots"], "seen_roots") if body.get("seen_roots") is not None else None
        result = await self.edit(self.server.edit_merge, caller, supervoxels[0], supervoxels[1], seen_roots=seen_roots)
        self.send(edit_result_json(result))


class SplitHandler(ApiHandler):
    required_role = "proofreader"
    max_body_bytes = EDIT_MAX_BODY_BYTES

    async def post(self) -> None:
        caller = await self.caller("proofreader")
        body = self.json_body()
        sources = parse_id_list(body.get("sources"), "sources")
        sinks = parse_id_list(body.get("sinks"), "sinks")
        preview = body.get("preview", False)
        if not isinstance(preview, bool):
            raise InputError("preview must be true or false")
        seen_roots = parse_id_list(body["seen_roots"], "seen_roots") if body.get("seen_roots") is not None else None
        result = await self.edit(self.server.edit_split, caller, sources, sinks, preview=preview, seen_roots=seen_roots)
        self.send(edit_result_json(result))


class UndoRedoHandler(ApiHandler):
    required_role = "proofreader"

    def initialize(self, server: ServerServices, operation: str):
        super().initialize(server)
        self.operation = operation

    async def post(self) -> None:
        caller = await self.caller("proofreader")
        body = self.json_body()
        edit_id = ids.parse_id(body["edit_id"], "edit_id") if body.get("edit_id") is not None else None
        target, result = await self.edit(self.server.edit_undo_or_redo, caller, self.operation, edit_id)
        self.send(edit_result_json(result, target_edit_id=target))


def annotation_edit_json(outcome: store.AnnotationEdit) -> dict:
    return {"edit_id": outcome.edit_id, "operation": outcome.operation, "started": outcome.started,
            "ended": outcome.ended, "roots": [str(root) for root in outcome.affected_roots]}


class AnnotationsHandler(ApiHandler):
    """GET the annotations (now or ?at=, of ?root=, of ?kind=...); POST a note, bookmark or to-do."""

    max_body_bytes = EDIT_MAX_BODY_BYTES

    async def get(self) -> None:
        await self.caller()
        at = parse_at(self.get_query_argument("at", None))
        root = self.get_query_argument("root", None)
        root_id = ids.parse_id(root, "root") if root is not None else None
        kinds = self.get_query_arguments("kind") or None
        found = await self.call(store.annotations, self.server.store, at, root_id, kinds)
        self.send({"annotations": [item.as_json() for item in found]})

    async def post(self) -> None:
        caller = await self.caller("proofreader")
        body = self.json_body()
        supervoxel = ids.parse_id(body["supervoxel"], "supervoxel") if body.get("supervoxel") is not None else None
        outcome = await self.edit(self.server.edit_as, caller, store.add_annotation, kind=body.get("kind"),
                                  text=body.get("text"), supervoxel=supervoxel, position_nm=body.get("position_nm"))
        self.send(annotation_edit_json(outcome))


class NeuronFieldHandler(ApiHandler):
    """POST {"supervoxel", "field": status|cell_type|name, "value"} sets a neuron's field (value null clears it)."""

    required_role = "proofreader"
    max_body_bytes = EDIT_MAX_BODY_BYTES

    async def post(self) -> None:
        caller = await self.caller("proofreader")
        body = self.json_body()
        supervoxel = ids.parse_id(body.get("supervoxel"), "supervoxel")
        outcome = await self.edit(self.server.edit_as, caller, store.set_neuron_field, supervoxel=supervoxel,
                                  kind=body.get("field"), value=body.get("value"), statuses=self.server.statuses)
        self.send(annotation_edit_json(outcome))


class AnnotationRemoveHandler(ApiHandler):
    required_role = "proofreader"
    max_body_bytes = EDIT_MAX_BODY_BYTES

    async def post(self) -> None:
        caller = await self.caller("proofreader")
        annotation_id = ids.parse_id(self.json_body().get("annotation_id"), "annotation_id")
        outcome = await self.edit(self.server.edit_as, caller, store.remove_annotation,
                                  annotation_id=annotation_id)
        self.send(annotation_edit_json(outcome))


class ReviewNextHandler(ApiHandler):
    """POST {"queue": "merge"}: lease the caller the next task (404 when none is left)."""

    required_role = "proofreader"

    async def post(self) -> None:
        caller = await self.caller("proofreader")
        queue = self.json_body().get("queue", "merge")
        task = await self.edit(self.server.edit_as, caller, store.next_task, queue=queue)
        if task is None:
            raise NotFoundError(f"no task left in the {queue} queue")
        self.send(task.as_json())


class ReviewAnswerHandler(ApiHandler):
    """POST {"task_id", "answer": accept|reject|skip}: answer a task leased to the caller."""

    required_role = "proofreader"

    async def post(self) -> None:
        caller = await self.caller("proofreader")
        body = self.json_body()
        task_id = ids.parse_id(body.get("task_id"), "task_id")
        answer = body.get("answer")
        edit_id = await self.edit(self.server.edit_as, caller, store.answer_task, task_id=task_id, answer=answer)
        self.send({"task_id": task_id, "answer": answer, "edit_id": edit_id})


class ReviewProgressHandler(ApiHandler):
    async def get(self) -> None:
        await self.caller()
        self.send({"progress": await self.call(store.queue_progress, self.server.store)})


class HistoryHandler(ApiHandler):
    async def get(self) -> None:
        await self.caller()
        user = self.get_query_argument("user", None) or None
        since_edit = parse_int(self.get_query_argument("since_edit", None), "since_edit", default=0, minimum=0)
        limit = parse_int(self.get_query_argument("limit", None), "limit", default=1000, minimum=1)
        records = await self.call(store.history, self.server.store, user=user, since_edit=since_edit, limit=limit)
        self.send({"edits": [record.as_json() for record in records]})


class NeuronSynapsesHandler(ApiHandler):
    async def get(self, root: str) -> None:
        await self.caller()
        root_id = ids.parse_id(root, "root id")
        at = parse_at(self.get_query_argument("at", None))
        table = await self.call(self._synapses, root_id, at)
        rows = json.loads(table.to_json(orient="records"))
        for row in rows:
            for key, value in row.items():
                if key.endswith("_id") and value is not None:
                    row[key] = str(value)
        self.send({"root": str(root_id), "synapses": rows})

    def _synapses(self, root: int, at):
        store.supervoxels_of(self.server.store, root)  # an unknown root is a 404, not an empty list
        return store.synapses_of_root(self.server.store, root, at=at)


class ExportHandler(ApiHandler):
    async def get(self, table_name: str) -> None:
        await self.caller()
        if table_name not in EXPORT_TABLES:
            raise NotFoundError(f"no table {table_name!r}; tables: {', '.join(EXPORT_TABLES)}")
        file_format = self.get_query_argument("format", "csv")
        if file_format not in EXPORT_FORMATS:
            raise InputError(f"format must be {' or '.join(EXPORT_FORMATS)}")
        at = parse_at(self.get_query_argument("at", None))
        table = await self.call(EXPORT_TABLES[table_name], self.server.store, at=at)
        buffer = io.BytesIO()
        write_table(table, buffer, file_format)  # the same writer as `connectome export`
        self.set_header("Content-Type", EXPORT_FORMATS[file_format])
        self.set_header("Content-Disposition", f'attachment; filename="{table_name}.{file_format}"')
        self.finish(buffer.getvalue())


class UsersHandler(ApiHandler):
    required_role = "admin"

    async def post(self) -> None:
        await self.caller("admin")
        body = self.json_body()
        name, role = body.get("name"), body.get("role")
        if not isinstance(name, str) or not name.strip() or len(name) > 128:
            raise InputError("name must be a non-empty string of at most 128 characters")
        role = store.Role.parse(role)
        token = await self.call(store.add_user, self.server.store, name.strip(), role)
        self.set_status(201)
        self.send({"name": name.strip(), "role": role.value, "token": token, "login_path": f"/login?token={token}"})


class LoginHandler(ApiHandler):
    """`/login?token=T`: remember the token in a cookie and open the user's own viewer."""

    required_role = None

    async def get(self) -> None:
        token = self.get_query_argument("token", "")
        caller = await asyncio.get_running_loop().run_in_executor(self.server.executor, self.server.auth.caller_for_token, token) if token else None
        if caller is None:
            raise UnauthorizedError("unknown or missing token; ask an admin for your login link")
        user_viewer = self.server.viewer_for(caller)
        # Secure when the browser came over HTTPS (directly, or through a TLS proxy that says so).
        secure = self.request.protocol == "https" or self.request.headers.get("X-Forwarded-Proto", "").lower() == "https"
        self.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict", path="/", secure=secure)
        self.redirect(user_viewer.path)


class IndexHandler(ApiHandler):
    required_role = None

    def get(self) -> None:
        self.set_header("Content-Type", "text/html")
        self.finish("<!doctype html><title>connectome</title><p>connectome proofreading server. "
                    "Open your login link (<code>/login?token=...</code>) to get your viewer; "
                    "the API is described at <a href='/api/openapi.json'>/api/openapi.json</a>.</p>")


def api_routes(server: ServerServices) -> list[tuple]:
    routes = [
        (r"/", IndexHandler, {}),
        (r"/login", LoginHandler, {}),
        (r"/api/openapi\.json", OpenApiHandler, {}),
        (r"/api/me", MeHandler, {}),
        (r"/api/roots", RootsHandler, {}),
        (r"/api/edits/merge", MergeHandler, {}),
        (r"/api/edits/split", SplitHandler, {}),
        (r"/api/edits/undo", UndoRedoHandler, {"operation": "undo"}),
        (r"/api/edits/redo", UndoRedoHandler, {"operation": "redo"}),
        (r"/api/history", HistoryHandler, {}),
        (r"/api/annotations", AnnotationsHandler, {}),
        (r"/api/annotations/neuron", NeuronFieldHandler, {}),
        (r"/api/annotations/remove", AnnotationRemoveHandler, {}),
        (r"/api/review/next", ReviewNextHandler, {}),
        (r"/api/review/answer", ReviewAnswerHandler, {}),
        (r"/api/review/progress", ReviewProgressHandler, {}),
        (r"/api/neurons/([^/]+)/synapses", NeuronSynapsesHandler, {}),
        (r"/api/export/([^/]+)", ExportHandler, {}),
        (r"/api/users", UsersHandler, {}),
        (r"/api/.*", NotFoundHandler, {}),
    ]
    return [(pattern, handler, dict(server=server, **extra)) for pattern, handler, extra in routes]


class NotFoundHandler(ApiHandler):
    required_role = None

    async def prepare(self) -> None:
        raise NotFoundError(f"no API route {self.request.path}")
