"""Initial schema: datasets, layers, supervoxel graph, roots and their history, users, edit log, synapses.

Revision ID: 0001
Revises: 
Create Date: 2026-11-26 21:15:15.128637
"""
import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('counters',
    sa.Column('name', sa.String(length=32), nullable=False),
    sa.Column('next_value', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('datasets',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_table('users',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('token_sha256', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name'),
    sa.UniqueConstraint('token_sha256')
    )
    op.create_table('adjacencies',
    sa.Column('dataset_id', sa.Integer(), nullable=False),
    sa.Column('sv_a', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('sv_b', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('contact_area_nm2', sa.Float(), nullable=False),
    sa.Column('boundary_score', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], ),
    sa.PrimaryKeyConstraint('dataset_id', 'sv_a', 'sv_b')
    )
    with op.batch_alter_table('adjacencies', schema=None) as batch_op:
        batch_op.create_index('ix_adjacencies_dataset_b', ['dataset_id', 'sv_b'], unique=False)

    op.create_table('agglomeration_edges',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('dataset_id', sa.Integer(), nullable=False),
    sa.Column('sv_a', sa.BigInteger(), nullable=False),
    sa.Column('sv_b', sa.BigInteger(), nullable=False),
    sa.Column('added_edit', sa.Integer(), nullable=False),
    sa.Column('removed_edit', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('agglomeration_edges', schema=None) as batch_op:
        batch_op.create_index('ix_agglomeration_edges_a', ['dataset_id', 'sv_a'], unique=False)
        batch_op.create_index('ix_agglomeration_edges_added', ['added_edit'], unique=False)
        batch_op.create_index('ix_agglomeration_edges_b', ['dataset_id', 'sv_b'], unique=False)
        batch_op.create_index('ix_agglomeration_edges_removed', ['removed_edit'], unique=False)

    op.create_table('edits',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('dataset_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('operation', sa.String(length=16), nullable=False),
    sa.Column('arguments', sa.JSON(), nullable=False),
    sa.Column('affected_roots', sa.JSON(), nullable=False),
    sa.Column('resulting_roots', sa.JSON(), nullable=False),
    sa.Column('parent_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], ),
    sa.ForeignKeyConstraint(['parent_id'], ['edits.id'], ),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('edits', schema=None) as batch_op:
        batch_op.create_index('ix_edits_dataset_id', ['dataset_id', 'id'], unique=False)
        batch_op.create_index('ix_edits_dataset_time', ['dataset_id', 'created_at'], unique=False)
        batch_op.create_index('ix_edits_parent', ['parent_id'], unique=False)

    op.create_table('layers',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('dataset_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('layer_type', sa.String(length=32), nullable=False),
    sa.Column('url', sa.String(length=1024), nullable=False),
    sa.Column('resolution_z_nm', sa.Float(), nullable=False),
    sa.Column('resolution_y_nm', sa.Float(), nullable=False),
    sa.Column('resolution_x_nm', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('layers', schema=None) as batch_op:
        batch_op.create_index('ix_layers_dataset_name', ['dataset_id', 'name'], unique=True)

    op.create_table('roots',
    sa.Column('id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('dataset_id', sa.Integer(), nullable=False),
    sa.Column('created_edit', sa.Integer(), nullable=False),
    sa.Column('retired_edit', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('roots', schema=None) as batch_op:
        batch_op.create_index('ix_roots_created', ['created_edit'], unique=False)
        batch_op.create_index('ix_roots_retired', ['retired_edit'], unique=False)

    op.create_table('supervoxels',
    sa.Column('dataset_id', sa.Integer(), nullable=False),
    sa.Column('id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('size_voxels', sa.BigInteger(), nullable=False),
    sa.Column('bbox_z0', sa.Integer(), nullable=False),
    sa.Column('bbox_y0', sa.Integer(), nullable=False),
    sa.Column('bbox_x0', sa.Integer(), nullable=False),
    sa.Column('bbox_z1', sa.Integer(), nullable=False),
    sa.Column('bbox_y1', sa.Integer(), nullable=False),
    sa.Column('bbox_x1', sa.Integer(), nullable=False),
    sa.Column('centroid_z_nm', sa.Float(), nullable=False),
    sa.Column('centroid_y_nm', sa.Float(), nullable=False),
    sa.Column('centroid_x_nm', sa.Float(), nullable=False),
    sa.Column('root_id', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], ),
    sa.PrimaryKeyConstraint('dataset_id', 'id')
    )
    with op.batch_alter_table('supervoxels', schema=None) as batch_op:
        batch_op.create_index('ix_supervoxels_dataset_root', ['dataset_id', 'root_id'], unique=False)

    op.create_table('synapses',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('dataset_id', sa.Integer(), nullable=False),
    sa.Column('ctr_z_nm', sa.Float(), nullable=False),
    sa.Column('ctr_y_nm', sa.Float(), nullable=False),
    sa.Column('ctr_x_nm', sa.Float(), nullable=False),
    sa.Column('pre_z_nm', sa.Float(), nullable=False),
    sa.Column('pre_y_nm', sa.Float(), nullable=False),
    sa.Column('pre_x_nm', sa.Float(), nullable=False),
    sa.Column('post_z_nm', sa.Float(), nullable=False),
    sa.Column('post_y_nm', sa.Float(), nullable=False),
    sa.Column('post_x_nm', sa.Float(), nullable=False),
    sa.Column('pre_supervoxel_id', sa.BigInteger(), nullable=False),
    sa.Column('post_supervoxel_id', sa.BigInteger(), nullable=False),
    sa.Column('score', sa.Float(), nullable=False),
    sa.Column('size', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('synapses', schema=None) as batch_op:
        batch_op.create_index('ix_synapses_dataset_post', ['dataset_id', 'post_supervoxel_id'], unique=False)
        batch_op.create_index('ix_synapses_dataset_pre', ['dataset_id', 'pre_supervoxel_id'], unique=False)

    op.create_table('root_members',
    sa.Column('root_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('sv_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('dataset_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], ),
    sa.ForeignKeyConstraint(['root_id'], ['roots.id'], ),
    sa.PrimaryKeyConstraint('root_id', 'sv_id')
    )
    with op.batch_alter_table('root_members', schema=None) as batch_op:
        batch_op.create_index('ix_root_members_dataset_sv', ['dataset_id', 'sv_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('root_members', schema=None) as batch_op:
        batch_op.drop_index('ix_root_members_dataset_sv')

    op.drop_table('root_members')
    with op.batch_alter_table('synapses', schema=None) as batch_op:
        batch_op.drop_index('ix_synapses_dataset_pre')
        batch_op.drop_index('ix_synapses_dataset_post')

    op.drop_table('synapses')
    with op.batch_alter_table('supervoxels', schema=None) as batch_op:
        batch_op.drop_index('ix_supervoxels_dataset_root')

    op.drop_table('supervoxels')
    with op.batch_alter_table('roots', schema=None) as batch_op:
        batch_op.drop_index('ix_roots_retired')
        batch_op.drop_index('ix_roots_created')

    op.drop_table('roots')
    with op.batch_alter_table('layers', schema=None) as batch_op:
        batch_op.drop_index('ix_layers_dataset_name')

    op.drop_table('layers')
    with op.batch_alter_table('edits', schema=None) as batch_op:
        batch_op.drop_index('ix_edits_parent')
        batch_op.drop_index('ix_edits_dataset_time')
        batch_op.drop_index('ix_edits_dataset_id')

    op.drop_table('edits')
    with op.batch_alter_table('agglomeration_edges', schema=None) as batch_op:
        batch_op.drop_index('ix_agglomeration_edges_removed')
        batch_op.drop_index('ix_agglomeration_edges_b')
        batch_op.drop_index('ix_agglomeration_edges_added')
        batch_op.drop_index('ix_agglomeration_edges_a')

    op.drop_table('agglomeration_edges')
    with op.batch_alter_table('adjacencies', schema=None) as batch_op:
        batch_op.drop_index('ix_adjacencies_dataset_b')

    op.drop_table('adjacencies')
    op.drop_table('users')
    op.drop_table('datasets')
    op.drop_table('counters')
