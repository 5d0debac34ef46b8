"""What handlers and viewers may ask of the server: a small protocol, so neither imports `server.app`.

`ProofreadingServer` (server/app.py) is the one implementation; it imports the handlers and the
viewer class, never the other way round, so the server package has no import circle.
"""
from __future__ import annotations

from concurrent.futures import Executor, Future
from typing import Any, Protocol

from db import store
from server.auth import Authenticator, Caller


class ServedLayerNames(Protocol):
    image: str
    segmentation: str


class ViewerPage(Protocol):
    """A user's viewer as the API sees it: where it is served."""

    @property
    def path(self) -> str: ...


class ServerServices(Protocol):
    """The server's state and edit entry points; each `edit_*` returns a Future set once the edit committed."""

    store: store.Store
    executor: Executor
    auth: Authenticator
    url: str
    layers: ServedLayerNames
    statuses: tuple[str, ...]

    def known_roots(self, supervoxels: list[int], at: Any = None) -> dict[int, int]: ...

    def edit_merge(self, caller: Caller, supervoxel_a: int, supervoxel_b: int, seen_roots: list[int] | None = None,
                   seen_edit_id: int | None = None) -> "Future[store.EditResult]": ...

    def edit_split(self, caller: Caller, sources: list[int], sinks: list[int], preview: bool = False,
                   seen_roots: list[int] | None = None, seen_edit_id: int | None = None) -> "Future[store.EditResult]": ...

    def edit_undo_or_redo(self, caller: Caller, operation: str,
                          edit_id: int | None = None) -> "Future[tuple[int, store.EditResult]]": ...

    def edit_as(self, caller: Caller, function: Any, **arguments: Any) -> Future: ...

    def viewer_for(self, caller: Caller) -> ViewerPage: ...

    def merge_segments(self, caller: Caller, segment_a: int, segment_b: int,
                       seen_edit_id: int | None = None) -> "Future[store.EditResult]": ...

    def segmentation_source(self) -> str: ...

    def layer_source(self, layer: str) -> str: ...

    def image_geometry(self) -> tuple[list[float], list[int], list[int]]: ...

    def synapse_layers(self) -> list[tuple[str, str, str]]: ...

    def external_layers(self) -> list[Any]: ...
