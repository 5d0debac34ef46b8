"""Several writers at once: 8 processes x 250 random edits on one dataset, on SQLite and PostgreSQL."""
from __future__ import annotations

import multiprocessing
from collections import Counter

import pytest
from conftest import require

from db import store as S
from store_testing import BACKENDS, check_partition, fresh_database_url, grid_labels, postgres_url, random_edit_worker

WRITERS = 8
EDITS_PER_WRITER = 250
GRID = (4, 6, 6)  # 144 supervoxels: small, so writers collide often


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("backend", BACKENDS)
def test_concurrent_writers_lose_nothing_and_match_a_serial_replay(backend, tmp_path):
    if backend == "postgresql":
        require(postgres_url() is not None, "CONNECTOME_TEST_POSTGRES_URL is not set")
    labels = grid_labels(GRID)
    with fresh_database_url(backend, tmp_path) as url, fresh_database_url(backend, tmp_path) as replay_url:
        with S.open_store(url) as store:
            S.build_graph(store, labels, (8, 8, 8))
            users = [f"writer{i}" for i in range(WRITERS)]
            for user in users:
                S.add_user(store, user, "proofreader")
        context = multiprocessing.get_context("spawn")
        with context.Pool(WRITERS) as pool:
            jobs = [pool.apply_async(random_edit_worker, (url, user, seed, EDITS_PER_WRITER))
                    for seed, user in enumerate(users)]
            outcomes = {user: job.get(timeout=800) for user, job in zip(users, jobs)}

        committed = [(user, edit_id) for user, rows in outcomes.items() for _, outcome, edit_id, _ in rows if outcome == "ok"]
        refused = [row for rows in outcomes.values() for row in rows if row[1] == "refused"]
        with S.open_store(url) as store:
            log = S.history(store)
            # No lost and no duplicated edit: the log is exactly the edits the writers were told committed.
            assert sorted(edit_id for _, edit_id in committed) == [record.id for record in log]
            assert len({edit_id for _, edit_id in committed}) == len(committed)
            assert [record.id for record in log] == list(range(1, len(log) + 1))
            assert {(record.user, record.id) for record in log} == set(committed)
            # Writers really did collide, and each refusal was a clear conflict or refusal, never a crash.
            kinds = Counter(row[2] for row in refused)
            assert kinds["ConflictError"] > 0, kinds
            assert all(row[3] and "\n" not in row[3] for row in refused)
            assert all("conflict" in row[3] for row in refused if row[2] == "ConflictError")
            check_partition(store)
            final = S.roots_of(store, range(1, labels.max() + 1))
            groups = S.equivalence_groups(store)
        # The final state equals a serial replay of the log.
        with S.open_store(replay_url) as replayed:
            S.build_graph(replayed, labels, (8, 8, 8))
            S.replay(replayed, log)
            assert S.roots_of(replayed, range(1, labels.max() + 1)) == final
            assert S.equivalence_groups(replayed) == groups
            assert [r.operation for r in S.history(replayed)] == [r.operation for r in log]
        print(f"{backend}: {len(log)} edits committed, refusals {dict(kinds)}")
