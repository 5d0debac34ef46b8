"""Neurons as components with interval-stamped membership (db.components), replacing root_members.

Before: every edit rewrote `supervoxels.root_id` and inserted a `root_members` row for every
supervoxel of each new neuron. After: supervoxels point at a component, components at their
current root, and `component_members` records when each supervoxel entered and left a component.

Each agglomeration edge also gets its min-cut capacity (`capacity_nm2`, from the pair's contact),
so a split reads the neuron's edges alone.

The conversion keeps every root id and the whole history exactly: each existing root becomes a
component of its own (named, as db.components names them, after that root), whose members are
the root's supervoxels from its created edit until its retired edit. Edits made after the
migration use union by size on those components. Users, edits and synapses are untouched.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 03:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('components',
                    sa.Column('id', sa.BigInteger(), autoincrement=False, nullable=False),
                    sa.Column('dataset_id', sa.Integer(), nullable=False),
                    sa.Column('root_id', sa.BigInteger(), nullable=False),
                    sa.Column('size_supervoxels', sa.BigInteger(), nullable=False),
                    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id']),
                    sa.PrimaryKeyConstraint('id'))
    op.create_table('component_members',
                    sa.Column('dataset_id', sa.Integer(), nullable=False),
                    sa.Column('sv_id', sa.BigInteger(), autoincrement=False, nullable=False),
                    sa.Column('started_edit', sa.Integer(), autoincrement=False, nullable=False),
                    sa.Column('component_id', sa.BigInteger(), nullable=False),
                    sa.Column('ended_edit', sa.Integer(), nullable=True),
                    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id']),
                    sa.PrimaryKeyConstraint('dataset_id', 'sv_id', 'started_edit'))
    with op.batch_alter_table('roots') as batch:
        batch.add_column(sa.Column('component_id', sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column('size_supervoxels', sa.BigInteger(), nullable=True))
    with op.batch_alter_table('supervoxels') as batch:
        batch.add_column(sa.Column('component_id', sa.BigInteger(), nullable=True))
    with op.batch_alter_table('agglomeration_edges') as batch:
        batch.add_column(sa.Column('capacity_nm2', sa.Float(), nullable=True))

    op.execute("UPDATE roots SET component_id = id, size_supervoxels = "
               "(SELECT count(*) FROM root_members m WHERE m.root_id = roots.id)")
    op.execute("INSERT INTO component_members (dataset_id, sv_id, started_edit, component_id, ended_edit) "
               "SELECT m.dataset_id, m.sv_id, r.created_edit, r.id, r.retired_edit "
               "FROM root_members m JOIN roots r ON r.id = m.root_id")
    op.execute("INSERT INTO components (id, dataset_id, root_id, size_supervoxels) "
               "SELECT id, dataset_id, id, size_supervoxels FROM roots WHERE retired_edit IS NULL")
    op.execute("UPDATE supervoxels SET component_id = root_id")
    # db.mincut.edge_capacities as of this revision: area x (1 - score), at least 0.001; 1.0 for untouching pairs.
    op.execute("UPDATE agglomeration_edges SET capacity_nm2 = COALESCE((SELECT CASE "
               "WHEN j.contact_area_nm2 * (1 - COALESCE(j.boundary_score, 0)) < 0.001 THEN 0.001 "
               "ELSE j.contact_area_nm2 * (1 - COALESCE(j.boundary_score, 0)) END FROM adjacencies j "
               "WHERE j.dataset_id = agglomeration_edges.dataset_id AND j.sv_a = agglomeration_edges.sv_a "
               "AND j.sv_b = agglomeration_edges.sv_b), 1.0)")

    with op.batch_alter_table('root_members') as batch:
        batch.drop_index('ix_root_members_dataset_sv')
    op.drop_table('root_members')
    with op.batch_alter_table('roots') as batch:
        batch.alter_column('component_id', existing_type=sa.BigInteger(), nullable=False)
        batch.alter_column('size_supervoxels', existing_type=sa.BigInteger(), nullable=False)
        batch.create_index('ix_roots_component_created', ['component_id', 'created_edit'], unique=False)
    with op.batch_alter_table('supervoxels') as batch:
        batch.drop_index('ix_supervoxels_dataset_root')
        batch.drop_column('root_id')
        batch.alter_column('component_id', existing_type=sa.BigInteger(), nullable=False)
        batch.create_index('ix_supervoxels_dataset_component', ['dataset_id', 'component_id'], unique=False)
    with op.batch_alter_table('component_members') as batch:
        batch.create_index('ix_component_members_component', ['component_id', 'started_edit'], unique=False)
    with op.batch_alter_table('agglomeration_edges') as batch:
        batch.alter_column('capacity_nm2', existing_type=sa.Float(), nullable=False)
        batch.create_index('ix_agglomeration_edges_active', ['dataset_id', 'sv_a', 'sv_b', 'capacity_nm2', 'id'],
                           unique=False, sqlite_where=sa.text('removed_edit IS NULL'),
                           postgresql_where=sa.text('removed_edit IS NULL'))


def downgrade() -> None:
    # Every root's members: its component's members as of its created edit (kept aside while
    # roots loses its columns: SQLite rebuilds that table, which a foreign key to it would block).
    op.execute("CREATE TABLE downgrade_root_members AS "
               "SELECT r.id AS root_id, m.sv_id AS sv_id, r.dataset_id AS dataset_id FROM roots r "
               "JOIN component_members m ON m.component_id = r.component_id AND m.started_edit <= r.created_edit "
               "AND (m.ended_edit IS NULL OR m.ended_edit > r.created_edit)")
    with op.batch_alter_table('supervoxels') as batch:
        batch.add_column(sa.Column('root_id', sa.BigInteger(), nullable=True))
    op.execute("UPDATE supervoxels SET root_id = (SELECT c.root_id FROM components c WHERE c.id = supervoxels.component_id)")
    with op.batch_alter_table('supervoxels') as batch:
        batch.drop_index('ix_supervoxels_dataset_component')
        batch.drop_column('component_id')
        batch.alter_column('root_id', existing_type=sa.BigInteger(), nullable=False)
        batch.create_index('ix_supervoxels_dataset_root', ['dataset_id', 'root_id'], unique=False)
    with op.batch_alter_table('component_members') as batch:
        batch.drop_index('ix_component_members_component')
    op.drop_table('component_members')
    op.drop_table('components')
    with op.batch_alter_table('agglomeration_edges') as batch:
        batch.drop_index('ix_agglomeration_edges_active')
        batch.drop_column('capacity_nm2')
    with op.batch_alter_table('roots') as batch:
        batch.drop_index('ix_roots_component_created')
        batch.drop_column('size_supervoxels')
        batch.drop_column('component_id')
    op.create_table('root_members',
                    sa.Column('root_id', sa.BigInteger(), autoincrement=False, nullable=False),
                    sa.Column('sv_id', sa.BigInteger(), autoincrement=False, nullable=False),
                    sa.Column('dataset_id', sa.Integer(), nullable=False),
                    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id']),
                    sa.ForeignKeyConstraint(['root_id'], ['roots.id']),
                    sa.PrimaryKeyConstraint('root_id', 'sv_id'))
    with op.batch_alter_table('root_members') as batch:
        batch.create_index('ix_root_members_dataset_sv', ['dataset_id', 'sv_id'], unique=False)
    op.execute("INSERT INTO root_members (root_id, sv_id, dataset_id) SELECT root_id, sv_id, dataset_id "
               "FROM downgrade_root_members")
    op.drop_table('downgrade_root_members')
