"""Revision 0004 (components) on a store written by the code before it: history, root ids and users
survive, time travel answers as that code did, a replay agrees, new edits work, downgrade restores."""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import require
from sqlalchemy import text

from db import store as S
from store_testing import BACKENDS, check_partition, fresh_database_url, grid_labels, postgres_url

FIXTURE = Path(__file__).parent / "data" / "store_0003.json"  # made by tests/data/make_store_0003.py


def _load_old_store(url: str, dump: dict):
    """A database at revision 0003 holding the dumped rows; returns (engine, alembic config)."""
    from alembic import command
    from alembic.config import Config

    from db.connection import MIGRATIONS_DIR, make_engine

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    engine = make_engine(url)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, dump["revision"])
        for name, table in dump["tables"].items():
            reflected = sa.Table(name, sa.MetaData(), autoload_with=connection)
            rows = [dict(zip(table["columns"], row)) for row in table["rows"]]
            for column in reflected.columns:
                for row in rows:
                    if row[column.name] is None:
                        continue
                    if isinstance(column.type, sa.DateTime):
                        row[column.name] = datetime.fromisoformat(row[column.name])
                    elif isinstance(column.type, sa.JSON):
                        row[column.name] = json.loads(row[column.name])
            if rows:
                connection.execute(reflected.insert(), rows)
            if connection.dialect.name == "postgresql" and "id" in reflected.columns:
                # rows came with their ids: the serial sequence continues after them, as in the old store
                connection.execute(text(f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), max(id)) FROM {name} "
                                        f"WHERE pg_get_serial_sequence('{name}', 'id') IS NOT NULL"))
    return engine, config


def _partition(roots: dict[int, int]) -> set[frozenset[int]]:
    groups: dict[int, set[int]] = {}
    for sv, root in roots.items():
        groups.setdefault(root, set()).add(sv)
    return {frozenset(group) for group in groups.values()}


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_store_of_the_previous_schema_migrates_with_its_history(backend, tmp_path):
    if backend == "postgresql":
        require(postgres_url() is not None, "CONNECTOME_TEST_POSTGRES_URL is not set")
    from alembic import command

    from db.connection import stop_checkpointer

    dump = json.loads(FIXTURE.read_text())
    expected = {int(e): {int(sv): r for sv, r in roots.items()} for e, roots in dump["roots_after_edit"].items()}
    svs = sorted(expected[0])
    old_members: dict[int, set[int]] = {}
    for root, sv, _ in dump["tables"]["root_members"]["rows"]:
        old_members.setdefault(root, set()).add(sv)
    with fresh_database_url(backend, tmp_path) as url, fresh_database_url(backend, tmp_path) as replay_url:
        engine, config = _load_old_store(url, dump)
        with S.open_store(url, create=False) as store:  # migrates to head
            # History, users and every root id as of every edit are those of the old code.
            log = S.history(store)
            assert [r.id for r in log] == sorted(e for e in expected if e) and len(log) == len(dump["tables"]["edits"]["rows"])
            assert {(u.name, u.role) for u in S.list_users(store)} == {("ana", "proofreader"), ("ben", "admin")}
            for edit_id, roots in expected.items():
                assert S.roots_of(store, svs, at=edit_id) == roots, edit_id
            for root, members in old_members.items():
                assert set(S.supervoxels_of(store, root)) == members
            check_partition(store)
            some_root = expected[max(expected)][svs[0]]
            assert S.lineage(store, some_root)["root"] == some_root
            # A replay of the log on a fresh store reaches the same neurons after every edit.
            with S.open_store(replay_url) as replayed:
                S.build_graph(replayed, grid_labels(tuple(dump["grid"])), (8, 8, 8))
                results = S.replay(replayed, log)
                for record, result in zip(log, results):
                    assert _partition(S.roots_of(replayed, svs, at=result.edit_id)) == _partition(expected[record.id])
            # New edits continue the history: ids after the old ones, roots never reused, old edits undoable.
            latest = S.latest_edit_id(store)
            a, b = next((a, b) for a, b, *_ in dump["tables"]["adjacencies"]["rows"]
                        if expected[latest][a] != expected[latest][b])
            merged = S.merge(store, a, b, user="ben")
            assert merged.edit_id == latest + 1
            all_old_roots = {row[0] for row in dump["tables"]["roots"]["rows"]}
            assert not set(merged.resulting_roots) & all_old_roots
            first_merge = next(r.id for r in log if r.operation == "merge" and not r.undone)
            try:
                S.undo(store, first_merge, user="ben")
            except S.ConflictError:
                pass  # a later edit changed its link; the refusal is itself the old rule
            check_partition(store)
            for edit_id, roots in expected.items():
                assert S.roots_of(store, svs, at=edit_id) == roots
        # Downgrade gives back the old table of every root's members.
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, dump["revision"])
            restored = connection.execute(text("SELECT root_id, sv_id FROM root_members")).all()
        restored_members: dict[int, set[int]] = {}
        for root, sv in restored:
            restored_members.setdefault(root, set()).add(sv)
        assert {r: m for r, m in restored_members.items() if r in old_members} == old_members
        stop_checkpointer(engine)
        engine.dispose()
