"""The store's tables (SQLAlchemy 2 ORM). db/migrations creates exactly these; change both together.

Ids of supervoxels and roots are 64-bit (BigInteger). Per-dataset tables carry dataset_id.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Float, ForeignKey, Index, Integer, LargeBinary, String, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Dataset(Base):
    __tablename__ = "datasets"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Layer(Base):
    __tablename__ = "layers"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"))
    name: Mapped[str] = mapped_column(String(128))
    layer_type: Mapped[str] = mapped_column(String(32))  # "image" or "segmentation"
    url: Mapped[str] = mapped_column(String(1024))
    resolution_z_nm: Mapped[float] = mapped_column(Float)
    resolution_y_nm: Mapped[float] = mapped_column(Float)
    resolution_x_nm: Mapped[float] = mapped_column(Float)
    __table_args__ = (Index("ix_layers_dataset_name", "dataset_id", "name", unique=True),)


class Supervoxel(Base):
    """One FFN segment; component_id is the component (and so the neuron) it belongs to now."""

    __tablename__ = "supervoxels"
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"), primary_key=True)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    size_voxels: Mapped[int] = mapped_column(BigInteger)
    bbox_z0: Mapped[int] = mapped_column(Integer)
    bbox_y0: Mapped[int] = mapped_column(Integer)
    bbox_x0: Mapped[int] = mapped_column(Integer)
    bbox_z1: Mapped[int] = mapped_column(Integer)
    bbox_y1: Mapped[int] = mapped_column(Integer)
    bbox_x1: Mapped[int] = mapped_column(Integer)
    centroid_z_nm: Mapped[float] = mapped_column(Float)
    centroid_y_nm: Mapped[float] = mapped_column(Float)
    centroid_x_nm: Mapped[float] = mapped_column(Float)
    component_id: Mapped[int] = mapped_column(BigInteger)
    __table_args__ = (Index("ix_supervoxels_dataset_component", "dataset_id", "component_id"),)


class Adjacency(Base):
    """An edge of the region adjacency graph (sv_a < sv_b): how much two supervoxels touch."""

    __tablename__ = "adjacencies"
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"), primary_key=True)
    sv_a: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    sv_b: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    contact_area_nm2: Mapped[float] = mapped_column(Float)
    boundary_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    __table_args__ = (Index("ix_adjacencies_dataset_b", "dataset_id", "sv_b"),)


class AgglomerationEdge(Base):
    """A link joining two supervoxels into one neuron (sv_a < sv_b), active from added_edit until removed_edit."""

    __tablename__ = "agglomeration_edges"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"))
    sv_a: Mapped[int] = mapped_column(BigInteger)
    sv_b: Mapped[int] = mapped_column(BigInteger)
    added_edit: Mapped[int] = mapped_column(Integer)
    removed_edit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # The link's min-cut capacity, fixed when it is made (the adjacency graph never changes):
    # db.mincut.edge_capacities of the pair's contact, so a split reads no adjacency rows.
    capacity_nm2: Mapped[float] = mapped_column(Float)
    __table_args__ = (
        Index("ix_agglomeration_edges_a", "dataset_id", "sv_a"),
        Index("ix_agglomeration_edges_b", "dataset_id", "sv_b"),
        # The active links only, holding all a cut reads: a split reads the index, not the table.
        Index("ix_agglomeration_edges_active", "dataset_id", "sv_a", "sv_b", "capacity_nm2", "id",
              sqlite_where=text("removed_edit IS NULL"), postgresql_where=text("removed_edit IS NULL")),
        Index("ix_agglomeration_edges_added", "added_edit"),
        Index("ix_agglomeration_edges_removed", "removed_edit"),
    )


class Root(Base):
    """A neuron version: an immutable supervoxel set, current from created_edit until retired_edit.

    Every root is one version of one component (component_id); its supervoxels are the
    component's members as of created_edit (db.components explains the representation).
    """

    __tablename__ = "roots"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"))
    created_edit: Mapped[int] = mapped_column(Integer)
    retired_edit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    component_id: Mapped[int] = mapped_column(BigInteger)
    size_supervoxels: Mapped[int] = mapped_column(BigInteger)
    __table_args__ = (
        Index("ix_roots_created", "created_edit"),
        Index("ix_roots_retired", "retired_edit"),
        Index("ix_roots_component_created", "component_id", "created_edit"),
    )


class Component(Base):
    """A live component: a set of supervoxels whose id survives the edits that keep most of it.

    root_id is its current root (neuron version); size_supervoxels decides which side of a
    merge moves (the smaller). A component that an edit empties is deleted; its history stays
    in roots and component_members.
    """

    __tablename__ = "components"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"))
    root_id: Mapped[int] = mapped_column(BigInteger)
    size_supervoxels: Mapped[int] = mapped_column(BigInteger)


class ComponentMember(Base):
    """A supervoxel's membership of a component from started_edit until ended_edit (NULL: still).

    Together with roots.component_id this is the whole history time travel reads: a row is
    written only when a supervoxel changes component.
    """

    __tablename__ = "component_members"
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"), primary_key=True)
    sv_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    started_edit: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    component_id: Mapped[int] = mapped_column(BigInteger)
    ended_edit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    __table_args__ = (Index("ix_component_members_component", "component_id", "started_edit"),)


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    role: Mapped[str] = mapped_column(String(16))  # admin, proofreader or viewer
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    token_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)  # None: never
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)  # removed user


class Edit(Base):
    """One row of the edit log. Never updated or deleted: undo and redo are edits too."""

    __tablename__ = "edits"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    operation: Mapped[str] = mapped_column(String(16))
    arguments: Mapped[dict[str, Any]] = mapped_column(JSON)
    affected_roots: Mapped[list[int]] = mapped_column(JSON)
    resulting_roots: Mapped[list[int]] = mapped_column(JSON)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("edits.id"), nullable=True)
    __table_args__ = (
        Index("ix_edits_dataset_time", "dataset_id", "created_at"),
        Index("ix_edits_dataset_id", "dataset_id", "id"),
        Index("ix_edits_parent", "parent_id"),
    )


class Annotation(Base):
    """A status, cell type, name, note, bookmark or to-do, alive from set_edit until ended_edit (db.annotations).

    anchor_sv ties it to a neuron (whichever holds that supervoxel); anchor_root is that neuron's
    root when it was set; a point annotation also has a position in nm.
    """

    __tablename__ = "annotations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"))
    kind: Mapped[str] = mapped_column(String(16))
    value: Mapped[str] = mapped_column(String(2000))
    anchor_sv: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    anchor_root: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    position_z_nm: Mapped[float | None] = mapped_column(Float, nullable=True)
    position_y_nm: Mapped[float | None] = mapped_column(Float, nullable=True)
    position_x_nm: Mapped[float | None] = mapped_column(Float, nullable=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    set_edit: Mapped[int] = mapped_column(Integer)
    ended_edit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    __table_args__ = (
        Index("ix_annotations_dataset_kind", "dataset_id", "kind", "ended_edit"),
        Index("ix_annotations_set", "set_edit"),
        Index("ix_annotations_ended", "ended_edit"),
    )


class ReviewTask(Base):
    """One question of a review queue (db.review): e.g. "are supervoxels sv_a and sv_b one neuron?".

    state: open, leased (to leased_by until lease_expires_at) or done (answer: accept, reject or
    merged, when an edit joined them before anyone was asked); an accepted merge is answer_edit.
    """

    __tablename__ = "review_tasks"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"))
    queue: Mapped[str] = mapped_column(String(16))
    sv_a: Mapped[int] = mapped_column(BigInteger)
    sv_b: Mapped[int] = mapped_column(BigInteger)
    priority: Mapped[float] = mapped_column(Float)
    state: Mapped[str] = mapped_column(String(16))
    leased_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    answer: Mapped[str | None] = mapped_column(String(16), nullable=True)
    answered_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    answered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    answer_edit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    __table_args__ = (
        Index("ix_review_tasks_next", "dataset_id", "queue", "state", "priority"),
        Index("ix_review_tasks_pair", "dataset_id", "queue", "sv_a", "sv_b", unique=True),
    )


class SynapseBlock(Base):
    """A batch of synapses stored column-wise: one row holds up to SYNAPSE_BLOCK_ROWS synapses.

    Why not a row per synapse: exports and the viewer read every synapse of a dataset, and a
    database row costs microseconds to decode where a block's columns cost almost nothing.
    `data` holds the block's columns one after another (db.store.SYNAPSE_BLOCK_LAYOUT: ids,
    cleft centre and pre/post points z, y, x in nm, pre/post supervoxel ids, score, size),
    sorted by id; synapse ids come from the `synapse_id` counter and never repeat.
    """

    __tablename__ = "synapse_blocks"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"))
    first_synapse_id: Mapped[int] = mapped_column(BigInteger)
    count: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    __table_args__ = (Index("ix_synapse_blocks_dataset", "dataset_id"),)


class Counter(Base):
    """Portable id sequences ("root_id", "edit_id"): values are handed out once and never reused."""

    __tablename__ = "counters"
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    next_value: Mapped[int] = mapped_column(BigInteger)
