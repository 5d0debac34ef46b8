"""Engines, migrations and write transactions for SQLite (embedded) and PostgreSQL (team server).

Writers to a dataset are serialised: SQLite takes its write lock at BEGIN IMMEDIATE, PostgreSQL
locks the dataset's row first thing. That keeps edit ids in commit order, which time travel
("as of edit N") relies on, and a merge holds the lock for milliseconds only.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: SQLite's own busy timeout still serialises writers, only more slowly
    fcntl = None

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, make_url, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from db.models import Counter, Dataset
from volumes.errors import InputError

LOG = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 60_000
# First root id handed out: far above the supervoxel ids of any FFN segmentation, so the two are
# never mistaken for each other when printed side by side.
ROOT_ID_BASE = 10**12
WAL_CHECKPOINT_INTERVAL_S = 0.5
WAL_BACKSTOP_PAGES = 20_000  # 80 MB of 4 KiB pages
SQLITE_CACHE_KIB = 32 * 1024  # page cache per connection (SQLite default: 2 MiB)


def make_engine(url: str) -> Engine:
    """An engine whose write transactions serialise (see module docstring)."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        _configure_sqlite(engine)
        if engine.url.database and engine.url.database != ":memory:":
            WalCheckpointer(engine).start()
        return engine
    if url.startswith("postgresql"):
        return create_engine(url, pool_pre_ping=True)
    raise InputError(f"unsupported database URL {url!r}: use sqlite:///PATH or postgresql+psycopg://...")


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # noqa: ANN001 (DBAPI types)
        # Let SQLAlchemy, not the driver, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")  # the edit path revisits the same B-tree pages
        # Checkpoints run on WalCheckpointer's thread; this is only the backstop should it stall.
        cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_BACKSTOP_PAGES}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):  # noqa: ANN001
        # Writers take the database write lock up front, so two writers queue on the busy
        # timeout instead of one failing when it upgrades a read lock.
        immediate = connection.get_execution_options().get("write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class WalCheckpointer:
    """Copies SQLite's write-ahead log back into the database from a background thread.

    SQLite otherwise checkpoints inside whichever commit crosses the WAL size limit, so
    roughly one edit in ten paid for copying and syncing everyone's pages (the p99 of
    merges). PASSIVE checkpoints never block readers or writers. The thread ends with
    `stop_checkpointer` (Store.close) or at the first error (say, the file was removed);
    SQLite's own backstop checkpoint and the checkpoint on the last close still apply.
    """

    _running: dict[int, "WalCheckpointer"] = {}

    def __init__(self, engine: Engine, interval_s: float = WAL_CHECKPOINT_INTERVAL_S):
        self.engine, self.interval_s = engine, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="connectome-wal-checkpoint", daemon=True)

    def start(self) -> None:
        WalCheckpointer._running[id(self.engine)] = self
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        WalCheckpointer._running.pop(id(self.engine), None)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                connection = self.engine.raw_connection()
                try:
                    connection.driver_connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
                finally:
                    connection.close()
            except Exception as exc:  # the database went away, or the engine was disposed of for good
                LOG.info("WAL checkpoints stop: %s: %s", type(exc).__name__, exc)
                self.stop()


def checkpointer_for(engine: Engine) -> WalCheckpointer | None:
    """The engine's background checkpointer, while it runs (SQLite files only)."""
    return WalCheckpointer._running.get(id(engine))


def stop_checkpointer(engine: Engine) -> None:
    """End the engine's background checkpoints (before disposing of it)."""
    checkpointer = checkpointer_for(engine)
    if checkpointer is not None:
        checkpointer.stop()


def require_existing_database(url: str) -> None:
    """Refuse a SQLite store file that is missing or empty (SQLite would take either as a new database)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return
    path = Path(parsed.database)
    if not path.is_file() or path.stat().st_size == 0:
        state = "is empty" if path.is_file() else "does not exist"
        raise InputError(f"{path}: the proofreading store {state}; 'connectome init' creates a new one "
                         "(restore the file from a backup to keep its edits)")


def check_existing_store(engine: Engine) -> None:
    """Refuse, naming the database, one that is not a connectome store or (SQLite) fails its integrity check.

    `PRAGMA quick_check` reads every page once (seconds for a store of gigabytes), so a store damaged
    in the middle is refused at open instead of failing edits later.
    """
    name = engine.url.database if engine.dialect.name == "sqlite" else engine.url.render_as_string(hide_password=True)
    try:
        with engine.connect() as connection:
            if engine.dialect.name == "sqlite":
                problems = [row[0] for row in connection.exec_driver_sql("PRAGMA quick_check").fetchall()]
                if problems != ["ok"]:
                    raise InputError(f"{name}: the proofreading store is corrupted (SQLite: {problems[0]}); "
                                     "restore it from a backup")
            revision = MigrationContext.configure(connection).get_current_revision()
    except DBAPIError as exc:
        reason = str(exc.orig).splitlines()[0] if exc.orig is not None else "cannot be read"
        raise InputError(f"{name}: cannot open the proofreading store ({reason})") from None
    if revision is None:
        raise InputError(f"{name}: not a connectome proofreading store (no schema); 'connectome init' creates one")


def migrate(engine: Engine) -> None:
    """Bring the schema to the latest Alembic revision (a no-op when it is there already)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    head = ScriptDirectory.from_config(config).get_current_head()
    with engine.connect() as connection:
        if MigrationContext.configure(connection).get_current_revision() == head:
            return
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            # Two processes opening a fresh database at once must not both create the tables.
            connection.execute(text("SELECT pg_advisory_xact_lock(7310512)"))
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def ensure_dataset(engine: Engine, name: str, create: bool) -> int:
    """Id of the dataset called `name`, creating it (and the id counters) when allowed."""
    with write_session(engine, None) as session:
        dataset_id = session.scalar(select(Dataset.id).where(Dataset.name == name))
        if dataset_id is None:
            if not create:
                raise InputError(f"no dataset {name!r} in the store")
            dataset = Dataset(name=name, created_at=now())
            session.add(dataset)
            session.flush()
            dataset_id = dataset.id
        for counter, first in (("root_id", ROOT_ID_BASE), ("edit_id", 1), ("synapse_id", 1)):
            if session.get(Counter, counter) is None:
                session.add(Counter(name=counter, next_value=first))
        return dataset_id


@contextmanager
def write_session(engine: Engine, dataset_id: int | None) -> Iterator[Session]:
    """A session in one write transaction, serialised with the dataset's other writers; commits on success."""
    with _sqlite_writer_queue(engine):
        with Session(bind=engine.execution_options(write=True), expire_on_commit=False) as session:
            with session.begin():
                if dataset_id is not None and engine.dialect.name == "postgresql":
                    session.execute(select(Dataset.id).where(Dataset.id == dataset_id).with_for_update())
                yield session


@contextmanager
def _sqlite_writer_queue(engine: Engine) -> Iterator[None]:
    """Queue SQLite writers on an OS file lock beside the database.

    SQLite's busy handler polls with sleeps of up to 100 ms, which dominates edit latency when
    several processes write; a blocking flock hands the turn over as soon as it is free.
    """
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:" or fcntl is None:
        yield
        return
    with open(database + ".writelock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextmanager
def read_session(engine: Engine) -> Iterator[Session]:
    """A session for reads; one snapshot on SQLite, statement-level on PostgreSQL (read committed)."""
    with Session(bind=engine, expire_on_commit=False) as session:
        with session.begin():
            yield session


def take_ids(session: Session, counter: str, count: int) -> list[int]:
    """Reserve `count` consecutive ids from a counter; rolled back with the transaction.

    One UPDATE ... RETURNING (SQLite >= 3.35, PostgreSQL), which also row-locks the counter.
    """
    if count == 0:
        return []
    [(end,)] = run_sql(session.connection(), "UPDATE counters SET next_value = next_value + ? WHERE name = ? RETURNING next_value",
                       (count, counter))
    return list(range(end - count, end))


def run_sql(connection: Connection, sql: str, params: "Sequence | list[tuple]" = ()) -> list[tuple]:
    """One statement as plain SQL with `?` placeholders, in the connection's transaction; its rows.

    A list of tuples as `params` runs the statement once per tuple (executemany). For the per-edit
    hot path: it goes straight to the driver's cursor, as a Core statement costs about ten times
    the SQLite work it asks for and even `exec_driver_sql` three times, and an edit runs a dozen.
    """
    if connection.dialect.paramstyle != "qmark":
        sql = sql.replace("?", "%s")
    cursor = connection.connection.dbapi_connection.cursor()
    try:
        if isinstance(params, list):
            cursor.executemany(sql, params)
        else:
            cursor.execute(sql, tuple(params))
        return [tuple(row) for row in cursor.fetchall()] if cursor.description is not None else []
    finally:
        cursor.close()


def placeholders(count: int) -> str:
    """`?, ?, ...`: the placeholders of an IN list."""
    return ", ".join(["?"] * count)


def now() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; every stored time is UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
