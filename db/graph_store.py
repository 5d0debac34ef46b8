from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from sqlalchemy import select

from db.components import start_components
from db.connection import read_session, run_sql, take_ids, write_session
from db.graph import region_graph
from db.handle import Store
from db.mincut import component_labels, edge_capacities
from db.models import Layer, Supervoxel
from db.sql import insert_tuples
from volumes.errors import InputError, NotFoundError, RefusedError


def build_graph(store: Store, labels_zyx: np.ndarray, resolution_nm: Sequence[float], image: np.ndarray | None = None,
                offset_nm: Sequence[float] = (0.0, 0.0, 0.0), agglomeration: Mapping[int, int] | None = None) -> dict[str, int]:
    """Load supervoxels (size, bbox, centroid) and their adjacency graph from a label volume.

    `image`, when given, is a boundary map of the same shape (higher = more boundary-like,
    e.g. 1 - FFN probability, any numeric range; it is rescaled to [0, 1]). Refuses a dataset
    that already has supervoxels. Each supervoxel starts as its own neuron (as of edit 0), or,
    with `agglomeration` (supervoxel id -> group id, e.g. an agglomeration made elsewhere), in
    its group's neuron: every touching pair inside a group is linked, and a group whose
    supervoxels do not all touch becomes one neuron per connected piece (a neuron is connected).
    Returns counts: {"supervoxels": n, "adjacencies": m, "neurons": k}.
    """
    graph = region_graph(labels_zyx, resolution_nm, image, offset_nm)
    dataset_id = store.dataset_id
    ids = graph.ids
    a, b = _positions(ids, graph.sv_a), _positions(ids, graph.sv_b)
    piece = _initial_pieces(ids, a, b, agglomeration)
    linked = piece[a] == piece[b]
    with write_session(store.engine, dataset_id) as session:
        if session.scalar(select(Supervoxel.id).where(Supervoxel.dataset_id == dataset_id).limit(1)) is not None:
            raise RefusedError(f"dataset {store.dataset!r} already has a supervoxel graph")
        roots = np.asarray(take_ids(session, "root_id", int(piece.max()) + 1 if len(ids) else 0), dtype=np.int64)
        component = roots[piece].tolist() if len(ids) else []
        connection = session.connection()
        constant = [dataset_id] * len(ids)
        start_components(connection, dataset_id, ids.tolist(), component)
        box = np.hstack([graph.bbox_start, graph.bbox_stop]).T.tolist()
        centroid = graph.centroid_nm.T.tolist()
        insert_tuples(connection, "supervoxels",
                       ["dataset_id", "id", "size_voxels", "component_id", "bbox_z0", "bbox_y0", "bbox_x0", "bbox_z1",
                        "bbox_y1", "bbox_x1", "centroid_z_nm", "centroid_y_nm", "centroid_x_nm"],
                       zip(constant, ids.tolist(), graph.size_voxels.tolist(), component, *box, *centroid))
        count = len(graph.sv_a)
        scores = graph.boundary_score.tolist() if graph.boundary_score is not None else [None] * count
        insert_tuples(connection, "adjacencies", ["dataset_id", "sv_a", "sv_b", "contact_area_nm2", "boundary_score"],
                       zip([dataset_id] * count, graph.sv_a.tolist(), graph.sv_b.tolist(),
                           graph.contact_area_nm2.tolist(), scores))
        if linked.any():
            score = graph.boundary_score[linked] if graph.boundary_score is not None else np.zeros(int(linked.sum()))
            capacity = edge_capacities(graph.contact_area_nm2[linked].astype(np.float64), score.astype(np.float64))
            links = int(linked.sum())
            insert_tuples(connection, "agglomeration_edges",
                           ["dataset_id", "sv_a", "sv_b", "added_edit", "capacity_nm2"],
                           zip([dataset_id] * links, graph.sv_a[linked].tolist(), graph.sv_b[linked].tolist(),
                               [0] * links, capacity.tolist()))
    return {"supervoxels": len(ids), "adjacencies": len(graph.sv_a), "neurons": int(piece.max()) + 1 if len(ids) else 0}


def _positions(ids: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Where each of `values` stands in `ids` (the region graph's order, not sorted)."""
    order = np.argsort(ids, kind="stable")
    return order[np.searchsorted(ids[order], values)]


def _initial_pieces(ids: np.ndarray, a: np.ndarray, b: np.ndarray,
                    agglomeration: Mapping[int, int] | None) -> np.ndarray:
    """The neuron (0..k-1) of each supervoxel at edit 0: its own, or its group's connected piece
    (`a`, `b`: the adjacencies as positions in `ids`)."""
    if agglomeration is None:
        return np.arange(len(ids))
    group = np.asarray([agglomeration.get(int(i), -1 - n) for n, i in enumerate(ids.tolist())], dtype=np.int64)
    same = group[a] == group[b]
    return component_labels(len(ids), a[same], b[same])


def add_layer(store: Store, name: str, url: str, layer_type: str, resolution_nm: Sequence[float]) -> None:
    """Record (or update) a layer of the dataset, e.g. the segmentation whose labels are the supervoxels."""
    if layer_type not in ("image", "segmentation"):
        raise InputError(f"layer type must be 'image' or 'segmentation', not {layer_type!r}")
    z, y, x = (float(v) for v in resolution_nm)
    with write_session(store.engine, store.dataset_id) as session:
        layer = session.scalar(select(Layer).where(Layer.dataset_id == store.dataset_id, Layer.name == name))
        if layer is None:
            layer = Layer(dataset_id=store.dataset_id, name=name)
            session.add(layer)
        layer.layer_type, layer.url = layer_type, url
        layer.resolution_z_nm, layer.resolution_y_nm, layer.resolution_x_nm = z, y, x


def supervoxel_at(store: Store, point_nm: Sequence[float], layer: str | None = None) -> int:
    """The supervoxel under a point (z, y, x in nm) of the dataset's segmentation layer."""
    from volumes.geometry import Box
    from volumes.io import open_volume

    with read_session(store.engine) as session:
        query = select(Layer).where(Layer.dataset_id == store.dataset_id, Layer.layer_type == "segmentation")
        if layer is not None:
            query = query.where(Layer.name == layer)
        row = session.scalars(query.order_by(Layer.id)).first()
    if row is None:
        raise InputError(f"dataset {store.dataset!r} has no segmentation layer{' ' + repr(layer) if layer else ''}")
    point = np.asarray(point_nm, dtype=np.float64)
    if point.shape != (3,) or not np.isfinite(point).all():
        raise InputError(f"a point is three numbers z, y, x in nm, not {point_nm!r}")
    volume = open_volume(row.url, resolution_nm=(row.resolution_z_nm, row.resolution_y_nm, row.resolution_x_nm))
    voxel = np.floor((point - np.asarray(volume.offset_nm)) / np.asarray(volume.resolution_nm)).astype(int)
    if np.any(voxel < 0) or np.any(voxel >= np.asarray(volume.shape[:3])):
        raise InputError(f"point {point.tolist()} nm lies outside the segmentation {row.name!r}")
    value = int(np.asarray(volume.read(Box(tuple(voxel), tuple(voxel + 1)))).ravel()[0])
    if value == 0:
        raise InputError(f"point {point.tolist()} nm lies on background (label 0), not on a supervoxel")
    return value


def strongest_contact(store: Store, root_a: int, root_b: int) -> tuple[int, int] | None:
    """The touching pair of supervoxels (one of each current neuron) with the largest contact area, or None.

    For a merge asked of two whole neurons (a viewer's two selected neurons): the link goes where
    they touch most. Reads the adjacency of the smaller neuron's supervoxels only.
    """
    with read_session(store.engine) as session:
        components = dict(run_sql(session.connection(), "SELECT id, component_id FROM roots WHERE dataset_id = ? "
                                  "AND id IN (?, ?) AND retired_edit IS NULL", (store.dataset_id, int(root_a), int(root_b))))
        if len(components) < 2:
            raise NotFoundError(f"neurons {root_a} and {root_b} must both be current neurons of dataset {store.dataset!r}")
        sizes = dict(run_sql(session.connection(), "SELECT id, size_supervoxels FROM components WHERE id IN (?, ?)",
                             (components[root_a], components[root_b])))
        small, large = sorted((components[root_a], components[root_b]), key=lambda component: sizes.get(component, 0))
        half = ("SELECT {mine}, {theirs}, a.contact_area_nm2 FROM supervoxels s JOIN adjacencies a "
                "ON a.dataset_id = s.dataset_id AND a.{mine_side} = s.id JOIN supervoxels t "
                "ON t.dataset_id = a.dataset_id AND t.id = a.{theirs_side} "
                "WHERE s.dataset_id = ? AND s.component_id = ? AND t.component_id = ?")
        rows = run_sql(session.connection(),
                       half.format(mine="a.sv_a", theirs="a.sv_b", mine_side="sv_a", theirs_side="sv_b") + " UNION ALL " +
                       half.format(mine="a.sv_b", theirs="a.sv_a", mine_side="sv_b", theirs_side="sv_a") + " ORDER BY 3 DESC LIMIT 1",
                       (store.dataset_id, small, large, store.dataset_id, small, large))
    if not rows:
        return None
    mine, theirs = int(rows[0][0]), int(rows[0][1])
    return (mine, theirs) if small == components[root_a] else (theirs, mine)
