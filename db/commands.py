"""CLI of the proofreading store: `connectome graph|edit|user|export ...`.

Edits print the new edit id; a refusal prints one line and exits 1, bad input exits 2.
"""
from __future__ import annotations

import argparse
import json
import sys

from volumes.errors import InputError
from volumes.ids import parse_id, parse_id_list

# db.store (pandas, SQLAlchemy) is imported by the handlers only, so that every other
# `connectome` command starts without paying for it.


def register_init(subparsers: argparse._SubParsersAction) -> None:
    """`connectome init`: a workspace directory and its store (the one command, beside the builders, that makes a store)."""
    init = subparsers.add_parser("init", help="create a workspace directory")
    init.add_argument("directory", help="workspace directory to create (an existing one is kept as it is)")
    init.set_defaults(func=run_init)


def run_init(args: argparse.Namespace) -> int:
    from db import store
    from volumes.workspace import Workspace

    workspace = Workspace.init(args.directory)
    store.open_store(workspace, create=True).close()  # the one command (beside the builders) that makes a store
    print(f"workspace {workspace.root}")
    print(f"  config   {workspace.root / 'connectome.toml'}")
    print(f"  layers   {workspace.layers_dir}")
    print(f"  database {workspace.database_url}")
    return 0


def register(subparsers: argparse._SubParsersAction, workspace: argparse.ArgumentParser) -> None:
    _register_graph(subparsers, workspace)
    _register_edit(subparsers, workspace)
    _register_annotate(subparsers, workspace)
    _register_review(subparsers, workspace)
    _register_user(subparsers, workspace)
    _register_export(subparsers, workspace)


def _open(args: argparse.Namespace):
    from db import store as S
    from volumes.workspace import Workspace

    return S.open_store(Workspace(args.workspace), create=False)


def _id(text: str) -> int:
    """A positive id in ASCII digits (volumes.ids, the API's parser too), or an argparse error."""
    try:
        return parse_id(text, "id")
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _id_list(text: str) -> list[int]:
    """'12,34' -> [12, 34], or an argparse error naming the bad item."""
    try:
        return parse_id_list(text, "supervoxel id")
    except InputError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated supervoxel ids: {exc}") from None


# ---------------------------------------------------------------- graph

def _register_graph(subparsers, workspace: argparse.ArgumentParser) -> None:
    graph = subparsers.add_parser("graph", help="the supervoxel adjacency graph of the proofreading store")
    actions = graph.add_subparsers(dest="graph_command", metavar="ACTION")
    actions.required = True
    build = actions.add_parser("build", parents=[workspace], help="load supervoxels and their contacts from a segmentation layer")
    build.add_argument("--segmentation", required=True, help="segmentation layer whose labels are the supervoxels")
    build.add_argument("--boundary", help="optional layer scoring boundaries (higher = membrane), e.g. FFN 1-probability")
    build.add_argument("--agglomeration", metavar="LAYER",
                       help="optional segmentation layer whose segments are the starting neurons (each supervoxel "
                            "joins the segment covering most of it), e.g. an FFN segmentation over an oversegmentation")
    build.set_defaults(func=_graph_build)


def _graph_build(args: argparse.Namespace) -> int:
    from db.workspace_graph import build_workspace_graph
    from volumes.workspace import Workspace

    counts = build_workspace_graph(Workspace(args.workspace), args.segmentation, args.boundary, args.agglomeration)
    print(f"{counts['supervoxels']} supervoxels, {counts['adjacencies']} adjacencies"
          + (f", {counts['neurons']} neurons" if args.agglomeration else ""))
    return 0


# ---------------------------------------------------------------- edit

def _register_edit(subparsers, workspace: argparse.ArgumentParser) -> None:
    edit = subparsers.add_parser("edit", help="merge, split, undo and redo neurons; roots and history")
    actions = edit.add_subparsers(dest="edit_command", metavar="ACTION")
    actions.required = True

    merge = actions.add_parser("merge", parents=[workspace], help="join the neurons of two supervoxels; prints the edit id")
    merge.add_argument("supervoxel_a", type=_id, help="a supervoxel of the first neuron")
    merge.add_argument("supervoxel_b", type=_id, help="a supervoxel of the second neuron")
    merge.set_defaults(func=_edit_merge)

    split = actions.add_parser("split", parents=[workspace], help="separate sources from sinks by a minimum cut; prints the edit id")
    split.add_argument("--sources", type=_id_list, required=True, metavar="SV,...", help="supervoxels that stay on one side")
    split.add_argument("--sinks", type=_id_list, required=True, metavar="SV,...", help="supervoxels that go to the other side")
    split.add_argument("--preview", action="store_true", help="print the links the cut would remove; change nothing")
    split.set_defaults(func=_edit_split)

    for name, verb in (("undo", "reverse"), ("redo", "re-apply")):
        action = actions.add_parser(name, parents=[workspace], help=f"{verb} an edit by id; prints the new edit id")
        action.add_argument("edit_id", type=_id, help="the edit (a merge or split) to act on; see 'edit history'")
        action.set_defaults(func=_edit_undo_redo, operation=name)

    for action in (merge, split, *(actions.choices[n] for n in ("undo", "redo"))):  # each has --workspace already
        action.add_argument("--user", required=True, help="the acting user (see 'connectome user add')")
        action.add_argument("--seen-roots", type=_id_list, metavar="ROOT,...",
                            help="root ids you based the edit on; refused with a conflict if they changed since")

    roots = actions.add_parser("roots", parents=[workspace], help="print 'supervoxel root' lines, now or as of an edit or time")
    roots.add_argument("supervoxels", type=_id, nargs="+", metavar="SV_ID", help="supervoxel ids")
    roots.add_argument("--at", help="edit id or ISO time (default: now)")
    roots.set_defaults(func=_edit_roots)

    history = actions.add_parser("history", parents=[workspace], help="print the edit log")
    history.add_argument("--user", help="only this user's edits")
    history.add_argument("--json", action="store_true", help="one JSON array (ids as strings)")
    history.set_defaults(func=_edit_history)


def _edit_merge(args: argparse.Namespace) -> int:
    from db import store as S

    with _open(args) as store:
        result = S.merge(store, args.supervoxel_a, args.supervoxel_b, args.user, args.seen_roots)
    print(result.edit_id)
    return 0


def _edit_split(args: argparse.Namespace) -> int:
    from db import store as S

    with _open(args) as store:
        result = S.split(store, args.sources, args.sinks, args.user, preview=args.preview, seen_roots=args.seen_roots)
    if args.preview:
        for a, b in result.removed_edges:
            print(f"cut {a} {b}")
        for group in result.groups:
            print("neuron " + " ".join(map(str, group)))
    else:
        print(result.edit_id)
    return 0


def _edit_undo_redo(args: argparse.Namespace) -> int:
    from db import store as S

    action = S.undo if args.operation == "undo" else S.redo
    with _open(args) as store:
        result = action(store, args.edit_id, args.user, args.seen_roots)
    print(result.edit_id)
    return 0


def _edit_roots(args: argparse.Namespace) -> int:
    from db import store as S

    with _open(args) as store:
        roots = S.roots_of(store, args.supervoxels, at=args.at)
    for sv in args.supervoxels:
        print(f"{sv} {roots[sv]}")
    return 0


def _edit_history(args: argparse.Namespace) -> int:
    from db import store as S

    with _open(args) as store:
        records = S.history(store, user=args.user)
    if args.json:
        json.dump([record.as_json() for record in records], sys.stdout, indent=1)
        print()
        return 0
    for record in records:
        target = f" edit {record.parent_id}" if record.parent_id else ""
        arguments = " ".join(f"{key}={','.join(map(str, value)) if isinstance(value, list) else value}"
                             for key, value in record.arguments.items() if key != "edit")
        undone = " (undone)" if record.undone else ""
        print(f"{record.id} {record.time.isoformat(timespec='seconds')} {record.user} {record.operation}{target} "
              f"{arguments}{undone}".replace("  ", " ").rstrip())
    return 0


# ---------------------------------------------------------------- annotate

def _register_annotate(subparsers, workspace: argparse.ArgumentParser) -> None:
    annotate = subparsers.add_parser("annotate", help="neuron status, cell type, name and notes; bookmarks and to-dos")
    actions = annotate.add_subparsers(dest="annotate_command", metavar="ACTION")
    actions.required = True
    field = actions.add_parser("set", parents=[workspace], help="set a neuron's status, cell_type or name; prints the edit id")
    field.add_argument("supervoxel", type=_id, help="a supervoxel of the neuron (the annotation's anchor)")
    field.add_argument("field", choices=["status", "cell_type", "name"], help="which field")
    field.add_argument("value", help="the value (a status from [proofreading] statuses in connectome.toml)")
    field.set_defaults(func=_annotate_set)
    clear = actions.add_parser("clear", parents=[workspace], help="clear a neuron's status, cell_type or name")
    clear.add_argument("supervoxel", type=_id, help="a supervoxel of the neuron")
    clear.add_argument("field", choices=["status", "cell_type", "name"], help="which field")
    clear.set_defaults(func=_annotate_set, value=None)
    note = actions.add_parser("note", parents=[workspace], help="add a note to a neuron; prints the edit id")
    note.add_argument("supervoxel", type=_id, help="a supervoxel of the neuron")
    note.add_argument("text", help="the note (at most 2,000 characters)")
    note.set_defaults(func=_annotate_add, kind="note", position=None)
    point = actions.add_parser("point", parents=[workspace], help="add a bookmark or to-do at a position in nm")
    point.add_argument("position", type=_position, metavar="Z,Y,X", help="position in nm")
    point.add_argument("text", help="what is there (at most 2,000 characters)")
    point.add_argument("--kind", choices=["bookmark", "todo"], default="bookmark", help="bookmark (default) or todo")
    point.add_argument("--supervoxel", type=_id, help="tie it to this supervoxel's neuron")
    point.set_defaults(func=_annotate_add)
    remove = actions.add_parser("remove", parents=[workspace], help="end an annotation by id (undo it with 'edit undo')")
    remove.add_argument("annotation_id", type=_id, help="the annotation's id (see 'annotate list')")
    remove.set_defaults(func=_annotate_remove)
    for action in (field, clear, note, point, remove):
        action.add_argument("--user", required=True, help="the acting user")
    listing = actions.add_parser("list", parents=[workspace], help="the annotations now or as of an edit or time")
    listing.add_argument("--root", type=_id, help="only this neuron's (as of --at)")
    listing.add_argument("--kind", action="append", help="only these kinds (repeatable)")
    listing.add_argument("--at", help="edit id or ISO time (default: now)")
    listing.add_argument("--json", action="store_true", help="one JSON array (ids as strings)")
    listing.set_defaults(func=_annotate_list)


def _position(text: str) -> tuple[float, float, float]:
    try:
        z, y, x = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a position Z,Y,X in nm, not {text!r}") from None
    return z, y, x


def _annotate_set(args: argparse.Namespace) -> int:
    from db import store as S
    from volumes.workspace import Workspace

    statuses = Workspace(args.workspace).statuses
    with _open(args) as store:
        print(S.set_neuron_field(store, args.supervoxel, args.field, args.value, args.user, statuses=statuses).edit_id)
    return 0


def _annotate_add(args: argparse.Namespace) -> int:
    from db import store as S

    with _open(args) as store:
        print(S.add_annotation(store, args.kind, args.text, args.user, supervoxel=args.supervoxel,
                               position_nm=args.position).edit_id)
    return 0


def _annotate_remove(args: argparse.Namespace) -> int:
    from db import store as S

    with _open(args) as store:
        print(S.remove_annotation(store, args.annotation_id, args.user).edit_id)
    return 0


def _annotate_list(args: argparse.Namespace) -> int:
    from db import store as S

    with _open(args) as store:
        found = S.annotations(store, at=args.at, root=args.root, kinds=args.kind)
    if args.json:
        json.dump([item.as_json() for item in found], sys.stdout, indent=1)
        print()
        return 0
    for item in found:
        where = f"neuron {item.root}" if item.root is not None else "no neuron"
        at = "" if item.position_nm is None else " at " + ",".join(f"{v:g}" for v in item.position_nm)
        flag = " (set on an earlier version)" if item.earlier_version else ""
        print(f"{item.id} {item.kind} {item.value!r} {where}{at} by {item.user} in edit {item.edit_id}{flag}")
    return 0


# ---------------------------------------------------------------- review

def _register_review(subparsers, workspace: argparse.ArgumentParser) -> None:
    review = subparsers.add_parser("review", help="review queues: merge candidates, one reviewer per task")
    actions = review.add_subparsers(dest="review_command", metavar="ACTION")
    actions.required = True
    build = actions.add_parser("build", parents=[workspace], help="queue the most likely merges; prints how many")
    build.add_argument("--limit", type=_id, default=100_000, help="at most this many new tasks (default 100000)")
    build.set_defaults(func=_review_build)
    task = actions.add_parser("next", parents=[workspace], help="lease the next task: prints 'TASK SV_A SV_B'")
    task.add_argument("--user", required=True, help="the reviewer")
    task.set_defaults(func=_review_next)
    answer = actions.add_parser("answer", parents=[workspace], help="accept (merge), reject or skip a leased task")
    answer.add_argument("task_id", type=_id, help="the task 'review next' printed")
    answer.add_argument("answer", choices=["accept", "reject", "skip"], help="accept merges the two")
    answer.add_argument("--user", required=True, help="the reviewer holding the task")
    answer.set_defaults(func=_review_answer)
    progress = actions.add_parser("progress", parents=[workspace], help="tasks per queue, state, answer and user")
    progress.set_defaults(func=_review_progress)


def _review_build(args: argparse.Namespace) -> int:
    from db import store as S

    with _open(args) as store:
        print(S.build_merge_queue(store, limit=args.limit))
    return 0


def _review_next(args: argparse.Namespace) -> int:
    from db import store as S

    with _open(args) as store:
        task = S.next_task(store, args.user)
    if task is None:
        print("no task left", file=sys.stderr)
        return 1
    print(f"{task.id} {task.supervoxels[0]} {task.supervoxels[1]}")
    return 0


def _review_answer(args: argparse.Namespace) -> int:
    from db import store as S

    with _open(args) as store:
        edit_id = S.answer_task(store, args.task_id, args.user, args.answer)
    print(edit_id if edit_id is not None else args.answer)
    return 0


def _review_progress(args: argparse.Namespace) -> int:
    from db import store as S

    with _open(args) as store:
        for row in S.queue_progress(store):
            print(f"{row['queue']} {row['state']} {row['answer'] or '-'} {row['user'] or '-'} {row['tasks']}")
    return 0


# ---------------------------------------------------------------- user

def _register_user(subparsers, workspace: argparse.ArgumentParser) -> None:
    user = subparsers.add_parser("user", help="users of the proofreading store: add, list, remove, reset-token")
    actions = user.add_subparsers(dest="user_command", metavar="ACTION")
    actions.required = True
    add = actions.add_parser("add", parents=[workspace], help="create a user and print their token (shown once)")
    add.add_argument("name", help="user name (letters, digits, '_', '.', '@' or '-')")
    add.add_argument("--role", required=True, help="admin, proofreader or viewer (read only)")
    add.add_argument("--expires-in-days", type=_days, help="the token stops working after this many days (default: never)")
    add.set_defaults(func=_user_add)
    listing = actions.add_parser("list", parents=[workspace], help="every user: name, role, created, token expiry, removed")
    listing.set_defaults(func=_user_list)
    remove = actions.add_parser("remove", parents=[workspace], help="revoke a user's token for good; their edits stay in the history")
    remove.add_argument("name", help="user to remove")
    remove.set_defaults(func=_user_remove)
    reset = actions.add_parser("reset-token", parents=[workspace], help="give a user a new token (the old one stops working) and print it")
    reset.add_argument("name", help="user whose token to replace (a removed user is re-activated)")
    reset.add_argument("--expires-in-days", type=_days, help="the new token stops working after this many days (default: never)")
    reset.set_defaults(func=_user_reset_token)


def _days(text: str) -> float:
    try:
        days = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of days, got {text!r}") from None
    if not 0 < days <= 36_500:
        raise argparse.ArgumentTypeError(f"days must be more than 0 and at most 36500, got {text!r}")
    return days


def _expiry(days: float | None):
    from datetime import datetime, timedelta, timezone

    return None if days is None else datetime.now(timezone.utc) + timedelta(days=days)


def _user_add(args: argparse.Namespace) -> int:
    from db import store as S

    with _open(args) as store:
        print(S.add_user(store, args.name, args.role, expires_at=_expiry(args.expires_in_days)))
    return 0


def _user_list(args: argparse.Namespace) -> int:
    from db import store as S

    with _open(args) as store:
        users = S.list_users(store)
    for user in users:
        expires = user.token_expires_at.isoformat(timespec="seconds") if user.token_expires_at else "never"
        state = f"removed {user.revoked_at.isoformat(timespec='seconds')}" if user.revoked_at else "active"
        print(f"{user.name}\t{user.role}\tcreated {user.created_at.isoformat(timespec='seconds')}\texpires {expires}\t{state}")
    return 0


def _user_remove(args: argparse.Namespace) -> int:
    from db import store as S

    with _open(args) as store:
        S.remove_user(store, args.name)
    print(f"removed {args.name}: their token no longer works (a running server forgets it within seconds)")
    return 0


def _user_reset_token(args: argparse.Namespace) -> int:
    from db import store as S

    with _open(args) as store:
        print(S.reset_token(store, args.name, expires_at=_expiry(args.expires_in_days)))
    return 0


# ---------------------------------------------------------------- export

def _register_export(subparsers, workspace: argparse.ArgumentParser) -> None:
    export = subparsers.add_parser("export", parents=[workspace], help="write synapse, edge and neuron tables (now or as of an edit)")
    export.add_argument("--format", required=True, help="csv, parquet or neuprint (neuPrint bulk-import CSVs as well)")
    export.add_argument("--out", required=True, help="directory for synapses.*, edges.*, neurons.*")
    export.add_argument("--at", help="edit id or ISO time (default: now)")
    export.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from db.export import export_connectivity

    with _open(args) as store:
        written = export_connectivity(store, args.out, args.format, args.at)
    for path in written.values():
        print(path)
    return 0
