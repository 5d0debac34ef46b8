from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from db.connection import read_session, run_sql, take_ids, write_session
from db.handle import At, DEFAULT_DATASET, Store
from db.annotations import NEURON_FIELDS, neuron_fields
from db.models import Dataset, Supervoxel, SynapseBlock
from db.time_travel import resolve_at_in, root_map, supervoxels_of
from volumes.errors import InputError


SYNAPSE_COLUMNS = ["id", "pre_pt_position", "post_pt_position", "ctr_pt_position", "pre_pt_supervoxel_id",
                   "post_pt_supervoxel_id", "pre_pt_root_id", "post_pt_root_id", "size", "score"]


def add_synapses(target: Any, rows: "Iterable[Mapping[str, Any]] | pd.DataFrame", dataset: str = DEFAULT_DATASET,
                 replace: bool = False) -> int:
    """Insert synapses; `target` is a Store or a SQLAlchemy Session (then the caller commits, and
    `dataset` names the dataset). With `replace`, the dataset's synapses are these alone afterwards
    (in the same transaction: readers see the old set or the new one, never neither).

    Each row: position_nm (z, y, x of the synaptic cleft centre), pre_supervoxel_id,
    post_supervoxel_id, and optionally pre_position_nm, post_position_nm (default: position_nm),
    score (default 1.0), size (voxels, default 0). A DataFrame may instead hold the position
    columns split as position_z_nm, position_y_nm, position_x_nm (likewise pre_/post_).
    Both supervoxels must exist in the dataset. Returns the number of rows inserted.
    """
    columns = _synapse_columns(rows)
    if isinstance(target, Store):
        with write_session(target.engine, target.dataset_id) as session:
            return _insert_synapses(session, target.dataset_id, columns, replace)
    if isinstance(target, Session):
        dataset_id = target.scalar(select(Dataset.id).where(Dataset.name == dataset))
        if dataset_id is None:
            raise InputError(f"no dataset {dataset!r} in the store")
        return _insert_synapses(target, dataset_id, columns, replace)
    raise TypeError(f"add_synapses needs a Store or a Session, not {type(target).__name__}")


def _synapse_columns(rows: "Iterable[Mapping[str, Any]] | pd.DataFrame") -> dict[str, np.ndarray]:
    """Validated column arrays: ctr/pre/post (n, 3) nm, pre/post supervoxel ids, score, size."""
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    if frame.empty:
        return {}

    def points(prefix: str, default: np.ndarray | None) -> np.ndarray:
        if f"{prefix}position_nm" in frame:
            values = np.asarray(frame[f"{prefix}position_nm"].tolist(), dtype=np.float64)
        elif f"{prefix}position_z_nm" in frame:
            values = frame[[f"{prefix}position_{a}_nm" for a in "zyx"]].to_numpy(dtype=np.float64)
        elif default is not None:
            return default
        else:
            raise InputError("each synapse needs position_nm (z, y, x in nm)")
        if values.ndim != 2 or values.shape[1] != 3 or not np.isfinite(values).all():
            raise InputError(f"{prefix}position_nm must be three finite numbers (z, y, x) per synapse")
        return values

    missing = [c for c in ("pre_supervoxel_id", "post_supervoxel_id") if c not in frame]
    if missing:
        raise InputError(f"synapse rows lack {', '.join(missing)}")
    ctr = points("", None)
    columns = {"ctr": ctr, "pre": points("pre_", ctr), "post": points("post_", ctr)}
    for side in ("pre", "post"):
        ids = frame[f"{side}_supervoxel_id"].to_numpy()
        if not np.issubdtype(ids.dtype, np.integer) or (ids <= 0).any():
            raise InputError(f"{side}_supervoxel_id must be positive integers")
        columns[side + "_sv"] = ids.astype(np.int64)
    n = len(frame)
    columns["score"] = frame["score"].to_numpy(dtype=np.float64) if "score" in frame else np.ones(n)
    columns["size"] = frame["size"].to_numpy(dtype=np.float64) if "size" in frame else np.zeros(n)
    return columns


# A stored synapse block (models.SynapseBlock.data): these columns, each contiguous and
# little-endian, one after the other; `count` rows. Points are (count, 3) z, y, x in nm.
SYNAPSE_BLOCK_LAYOUT = (("id", "<i8", 1), ("ctr", "<f8", 3), ("pre", "<f8", 3), ("post", "<f8", 3),
                        ("pre_sv", "<i8", 1), ("post_sv", "<i8", 1), ("score", "<f8", 1), ("size", "<f8", 1))
SYNAPSE_BLOCK_ROWS = 1_000_000  # one block per million: an export reads it without copying (~104 MB)
# The 0001 schema's row columns, named here for the migration test.
SYNAPSE_POINT_COLUMNS = [f"{point}_{axis}_nm" for point in ("ctr", "pre", "post") for axis in "zyx"]


def encode_synapse_block(columns: Mapping[str, np.ndarray]) -> bytes:
    """The columns of SYNAPSE_BLOCK_LAYOUT packed one after another."""
    return b"".join(np.ascontiguousarray(columns[name], dtype=dtype).tobytes() for name, dtype, _ in SYNAPSE_BLOCK_LAYOUT)


def decode_synapse_block(data: bytes, count: int) -> dict[str, np.ndarray]:
    """Views into `data` (no copy): a million synapses decode in microseconds, not seconds of row handling."""
    columns, offset = {}, 0
    for name, dtype, width in SYNAPSE_BLOCK_LAYOUT:
        values = np.frombuffer(data, dtype=dtype, count=count * width, offset=offset)
        columns[name] = values.reshape(count, width) if width > 1 else values
        offset += values.nbytes
    if offset != len(data):
        raise ValueError(f"a synapse block of {count} rows holds {len(data)} bytes, not {offset}")
    return columns


def _insert_synapses(session: Session, dataset_id: int, columns: dict[str, np.ndarray], replace: bool = False) -> int:
    connection = session.connection()
    if replace:
        run_sql(connection, "DELETE FROM synapse_blocks WHERE dataset_id = ?", (dataset_id,))
    if not columns:
        return 0
    known = np.asarray(connection.execute(select(Supervoxel.id).where(Supervoxel.dataset_id == dataset_id))
                       .scalars().all(), dtype=np.int64)
    for side in ("pre", "post"):
        unknown = np.unique(columns[side + "_sv"][~np.isin(columns[side + "_sv"], known)])
        if len(unknown):
            raise InputError(f"unknown {side}-synaptic supervoxel(s) {', '.join(map(str, unknown[:5].tolist()))}")
    count = len(columns["ctr"])
    columns = {**columns, "id": np.arange(count, dtype=np.int64) + take_ids(session, "synapse_id", count)[0]}
    for start in range(0, count, SYNAPSE_BLOCK_ROWS):
        block = {name: values[start:start + SYNAPSE_BLOCK_ROWS] for name, values in columns.items()}
        connection.execute(insert(SynapseBlock), {"dataset_id": dataset_id, "first_synapse_id": int(block["id"][0]),
                                                  "count": len(block["id"]), "data": encode_synapse_block(block)})
    return count


def _points(array: np.ndarray) -> pd.Series:
    """An (n, 3) array as one column of fixed-size lists (Arrow-backed: cheap to build and to write)."""
    values = pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(array).ravel()), 3)
    return pd.Series(pd.arrays.ArrowExtensionArray(values))


def _read_synapses(session: Session, store: Store, supervoxels: Sequence[int] | None = None) -> dict[str, np.ndarray]:
    """The dataset's synapse columns (SYNAPSE_BLOCK_LAYOUT names) in id order; with `supervoxels`, only
    the synapses whose pre- or post-synaptic supervoxel is one of them."""
    connection = session.connection()
    sql = "SELECT first_synapse_id, count, data FROM synapse_blocks WHERE dataset_id = ?"
    if connection.dialect.name == "postgresql":  # binary protocol: bytea as raw bytes, not hex text twice the size
        with connection.connection.driver_connection.cursor() as cursor:
            rows = cursor.execute(sql.replace("?", "%s"), (store.dataset_id,), binary=True).fetchall()
    else:
        rows = run_sql(connection, sql, (store.dataset_id,))
    rows.sort(key=lambda row: row[0])  # sorted here: an ORDER BY makes SQLite copy every block through its sorter
    blocks = [decode_synapse_block(bytes(data), count) for _, count, data in rows]
    if not blocks:
        return decode_synapse_block(b"", 0)
    columns = blocks[0] if len(blocks) == 1 else {name: np.concatenate([b[name] for b in blocks]) for name in blocks[0]}
    if supervoxels is not None:
        wanted = np.asarray(list(supervoxels), dtype=np.int64)
        keep = np.isin(columns["pre_sv"], wanted) | np.isin(columns["post_sv"], wanted)
        columns = {name: values[keep] for name, values in columns.items()}
    return columns


def _root_lookup(svs: np.ndarray, roots: np.ndarray):
    """supervoxel ids -> root ids for the sorted map (svs, roots).

    A dense table when the ids are compact enough (FFN ids are: one gather, no search), else
    binary search; millions of synapse ends are looked up per export.
    """
    if not len(svs):
        return lambda supervoxels: np.zeros(len(supervoxels), dtype=np.int64)
    if svs[-1] <= 8 * len(svs) + 1_000_000:
        table = np.zeros(int(svs[-1]) + 1, dtype=np.int64)
        table[svs] = roots
        return lambda supervoxels: table[supervoxels]
    return lambda supervoxels: roots[np.clip(np.searchsorted(svs, supervoxels), 0, len(svs) - 1)]


def _synapse_frame(session: Session, store: Store, edit: int, supervoxels: Sequence[int] | None = None) -> pd.DataFrame:
    columns = _read_synapses(session, store, supervoxels)
    svs, roots = root_map(session, store, edit)

    root_ids = _root_lookup(svs, roots)
    return pd.DataFrame({
        "id": columns["id"],
        "pre_pt_position": _points(columns["pre"]),
        "post_pt_position": _points(columns["post"]),
        "ctr_pt_position": _points(columns["ctr"]),
        "pre_pt_supervoxel_id": columns["pre_sv"],
        "post_pt_supervoxel_id": columns["post_sv"],
        "pre_pt_root_id": root_ids(columns["pre_sv"]),
        "post_pt_root_id": root_ids(columns["post_sv"]),
        "size": columns["size"],
        "score": columns["score"],
    }, copy=False)  # the columns are fresh (or read-only views of the blocks): no second copy of 10^6 rows


def synapse_table(store: Store, at: At = None) -> "pd.DataFrame":
    """All synapses with CAVE-style columns: id, pre_pt_position, post_pt_position, ctr_pt_position
    (z, y, x in nm, as 3-element lists), pre_pt_supervoxel_id, post_pt_supervoxel_id,
    pre_pt_root_id, post_pt_root_id, size, score; roots as of `at`."""
    with read_session(store.engine) as session:
        return _synapse_frame(session, store, resolve_at_in(session, store, at))


def synapses_of_root(store: Store, root: int, at: At = None) -> "pd.DataFrame":
    """The synapses whose pre- or post-synaptic supervoxel belongs to `root` (synapse_table columns)."""
    members = supervoxels_of(store, root)
    with read_session(store.engine) as session:
        return _synapse_frame(session, store, resolve_at_in(session, store, at), members)


def edge_table(store: Store, at: At = None, synapses: "pd.DataFrame | None" = None) -> "pd.DataFrame":
    """Neuron-to-neuron edges: pre_root_id, post_root_id, n_synapses, size (summed); most synapses first.

    `synapses` (a synapse_table) saves re-reading them."""
    synapses = synapse_table(store, at) if synapses is None else synapses
    edges = (synapses.groupby(["pre_pt_root_id", "post_pt_root_id"], sort=True)
             .agg(n_synapses=("id", "size"), size=("size", "sum")).reset_index()
             .rename(columns={"pre_pt_root_id": "pre_root_id", "post_pt_root_id": "post_root_id"}))
    return edges.sort_values(["n_synapses", "pre_root_id", "post_root_id"], ascending=[False, True, True],
                             kind="stable").reset_index(drop=True)


def neuron_table(store: Store, at: At = None, synapses: "pd.DataFrame | None" = None) -> "pd.DataFrame":
    """One row per neuron as of `at`: root_id, n_supervoxels, voxels, n_pre, n_post (synapse counts), and the
    status, cell_type and name proofreaders set (empty strings where none)."""
    with read_session(store.engine) as session:
        edit = resolve_at_in(session, store, at)
        svs, roots = root_map(session, store, edit)
        sizes = dict(session.execute(select(Supervoxel.id, Supervoxel.size_voxels)
                                     .where(Supervoxel.dataset_id == store.dataset_id)).all())
    synapses = synapse_table(store, edit) if synapses is None else synapses
    neurons = pd.DataFrame({"root_id": roots, "voxels": [sizes[sv] for sv in svs.tolist()]})
    neurons = neurons.groupby("root_id", sort=True).agg(n_supervoxels=("voxels", "size"), voxels=("voxels", "sum"))
    neurons["n_pre"] = synapses["pre_pt_root_id"].value_counts().reindex(neurons.index, fill_value=0).to_numpy()
    neurons["n_post"] = synapses["post_pt_root_id"].value_counts().reindex(neurons.index, fill_value=0).to_numpy()
    fields = neuron_fields(store, edit)
    for field in NEURON_FIELDS:
        neurons[field] = [fields.get(root, {}).get(field, "") for root in neurons.index.tolist()]
    return neurons.reset_index().astype({"n_pre": np.int64, "n_post": np.int64})


def synapse_columns(store: Store) -> dict[str, np.ndarray]:
    """Every synapse of the dataset as column arrays (SYNAPSE_BLOCK_LAYOUT names: id, ctr, pre, post
    z, y, x nm, pre_sv, post_sv, score, size), in id order: for indices built in memory."""
    with read_session(store.engine) as session:
        return _read_synapses(session, store)


def synapse_signature(store: Store) -> tuple[int, int, int]:
    """(blocks, synapses, largest first id): changes whenever the dataset's synapse set does (ids never repeat)."""
    with read_session(store.engine) as session:
        row = run_sql(session.connection(), "SELECT COUNT(*), COALESCE(SUM(count), 0), COALESCE(MAX(first_synapse_id), 0) "
                      "FROM synapse_blocks WHERE dataset_id = ?", (store.dataset_id,))[0]
    return int(row[0]), int(row[1]), int(row[2])
