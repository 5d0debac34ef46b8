"""Connectivity export: synapse, edge, neuron and annotation tables as CSV, Parquet or neuPrint bulk-import CSVs.

Every file is written to a temporary name and renamed into place, so a reader never sees half a
table. In CSV (and JSON) 64-bit ids are written as exact decimal strings, never as floats;
positions are "[z, y, x]" in nm.
"""
from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from db import store as S
from volumes.errors import InputError
from volumes.atomic import atomic_path

FORMATS = ("csv", "parquet", "neuprint")
ID_COLUMNS = ("id", "pre_pt_supervoxel_id", "post_pt_supervoxel_id", "pre_pt_root_id", "post_pt_root_id",
              "pre_root_id", "post_root_id", "root_id", "pt_supervoxel_id", "pt_root_id", "set_on_root_id")


def export_connectivity(store: S.Store, out_dir: str | Path, file_format: str, at: S.At = None) -> dict[str, Path]:
    """Write synapses.*, edges.*, neurons.* and annotations.* (plus Neuprint_*.csv for neuprint); returns name -> path."""
    if file_format not in FORMATS:
        raise InputError(f"export format must be one of {', '.join(FORMATS)}, not {file_format!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    edit = S.resolve_at(store, at)
    synapses = S.synapse_table(store, edit)
    tables = {"synapses": synapses, "edges": S.edge_table(store, edit, synapses),
              "neurons": S.neuron_table(store, edit, synapses), "annotations": S.annotation_table(store, edit)}
    written = {}
    for name, table in tables.items():
        if file_format == "parquet":
            written[name] = write_parquet(table, out / f"{name}.parquet")
        else:
            written[name] = write_csv(table, out / f"{name}.csv")
    if file_format == "neuprint":
        records = S.history(store, since_edit=max(0, edit - 1), limit=1) if edit else []
        last_edit = records[0].time.isoformat() if records else ""
        for name, table in neuprint_tables(tables, store.dataset, last_edit).items():
            written[name] = _write_atomically(out / f"{name}.csv", lambda tmp, t=table: t.to_csv(tmp, index=False))
    return written


def _write_atomically(path: Path, write) -> Path:
    with atomic_path(path) as temporary:
        write(temporary)
    return path


def write_table(table: pd.DataFrame, target: "Path | BinaryIO", file_format: str) -> None:
    """The one writer of a CSV or Parquet table, for `connectome export`'s files and the API's downloads."""
    if file_format == "parquet":
        pq.write_table(arrow_table(table), target)
    elif file_format == "csv":
        csv_frame(table).to_csv(target, index=False)
    else:
        raise InputError(f"table format must be csv or parquet, not {file_format!r}")


def arrow_table(table: pd.DataFrame) -> pa.Table:
    """The Parquet form: ids uint64, position lists fixed-size lists of float64."""
    # Without pandas' metadata: its note on the fixed-size-list dtype makes pandas fail to read the file back.
    arrow = pa.Table.from_pandas(table, preserve_index=False).replace_schema_metadata(None)
    for index, name in enumerate(arrow.column_names):
        if name in ID_COLUMNS:  # ids are unsigned 64-bit, as in CAVE tables (the cast refuses a negative one)
            arrow = arrow.set_column(index, name, arrow.column(index).cast(pa.uint64()))
    return arrow


def write_parquet(table: pd.DataFrame, path: Path) -> Path:
    return _write_atomically(path, lambda tmp: write_table(table, tmp, "parquet"))


def csv_frame(table: pd.DataFrame) -> pd.DataFrame:
    """The table with ids as decimal strings and positions as "[z, y, x]" strings."""
    out = {}
    for column in table.columns:
        values = table[column]
        if column in ID_COLUMNS:
            out[column] = values.astype(np.int64).astype(str)
        elif column.endswith("_position"):
            points = positions_zyx(values)
            text = [pd.Series(points[:, axis]).astype(str) for axis in range(3)]
            out[column] = "[" + text[0] + ", " + text[1] + ", " + text[2] + "]"
        else:
            out[column] = values
    return pd.DataFrame(out)


def write_csv(table: pd.DataFrame, path: Path) -> Path:
    return _write_atomically(path, lambda tmp: write_table(table, tmp, "csv"))


def neuprint_tables(tables: dict[str, pd.DataFrame], dataset: str, last_edit: str = "") -> dict[str, pd.DataFrame]:
    """neuPrint's neo4j bulk-import CSVs (Segment/Synapse nodes, ConnectsTo/SynapsesTo/Contains edges).

    Each synapse row becomes two Synapse nodes, its pre site (id 2*id) and post site (2*id+1);
    locations are neo4j points in nm (x, y, z).
    """
    synapses, edges, neurons = tables["synapses"], tables["edges"], tables["neurons"]
    strings = lambda values: pd.Series(np.asarray(values, dtype=np.int64)).astype(str)  # noqa: E731
    downstream = edges.groupby("pre_root_id")["n_synapses"].sum()
    upstream = edges.groupby("post_root_id")["n_synapses"].sum()
    segments = pd.DataFrame({
        ":ID(Body-ID)": strings(neurons["root_id"]),
        "bodyId:long": strings(neurons["root_id"]),
        "pre:int": neurons["n_pre"].to_numpy(),
        "post:int": neurons["n_post"].to_numpy(),
        "upstream:int": upstream.reindex(neurons["root_id"], fill_value=0).to_numpy(),
        "downstream:int": downstream.reindex(neurons["root_id"], fill_value=0).to_numpy(),
        "size:long": neurons["voxels"].to_numpy(),
        "status:string": neurons["status"].to_numpy(),
        "type:string": neurons["cell_type"].to_numpy(),
        "instance:string": neurons["name"].to_numpy(),
        ":Label": np.where((neurons["n_pre"] + neurons["n_post"]).to_numpy() > 0,
                           f"Segment;Neuron;{dataset}_Segment;{dataset}_Neuron", f"Segment;{dataset}_Segment"),
    })
    connections = pd.DataFrame({":START_ID(Body-ID)": strings(edges["pre_root_id"]),
                                "weight:int": edges["n_synapses"].to_numpy(),
                                ":END_ID(Body-ID)": strings(edges["post_root_id"])})
    ids = synapses["id"].to_numpy(dtype=np.int64)
    pre_site, post_site = strings(2 * ids), strings(2 * ids + 1)
    sites = pd.DataFrame({
        ":ID(Syn-ID)": pd.concat([pre_site, post_site], ignore_index=True),
        "type:string": ["pre"] * len(ids) + ["post"] * len(ids),
        "confidence:float": np.concatenate([synapses["score"].to_numpy()] * 2),
        "location:point{srid:9157}": pd.concat([_neo4j_points(synapses["pre_pt_position"]),
                                                _neo4j_points(synapses["post_pt_position"])], ignore_index=True),
        ":Label": f"Synapse;{dataset}_Synapse",
    })
    pre_set = strings(synapses["pre_pt_root_id"]) + "_" + strings(synapses["post_pt_root_id"]) + "_pre"
    post_set = strings(synapses["post_pt_root_id"]) + "_" + strings(synapses["pre_pt_root_id"]) + "_post"
    set_owner = pd.DataFrame({"set": pd.concat([pre_set, post_set], ignore_index=True),
                              "body": pd.concat([strings(synapses["pre_pt_root_id"]),
                                                 strings(synapses["post_pt_root_id"])], ignore_index=True)})
    unique_sets = set_owner.drop_duplicates("set")
    return {
        "Neuprint_Neurons": segments,
        "Neuprint_Neuron_Connections": connections,
        "Neuprint_Synapses": sites,
        "Neuprint_Synapse_Connections": pd.DataFrame({":START_ID(Syn-ID)": pre_site, ":END_ID(Syn-ID)": post_site}),
        "Neuprint_SynapseSet": pd.DataFrame({":ID(SynSet-ID)": unique_sets["set"].to_numpy(),
                                             ":Label": f"SynapseSet;{dataset}_SynapseSet"}),
        "Neuprint_Neuron_to_SynapseSet": pd.DataFrame({":START_ID(Body-ID)": unique_sets["body"].to_numpy(),
                                                       ":END_ID(SynSet-ID)": unique_sets["set"].to_numpy()}),
        "Neuprint_SynapseSet_to_Synapses": pd.DataFrame({":START_ID(SynSet-ID)": set_owner["set"].to_numpy(),
                                                         ":END_ID(Syn-ID)": pd.concat([pre_site, post_site],
                                                                                      ignore_index=True).to_numpy()}),
        # each A -> B pre set to the matching B <- A post set
        "Neuprint_SynapseSet_to_SynapseSet": pd.DataFrame({":START_ID(SynSet-ID)": pre_set.to_numpy(),
                                                           ":END_ID(SynSet-ID)": post_set.to_numpy()}).drop_duplicates(),
        "Neuprint_Meta": pd.DataFrame({":ID(Meta-ID)": [dataset], "dataset:string": [dataset],
                                       "totalPreCount:int": [len(ids)], "totalPostCount:int": [len(ids)],
                                       "lastDatabaseEdit:string": [last_edit], ":Label": [f"Meta;{dataset}_Meta"]}),
    }


def positions_zyx(positions: pd.Series) -> np.ndarray:
    """An (n, 3) array from a column of 3-element position lists."""
    if len(positions) == 0:
        return np.zeros((0, 3), dtype=np.float64)
    array = pa.array(positions.array)
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    return np.asarray(array.flatten(), dtype=np.float64).reshape(-1, 3)


def _neo4j_points(positions: pd.Series) -> pd.Series:
    """neo4j point literals {x:.., y:.., z:..} from z, y, x positions."""
    points = positions_zyx(positions)
    text = [pd.Series(points[:, axis]).astype(str) for axis in range(3)]
    return "{x:" + text[2] + ", y:" + text[1] + ", z:" + text[0] + "}"
