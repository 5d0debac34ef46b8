from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from db.connection import read_session, stop_checkpointer, write_session
from db.graph_cache import GraphCache, publish


DEFAULT_DATASET = "default"

# `at` accepts an edit id, an ISO time, a datetime, or None (now).
At = int | str | datetime | None


class Store:
    """A connection pool bound to one dataset; share it across threads, open one per process."""

    def __init__(self, engine: Engine, dataset: str, dataset_id: int):
        self.engine = engine
        self.url = engine.url.render_as_string(hide_password=True)
        self.dataset = dataset
        self.dataset_id = dataset_id
        self.graph_cache = GraphCache()  # large neurons' graphs between edits (db.graph_cache)

    def close(self) -> None:
        """Stop background checkpoints and dispose of the connection pool."""
        stop_checkpointer(self.engine)
        self.engine.dispose()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.url!r}, dataset={self.dataset!r})"


@contextmanager
def writing(store: Store, session: Session | None) -> Iterator[Session]:
    """The caller's open write session, else a write transaction of our own (committed on success)."""
    if session is not None:
        yield session
        return
    with write_session(store.engine, store.dataset_id) as own:
        yield own
    publish(own, store.graph_cache)  # committed: the graphs of the roots it made are safe to share


@contextmanager
def reading(store: Store, session: Session | None) -> Iterator[Session]:
    """The caller's open session, else a read session of our own."""
    if session is not None:
        yield session
        return
    with read_session(store.engine) as own:
        yield own
