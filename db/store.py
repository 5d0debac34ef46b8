"""The proofreading store's public API: every reader and writer of proofreading state goes through here.

This module is the facade; the code lives in modules by concern (callers import only this one):

    db.handle         Store (engine + dataset), the session helpers every module shares
    db.users          users, roles (one enum) and tokens
    db.graph_store    loading supervoxels and their adjacency graph; layers; point -> supervoxel
    db.edits          merge, split, undo, redo, group commit, replay: one code path
    db.annotations    neuron status, cell type, name, notes, bookmarks/to-dos: anchored, logged, undoable
    db.review         review queues: merge candidates, leased to one reviewer at a time, answers kept
    db.mincut         the split's minimum cut and connected components (numpy/scipy, no database)
    db.edit_log       the edit log: history, lineage, latest edit
    db.components     neurons as components: union by size, interval-stamped membership (why: there)
    db.time_travel    roots and supervoxel sets now and as of any edit or time; what edits changed
    db.synapse_store  synapse storage and the connectivity tables
    db.sql            SQL helpers: chunked IN lists, bulk inserts, driver-level reads

Model
-----
* A *supervoxel* is one segment of the FFN segmentation (its id is the label in the segmentation
  layer). The *adjacency graph* (region adjacency graph) links touching supervoxels, with the
  contact area in nm^2 and an optional boundary score in [0, 1] (1 = a clear membrane).
* A *neuron* is a connected component of the active *agglomeration edges* between supervoxels,
  stored as a *component* whose id survives the edits that keep most of it (db.components), so
  an edit writes rows for what it moves, not for the whole neuron. Each neuron has a *root id*. A root id names one immutable set of supervoxels: any edit that
  touches a neuron retires its root id and gives the result(s) new ids, never reused; neurons an
  edit does not touch keep theirs. The root id is therefore also the neuron's *version*.
* Every write is one transaction and one row of the *edit log*. Edit ids increase in commit
  order (writers to a dataset are serialised), so "as of edit N" means "after edits 1..N";
  edit 0 is the freshly built graph. `at` arguments take an edit id (int), an ISO-8601 time
  string or a datetime (the last edit at or before that time), or None for now.
* Users have a role: "admin", "proofreader" or "viewer" (read only). Write functions take the
  acting `user` as a name or a `User`; a proofreader may undo/redo only their own edits.

Errors (all from `volumes.errors`, each with its exit and HTTP status): `InputError` for bad input,
its subclass `NotFoundError` for an unknown supervoxel, root, edit or user; `RefusedError` for
valid requests the store refuses (already one neuron, already undone), `ForbiddenError` for
another user's edit or a role that may not edit, `UnauthorizedError` for an unknown or expired
token, and `ConflictError` when the neurons an edit saw changed since. A refused or failed call
leaves the store unchanged.

Typical use::

    from db import store
    s = store.open_store(workspace)                 # or store.open_store("postgresql+psycopg://...")
    token = store.add_user(s, "ana", "proofreader")  # shown once, stored hashed
    result = store.merge(s, 12, 34, user="ana", seen_roots=[root_a, root_b])
    store.split(s, sources=[12], sinks=[34], user="ana", preview=True)   # what would be cut
    store.undo(s, result.edit_id, user="ana")
    store.roots_of(s, [12, 34], at=result.edit_id)   # {12: root, 34: root}
    store.synapse_table(s, at="2026-01-01T12:00:00Z") # pandas DataFrame

Functions (all take the Store first):
    open_store, build_graph, add_layer, add_user, user_for_token, get_user,
    merge, merge_points, split, undo, redo,
    roots_of, root_of, supervoxels_of, equivalence_groups, neurons_of_several, neuron_changes, lineage,
    neuron_summary, retired_among, successors, strongest_contact,
    latest_edit_id, resolve_at,
    history, replay,
    set_neuron_field, add_annotation, remove_annotation, annotations, neuron_fields, annotation_table,
    build_merge_queue, next_task, answer_task, queue_progress,
    add_synapses, synapses_of_root, synapse_table, synapse_columns, synapse_signature, edge_table, neuron_table, supervoxel_at
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from db.annotations import (DEFAULT_STATUSES, KINDS, NEURON_FIELDS, Annotation, AnnotationEdit, add_annotation,
                            annotation_table, annotations, neuron_fields, remove_annotation, set_neuron_field)
from db.connection import (check_existing_store, ensure_dataset, make_engine, migrate, require_existing_database,
                           stop_checkpointer)
from db.edit_log import EditRecord, history, latest_edit_id, lineage
from db.edits import EditResult, apply_edits, merge, merge_points, redo, replay, split, undo
from db.graph_store import add_layer, build_graph, strongest_contact, supervoxel_at
from db.handle import DEFAULT_DATASET, At, Store
from db.review import ANSWERS, QUEUES, Task, answer_task, build_merge_queue, next_task, queue_progress
from db.synapse_store import (SYNAPSE_BLOCK_LAYOUT, SYNAPSE_BLOCK_ROWS, SYNAPSE_COLUMNS, SYNAPSE_POINT_COLUMNS,
                              add_synapses, decode_synapse_block, edge_table, encode_synapse_block, neuron_table,
                              synapse_columns, synapse_signature, synapse_table, synapses_of_root)
from db.time_travel import (NeuronSummary, equivalence_groups, neuron_changes, neuron_summary, neurons_of_several,
                            resolve_at, retired_among, root_of, roots_of, successors, supervoxels_of)
from db.users import ROLES, Role, add_user, get_user, list_users, remove_user, reset_token, token_digest, user_for_token
from volumes.errors import ConflictError, ForbiddenError, InputError, NotFoundError, RefusedError, UnauthorizedError

if TYPE_CHECKING:
    from volumes.workspace import Workspace

__all__ = [
    "Annotation", "AnnotationEdit", "DEFAULT_STATUSES", "KINDS", "NEURON_FIELDS", "add_annotation", "annotation_table",
    "annotations",
    "neuron_fields", "remove_annotation", "set_neuron_field",
    "ANSWERS", "QUEUES", "Task", "answer_task", "build_merge_queue", "next_task", "queue_progress",
    "At", "ConflictError", "DEFAULT_DATASET", "EditRecord", "EditResult", "ForbiddenError", "InputError",
    "NotFoundError", "ROLES", "RefusedError", "Role", "SYNAPSE_BLOCK_LAYOUT", "SYNAPSE_BLOCK_ROWS", "SYNAPSE_COLUMNS",
    "SYNAPSE_POINT_COLUMNS", "Store", "UnauthorizedError", "add_layer", "add_synapses", "add_user", "apply_edits",
    "build_graph", "decode_synapse_block", "edge_table", "encode_synapse_block", "equivalence_groups", "get_user",
    "history", "latest_edit_id", "lineage", "list_users", "merge", "merge_points", "neuron_changes", "neuron_table",
    "neurons_of_several", "open_store",
    "NeuronSummary", "neuron_summary", "retired_among", "strongest_contact", "successors",
    "redo", "remove_user", "replay", "reset_token", "resolve_at", "root_of", "roots_of", "split", "supervoxel_at",
    "supervoxels_of", "synapse_columns", "synapse_signature", "synapse_table", "synapses_of_root", "token_digest", "undo", "user_for_token",
]


def open_store(target: "str | Path | Workspace", dataset: str = DEFAULT_DATASET, create: bool = True) -> Store:
    """Open (and migrate to the latest schema) the store of a workspace or SQLAlchemy URL.

    SQLite gets WAL and a busy timeout so several processes can write; PostgreSQL is the team
    backend. `dataset` selects the dataset every call on this Store works on. Only commands that
    build a workspace pass `create=True`; the others (`create=False`) refuse a store that is
    missing, emptied, not a connectome store or corrupted, naming the file, instead of silently
    starting a new, empty one.
    """
    url = _database_url(target)
    if not create:
        require_existing_database(url)
    engine = make_engine(url)
    try:
        if not create:
            check_existing_store(engine)
        migrate(engine)
        return Store(engine, dataset, ensure_dataset(engine, dataset, create))
    except BaseException:
        stop_checkpointer(engine)
        engine.dispose()
        raise


def _database_url(target: "str | Path | Workspace") -> str:
    from volumes.workspace import Workspace

    if isinstance(target, Workspace):
        return target.database_url
    if isinstance(target, str) and "://" in target:
        return target
    return Workspace(target).database_url
