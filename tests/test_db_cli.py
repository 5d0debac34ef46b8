"""`connectome graph|edit|user|export` as scripts use them: output lines and exit statuses."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from cli.main import main
from conftest import REPO_ROOT
from store_testing import grid_labels
from volumes.precomputed import write_layer


@pytest.fixture
def ws(workspace):
    """A workspace with a 2x2x2-supervoxel segmentation layer, its graph built and one proofreader."""
    write_layer(workspace.layer_path("seg"), grid_labels((2, 2, 2)), (40, 8, 8), layer_type="segmentation", progress=False)
    return str(workspace.root)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_edit_session_from_the_command_line(ws, capsys, tmp_path):
    assert run(capsys, "graph", "build", "-w", ws, "--segmentation", "seg")[1] == "8 supervoxels, 12 adjacencies\n"
    code, token, _ = run(capsys, "user", "add", "ana", "-w", ws, "--role", "proofreader")
    assert code == 0 and len(token.strip()) >= 32
    assert run(capsys, "edit", "merge", "1", "2", "-w", ws, "--user", "ana") == (0, "1\n", "")
    assert run(capsys, "edit", "merge", "2", "4", "-w", ws, "--user", "ana") == (0, "2\n", "")
    code, out, _ = run(capsys, "edit", "split", "--sources", "1", "--sinks", "4", "-w", ws, "--user", "ana", "--preview")
    # Both links have the same contact area, so either is a minimum cut.
    assert code == 0 and out.splitlines() in (["cut 2 4", "neuron 1 2", "neuron 4"], ["cut 1 2", "neuron 1", "neuron 2 4"])
    assert run(capsys, "edit", "split", "--sources", "1", "--sinks", "4", "-w", ws, "--user", "ana")[1] == "3\n"
    assert run(capsys, "edit", "undo", "3", "-w", ws, "--user", "ana")[1] == "4\n"
    assert run(capsys, "edit", "redo", "3", "-w", ws, "--user", "ana")[1] == "5\n"

    code, out, _ = run(capsys, "edit", "roots", "1", "2", "4", "-w", ws, "--at", "2")
    lines = [line.split() for line in out.splitlines()]
    assert [sv for sv, _ in lines] == ["1", "2", "4"] and len({root for _, root in lines}) == 1
    code, out, _ = run(capsys, "edit", "roots", "1", "4", "-w", ws)
    assert len({line.split()[1] for line in out.splitlines()}) == 2

    code, out, _ = run(capsys, "edit", "history", "-w", ws, "--json")
    history = json.loads(out)
    assert [e["operation"] for e in history] == ["merge", "merge", "split", "undo", "redo"]
    assert all(isinstance(root, str) for e in history for root in e["resulting_roots"])
    code, out, _ = run(capsys, "edit", "history", "-w", ws)
    assert len(out.splitlines()) == 5 and " ana split " in out

    code, out, _ = run(capsys, "export", "-w", ws, "--format", "csv", "--out", str(tmp_path / "out"), "--at", "2")
    assert code == 0 and sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "annotations.csv", "edges.csv", "neurons.csv", "synapses.csv"]


def test_annotations_from_the_command_line(ws, capsys):
    run(capsys, "graph", "build", "-w", ws, "--segmentation", "seg")
    run(capsys, "user", "add", "ana", "-w", ws, "--role", "proofreader")
    assert run(capsys, "annotate", "set", "1", "status", "Traced", "-w", ws, "--user", "ana") == (0, "1\n", "")
    assert run(capsys, "annotate", "note", "2", "soma?", "-w", ws, "--user", "ana")[1] == "2\n"
    assert run(capsys, "annotate", "point", "20,8,8", "check", "--kind", "todo", "-w", ws, "--user", "ana")[1] == "3\n"
    assert run(capsys, "edit", "merge", "1", "2", "-w", ws, "--user", "ana")[1] == "4\n"
    code, out, _ = run(capsys, "annotate", "list", "-w", ws)
    lines = out.splitlines()
    assert code == 0 and len(lines) == 3
    assert "status 'Traced'" in lines[0] and "(set on an earlier version)" in lines[0]
    code, out, _ = run(capsys, "annotate", "list", "-w", ws, "--at", "1", "--json")
    assert [(a["kind"], a["value"], a["earlier_version"]) for a in json.loads(out)] == [("status", "Traced", False)]
    assert run(capsys, "edit", "undo", "1", "-w", ws, "--user", "ana")[1] == "5\n"
    assert "status" not in run(capsys, "annotate", "list", "-w", ws)[1]


def test_review_queue_from_the_command_line(ws, capsys):
    run(capsys, "graph", "build", "-w", ws, "--segmentation", "seg")
    run(capsys, "user", "add", "ana", "-w", ws, "--role", "proofreader")
    assert run(capsys, "review", "build", "-w", ws) == (0, "12\n", "")  # the grid's 12 adjacent pairs
    code, out, _ = run(capsys, "review", "next", "-w", ws, "--user", "ana")
    task, a, b = out.split()
    assert code == 0 and run(capsys, "review", "answer", task, "accept", "-w", ws, "--user", "ana")[1] == "1\n"
    code, out, _ = run(capsys, "edit", "roots", a, b, "-w", ws)
    assert len({line.split()[1] for line in out.splitlines()}) == 1
    assert run(capsys, "review", "answer", task, "reject", "-w", ws, "--user", "ana")[0] == 1  # already answered
    assert "merge done accept ana 1" in run(capsys, "review", "progress", "-w", ws)[1]


@pytest.mark.parametrize("argv, code, message", [
    (["edit", "merge", "1", "2", "--user", "ana"], 1, "already in one neuron"),
    (["edit", "merge", "1", "99", "--user", "ana"], 2, "unknown supervoxel 99"),
    (["edit", "merge", "3", "4", "--user", "vic"], 1, "viewer role"),
    (["edit", "split", "--sources", "1", "--sinks", "1", "--user", "ana"], 2, "both a source and a sink"),
    (["edit", "split", "--sources", "1", "--sinks", "5", "--user", "ana"], 1, "must be in one neuron"),
    (["edit", "undo", "7", "--user", "ana"], 2, "no edit 7"),
    (["edit", "undo", "1", "--user", "ana", "--seen-roots", "5"], 1, "conflict"),
    (["edit", "roots", "1", "--at", "not-a-time"], 2, "invalid --at"),
    (["annotate", "set", "1", "status", "Finished", "--user", "ana"], 2, "unknown status 'Finished'"),
    (["annotate", "set", "99", "status", "Done", "--user", "ana"], 2, "unknown supervoxel 99"),
    (["annotate", "note", "1", "x" * 2001, "--user", "ana"], 2, "at most 2000 characters"),
    (["annotate", "set", "1", "status", "Done", "--user", "vic"], 1, "viewer role"),
    (["annotate", "remove", "5", "--user", "ana"], 2, "no annotation 5"),
])
def test_refusals_print_one_line_and_exit_1_or_2(ws, capsys, argv, code, message):
    run(capsys, "graph", "build", "-w", ws, "--segmentation", "seg")
    run(capsys, "user", "add", "ana", "-w", ws, "--role", "proofreader")
    run(capsys, "user", "add", "vic", "-w", ws, "--role", "viewer")
    run(capsys, "edit", "merge", "1", "2", "-w", ws, "--user", "ana")
    before = run(capsys, "edit", "history", "-w", ws, "--json")[1]
    got, out, err = run(capsys, *argv, "-w", ws)
    assert got == code and out == ""
    assert err.startswith("connectome: error: ") and message in err and err.count("\n") == 1
    assert run(capsys, "edit", "history", "-w", ws, "--json")[1] == before


def test_installed_entry_point_exit_status(ws):
    """The real process: bad ids are rejected by argparse with exit 2, and graph build runs."""
    command = [sys.executable, "-m", "cli.main"]
    built = subprocess.run(command + ["graph", "build", "-w", ws, "--segmentation", "seg"], cwd=REPO_ROOT,
                           capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stderr
    bad = subprocess.run(command + ["edit", "split", "--sources", "1,x", "--sinks", "2", "--user", "a", "-w", ws],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "expected comma-separated supervoxel ids" in bad.stderr
    again = subprocess.run(command + ["graph", "build", "-w", ws, "--segmentation", "seg"], cwd=REPO_ROOT,
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 1 and again.stderr.strip() == "connectome: error: dataset 'default' already has a supervoxel graph"


def test_graph_build_starts_from_an_agglomeration_layer(ws, capsys):
    """Each supervoxel joins the agglomeration segment covering most of it: the z=0 half is one segment (with a
    stray voxel of the other in supervoxel 1), the z=1 half split by y; label 0 leaves a supervoxel alone."""
    from db import store
    from volumes.workspace import Workspace

    supervoxels = grid_labels((2, 2, 2))  # ids 1..8, z-major, 2x2x2 voxels each
    agglomeration = np.where(supervoxels <= 4, 10, 20).astype(np.uint32)
    agglomeration[0, 0, 0] = 20  # one voxel of supervoxel 1 in segment 20: the majority keeps it in 10
    agglomeration[2:, 2:, :] = 30  # supervoxels 7, 8 (z=1, y=1) are segment 30
    agglomeration[2:, :2, 2:] = 0  # supervoxel 6 is unlabelled: a neuron of its own
    write_layer(Workspace(ws).layer_path("agg"), agglomeration, (40, 8, 8), layer_type="segmentation", progress=False)
    assert run(capsys, "graph", "build", "-w", ws, "--segmentation", "seg", "--agglomeration", "agg")[1] == \
        "8 supervoxels, 12 adjacencies, 4 neurons\n"
    with store.open_store(Workspace(ws)) as opened:
        roots = store.roots_of(opened, range(1, 9))
    assert len({roots[sv] for sv in (1, 2, 3, 4)}) == 1 and roots[7] == roots[8]
    assert len({roots[1], roots[5], roots[6], roots[7]}) == 4
    code, _, err = run(capsys, "graph", "build", "-w", ws, "--segmentation", "seg", "--agglomeration", "missing")
    assert code == 2 and "no layer 'missing'" in err

