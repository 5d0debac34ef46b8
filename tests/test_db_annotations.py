"""Annotations in the store: they follow their neuron through edits, flag a changed neuron, travel in
time, undo and redo like edits, replay, and refuse bad input without changing anything."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import require
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from db import store as S
from store_testing import BACKENDS, fresh_database_url, grid_labels, postgres_url
from volumes.errors import ConflictError, ForbiddenError, InputError, NotFoundError


@pytest.fixture
def chain(backend, tmp_path):
    labels = np.zeros((4, 4, 12), dtype=np.uint32)
    for i in range(6):
        labels[:, :, 2 * i:2 * i + 2] = i + 1
    with fresh_database_url(backend, tmp_path) as url:
        with S.open_store(url) as store:
            S.build_graph(store, labels, (40.0, 8.0, 8.0))
            S.add_user(store, "ana", "proofreader")
            S.add_user(store, "bo", "proofreader")
            S.add_user(store, "vic", "viewer")
            yield store


def test_a_status_follows_its_neuron_and_flags_later_changes(chain):
    first = S.set_neuron_field(chain, 1, "status", "Traced", user="ana")
    S.set_neuron_field(chain, 3, "cell_type", "KC", user="bo")
    S.add_annotation(chain, "note", "check the tip", user="bo", supervoxel=2)
    [status] = S.annotations(chain, kinds=["status"])
    assert (status.value, status.root, status.earlier_version, status.user) == ("Traced", S.root_of(chain, 1), False, "ana")
    merged = S.merge(chain, 1, 3, user="ana")
    fields = S.neuron_fields(chain)
    assert fields == {merged.resulting_roots[0]: {"status": "Traced", "cell_type": "KC"}}
    assert all(a.earlier_version for a in S.annotations(chain, kinds=["status", "cell_type"]))
    assert not S.annotations(chain, kinds=["note"])[0].earlier_version  # neuron of 2 did not change
    # Setting it again on the merged neuron ends the old value and is current again.
    again = S.set_neuron_field(chain, 3, "status", "Done", user="bo")
    [status] = S.annotations(chain, kinds=["status"])
    assert (status.value, status.earlier_version) == ("Done", False)
    # As of the first annotation, only it existed, on the neuron of 1 then.
    [then] = S.annotations(chain, at=first.edit_id)
    assert (then.value, then.root) == ("Traced", S.root_of(chain, 1, at=first.edit_id))
    assert [a.value for a in S.annotations(chain, at=again.edit_id - 1, kinds=["status"])] == ["Traced"]
    # The edit log has them, and clearing removes the value.
    assert [r.operation for r in S.history(chain)].count("annotate") == 4
    S.set_neuron_field(chain, 1, "status", None, user="ana")
    assert S.annotations(chain, kinds=["status"]) == []
    with pytest.raises(InputError, match="no status to clear"):
        S.set_neuron_field(chain, 1, "status", None, user="ana")


def test_a_split_leaves_the_annotation_with_the_piece_holding_its_anchor(chain):
    S.merge(chain, 1, 2, user="ana")
    S.merge(chain, 2, 3, user="ana")
    S.set_neuron_field(chain, 3, "name", "DA1-lPN", user="ana")
    cut = S.split(chain, [1], [3], user="ana")
    [name] = S.annotations(chain, kinds=["name"])
    assert name.root == S.root_of(chain, 3) and name.earlier_version
    assert S.annotations(chain, root=S.root_of(chain, 1)) == []
    assert cut.edit_id in [r.id for r in S.history(chain)]


def test_undo_and_redo_of_annotation_edits(chain):
    S.set_neuron_field(chain, 1, "status", "Traced", user="ana")
    change = S.set_neuron_field(chain, 1, "status", "Done", user="ana")
    S.undo(chain, change.edit_id, user="ana")
    assert [a.value for a in S.annotations(chain, kinds=["status"])] == ["Traced"]
    S.redo(chain, change.edit_id, user="ana")
    assert [a.value for a in S.annotations(chain, kinds=["status"])] == ["Done"]
    with pytest.raises(ForbiddenError):
        S.undo(chain, change.edit_id, user="bo")
    point = S.add_annotation(chain, "todo", "look here", user="bo", position_nm=(20, 8, 8))
    S.remove_annotation(chain, point.started[0], user="bo")
    with pytest.raises(ConflictError, match="later edit"):
        S.undo(chain, point.edit_id, user="bo")  # the to-do it added was removed since
    assert S.annotations(chain, kinds=["todo"]) == []


def test_bad_annotations_are_refused_and_change_nothing(chain):
    before = (S.history(chain), S.annotations(chain))
    for call, error, match in [
        (lambda: S.set_neuron_field(chain, 1, "status", "Finished", user="ana"), InputError, "unknown status"),
        (lambda: S.set_neuron_field(chain, 1, "colour", "red", user="ana"), InputError, "not a neuron field"),
        (lambda: S.set_neuron_field(chain, 99, "status", "Done", user="ana"), NotFoundError, "unknown supervoxel"),
        (lambda: S.add_annotation(chain, "note", "x" * 2001, user="ana", supervoxel=1), InputError, "at most 2000"),
        (lambda: S.add_annotation(chain, "note", "  ", user="ana", supervoxel=1), InputError, "non-empty"),
        (lambda: S.add_annotation(chain, "bookmark", "b", user="ana"), InputError, "position"),
        (lambda: S.add_annotation(chain, "todo", "t", user="ana", position_nm=(1, "a", 2)), InputError, "three numbers"),
        (lambda: S.set_neuron_field(chain, 1, "status", "Done", user="vic"), ForbiddenError, "cannot edit"),
        (lambda: S.remove_annotation(chain, 12345, user="ana"), NotFoundError, "no annotation"),
    ]:
        with pytest.raises(error, match=match):
            call()
    assert (S.history(chain), S.annotations(chain)) == before


def test_a_replay_reproduces_the_annotations(chain, backend, tmp_path):
    S.set_neuron_field(chain, 1, "status", "Traced", user="ana")
    S.merge(chain, 1, 2, user="ana")
    note = S.add_annotation(chain, "note", "soma", user="bo", supervoxel=2)
    S.remove_annotation(chain, note.started[0], user="bo")
    S.undo(chain, S.history(chain)[-1].id, user="bo")
    S.add_annotation(chain, "bookmark", "synapse", user="ana", position_nm=(20, 8, 30), supervoxel=4)
    (tmp_path / "replay").mkdir()
    with fresh_database_url(backend, tmp_path / "replay") as url, S.open_store(url) as replayed:
        labels = np.zeros((4, 4, 12), dtype=np.uint32)
        for i in range(6):
            labels[:, :, 2 * i:2 * i + 2] = i + 1
        S.build_graph(replayed, labels, (40.0, 8.0, 8.0))
        S.replay(replayed, S.history(chain))

        def summary(store):
            return sorted((a.kind, a.value, a.supervoxel, a.position_nm, a.earlier_version) for a in S.annotations(store))

        assert summary(replayed) == summary(chain)


SUPERVOXELS = list(range(1, 13))
steps = st.lists(st.one_of(
    st.tuples(st.just("merge"), st.sampled_from(SUPERVOXELS), st.sampled_from(SUPERVOXELS)),
    st.tuples(st.just("split"), st.sampled_from(SUPERVOXELS), st.sampled_from(SUPERVOXELS)),
    st.tuples(st.just("status"), st.sampled_from(SUPERVOXELS), st.sampled_from(list(S.DEFAULT_STATUSES))),
    st.tuples(st.just("note"), st.sampled_from(SUPERVOXELS), st.text(min_size=1, max_size=5).filter(str.strip)),
    st.tuples(st.just("undo"), st.integers(0, 3), st.just("")),
), min_size=4, max_size=20)


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_annotations_always_resolve_to_the_neuron_of_their_anchor(backend_name):
    """After any edits: each annotation's root is its anchor's root, the earlier-version flag is
    exactly 'that root changed since it was set', and --at returns the annotations as they were."""
    if backend_name == "postgresql":
        require(postgres_url() is not None, "CONNECTOME_TEST_POSTGRES_URL is not set")

    @settings(max_examples=12 if backend_name == "sqlite" else 6, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow])
    @given(sequence=steps)
    def run(sequence):
        with tempfile.TemporaryDirectory() as directory, fresh_database_url(backend_name, Path(directory)) as url:
            with S.open_store(url) as store:
                S.build_graph(store, grid_labels((1, 3, 4)), (8, 8, 8))
                S.add_user(store, "ana", "proofreader")
                seen: dict[int, list] = {}
                for kind, first, second in sequence:
                    try:
                        if kind == "merge":
                            S.merge(store, first, second, user="ana")
                        elif kind == "split":
                            S.split(store, [first], [second], user="ana")
                        elif kind == "status":
                            S.set_neuron_field(store, first, "status", second, user="ana")
                        elif kind == "note":
                            S.add_annotation(store, "note", second, user="ana", supervoxel=first)
                        else:
                            history = S.history(store)
                            S.undo(store, history[-1 - first % len(history)].id, user="ana")
                    except (InputError, S.RefusedError, IndexError, ZeroDivisionError):
                        continue
                    edit = S.latest_edit_id(store)
                    now = S.annotations(store)
                    roots = S.roots_of(store, SUPERVOXELS)
                    for item in now:
                        assert item.root == roots[item.supervoxel]
                        assert item.earlier_version == (item.set_on_root != roots[item.supervoxel])
                    seen[edit] = [(a.id, a.value, a.root, a.earlier_version) for a in now]
                for edit, expected in seen.items():
                    assert [(a.id, a.value, a.root, a.earlier_version) for a in S.annotations(store, at=edit)] == expected

    run()
