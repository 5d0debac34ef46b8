"""SQL helpers shared by the store modules: chunked IN lists, bulk inserts, reads straight from the driver."""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np
from sqlalchemy import Connection
from sqlalchemy.orm import Session

from db.connection import placeholders, run_sql

INSERT_CHUNK_ROWS = 100_000
# Bound parameters per `IN (...)` list: under SQLite's 32,766 and PostgreSQL's 65,535 limits.
IN_LIST_IDS = 10_000


def id_chunks(ids: Sequence[int]) -> Iterator[list[int]]:
    """`ids` in slices short enough for one `IN (...)` list each: the one place that limit is kept."""
    for start in range(0, len(ids), IN_LIST_IDS):
        yield list(ids[start:start + IN_LIST_IDS])


def insert_tuples(connection: Connection, table: str, names: Sequence[str], rows: Iterable[tuple]) -> None:
    """Driver-level executemany of plain tuples, a chunk at a time: for millions of rows,
    SQLAlchemy's per-row parameter handling costs more than the database does."""
    sql = f"INSERT INTO {table} ({', '.join(names)}) VALUES ({placeholders(len(names))})"
    chunk: list[tuple] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == INSERT_CHUNK_ROWS:
            run_sql(connection, sql, chunk)
            chunk = []
    if chunk:
        run_sql(connection, sql, chunk)


def inline_sql(connection: Connection, query) -> str:
    """A query's SQL with its (integer only) parameters rendered inline."""
    return str(query.compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True}))


def driver_records(session: Session, query, dtype: np.dtype) -> np.ndarray:
    """A query's rows as a numpy record array, built by numpy straight from the driver's cursor:
    SQLAlchemy Row objects (and numpy probing each for the array protocol) cost several times
    the query for 10^5-10^6 rows."""
    connection = session.connection()
    cursor = connection.connection.cursor()
    try:
        cursor.execute(inline_sql(connection, query))
        return np.fromiter(cursor, dtype=dtype)
    finally:
        cursor.close()


def sql_records(connection: Connection, sql: str, params: Sequence, dtype: np.dtype) -> np.ndarray:
    """`run_sql`'s statement, its rows straight into a numpy record array (no Python tuple per row)."""
    if connection.dialect.paramstyle != "qmark":
        sql = sql.replace("?", "%s")
    cursor = connection.connection.dbapi_connection.cursor()
    try:
        cursor.execute(sql, tuple(params))
        return np.fromiter(cursor, dtype=dtype)
    finally:
        cursor.close()
