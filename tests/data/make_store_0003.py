"""Makes store_0003.json: a store written by the code of schema revision 0003 (before components).

Run from a checkout of that code (commit 3b4c0c3), e.g.
    git worktree add /tmp/old 3b4c0c3 && PYTHONPATH=/tmp/old:/tmp/old/tests python tests/data/make_store_0003.py
It builds a 3x4x4 grid graph, makes random merges, splits, undos and redos as two users, then
dumps every table row and, for each edit, the root of every supervoxel right after it (as that
code computed them), so the migration test can check the migrated store against both.
"""
from __future__ import annotations

import json
import random
import sys
import tempfile
from pathlib import Path

from sqlalchemy import inspect, text

from db import store as S
from store_testing import grid_labels

GRID = (3, 4, 4)
TABLES = ["datasets", "users", "counters", "layers", "supervoxels", "adjacencies", "agglomeration_edges", "roots",
          "root_members", "edits"]


def main() -> None:
    rng = random.Random(3)
    with tempfile.TemporaryDirectory() as directory:
        store = S.open_store(f"sqlite:///{directory}/store.sqlite")
        S.build_graph(store, grid_labels(GRID), (8, 8, 8))
        S.add_user(store, "ana", "proofreader")
        S.add_user(store, "ben", "admin")
        count = int(grid_labels(GRID).max())
        svs = list(range(1, count + 1))
        with store.engine.connect() as connection:
            pairs = [tuple(row) for row in connection.execute(text("SELECT sv_a, sv_b FROM adjacencies"))]
        roots_after = {0: S.roots_of(store, svs)}
        made: list[int] = []
        while len(roots_after) < 120:
            user = rng.choice(["ana", "ben"])
            choice = rng.random()
            try:
                if choice < 0.55 or not made:
                    result = S.merge(store, *rng.choice(pairs), user=user)
                elif choice < 0.8:
                    members = S.supervoxels_of(store, S.root_of(store, rng.choice(svs)))
                    if len(members) < 2:
                        continue
                    source, sink = rng.sample(members, 2)
                    result = S.split(store, [source], [sink], user=user)
                else:
                    result = (S.undo if choice < 0.92 else S.redo)(store, rng.choice(made), user="ben")
            except (S.RefusedError, S.ConflictError, S.InputError):
                continue
            if result.operation in ("merge", "split"):
                made.append(result.edit_id)
            roots_after[result.edit_id] = S.roots_of(store, svs)
        with store.engine.connect() as connection:
            revision = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
            tables = {}
            for table in TABLES:
                columns = [c["name"] for c in inspect(connection).get_columns(table)]
                rows = connection.execute(text(f"SELECT {', '.join(columns)} FROM {table}")).all()
                tables[table] = {"columns": columns, "rows": [[_plain(v) for v in row] for row in rows]}
        store.close()
    out = {"revision": revision, "grid": GRID, "tables": tables,
           "roots_after_edit": {str(e): {str(sv): r for sv, r in roots.items()} for e, roots in roots_after.items()}}
    Path(__file__).with_name("store_0003.json").write_text(json.dumps(out, separators=(",", ":")))
    print(f"revision {revision}: {len(roots_after) - 1} edits, "
          f"{len(tables['root_members']['rows'])} root_members rows", file=sys.stderr)


def _plain(value):
    return value.isoformat() if hasattr(value, "isoformat") else value


if __name__ == "__main__":
    main()
