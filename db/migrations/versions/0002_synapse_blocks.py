"""Synapses stored column-wise in blocks (synapse_blocks) instead of a row per synapse.

Existing synapses keep their ids: they are copied, in id order, into blocks of the same
layout db.store writes, and the `synapse_id` counter continues after the largest id.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 01:00:00
"""
import io

import numpy as np
import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

# The block layout as of this revision (db.store.SYNAPSE_DTYPE may grow later; this must not).
POINTS = [f"{point}_{axis}_nm" for point in ("ctr", "pre", "post") for axis in "zyx"]
BLOCK_DTYPE = np.dtype([("id", "<i8"), *((name, "<f8") for name in POINTS),
                        ("pre_supervoxel_id", "<i8"), ("post_supervoxel_id", "<i8"), ("score", "<f8"), ("size", "<f8")])
BLOCK_ROWS = 100_000


def upgrade() -> None:
    op.create_table('synapse_blocks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('dataset_id', sa.Integer(), nullable=False),
    sa.Column('first_synapse_id', sa.BigInteger(), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('synapse_blocks', schema=None) as batch_op:
        batch_op.create_index('ix_synapse_blocks_dataset', ['dataset_id'], unique=False)
    _copy_rows_into_blocks()
    with op.batch_alter_table('synapses', schema=None) as batch_op:
        batch_op.drop_index('ix_synapses_dataset_pre')
        batch_op.drop_index('ix_synapses_dataset_post')
    op.drop_table('synapses')


def _copy_rows_into_blocks() -> None:
    connection = op.get_bind()
    names = ", ".join(BLOCK_DTYPE.names)
    largest = 0
    for (dataset_id,) in connection.execute(sa.text("SELECT DISTINCT dataset_id FROM synapses")).all():
        rows = connection.execute(sa.text(f"SELECT {names} FROM synapses WHERE dataset_id = :d ORDER BY id"),
                                  {"d": dataset_id}).all()
        records = np.array([tuple(row) for row in rows], dtype=BLOCK_DTYPE)
        for start in range(0, len(records), BLOCK_ROWS):
            block = records[start:start + BLOCK_ROWS]
            buffer = io.BytesIO()
            np.save(buffer, block, allow_pickle=False)
            connection.execute(sa.text("INSERT INTO synapse_blocks (dataset_id, first_synapse_id, count, data) "
                                       "VALUES (:d, :first, :count, :data)"),
                               {"d": dataset_id, "first": int(block["id"][0]), "count": len(block),
                                "data": buffer.getvalue()})
        largest = max(largest, int(records["id"].max()))
    if largest:
        connection.execute(sa.text("INSERT INTO counters (name, next_value) VALUES ('synapse_id', :next)"),
                           {"next": largest + 1})


def downgrade() -> None:
    op.create_table('synapses',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('dataset_id', sa.Integer(), nullable=False),
    *(sa.Column(name, sa.Float(), nullable=False) for name in POINTS),
    sa.Column('pre_supervoxel_id', sa.BigInteger(), nullable=False),
    sa.Column('post_supervoxel_id', sa.BigInteger(), nullable=False),
    sa.Column('score', sa.Float(), nullable=False),
    sa.Column('size', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    connection = op.get_bind()
    names = ["dataset_id", *BLOCK_DTYPE.names]
    insert = sa.text(f"INSERT INTO synapses ({', '.join(names)}) VALUES ({', '.join(':' + n for n in names)})")
    for dataset_id, data in connection.execute(sa.text("SELECT dataset_id, data FROM synapse_blocks ORDER BY id")).all():
        block = np.load(io.BytesIO(bytes(data)), allow_pickle=False)
        connection.execute(insert, [{"dataset_id": dataset_id, **dict(zip(BLOCK_DTYPE.names, row))}
                                    for row in block.tolist()])
    connection.execute(sa.text("DELETE FROM counters WHERE name = 'synapse_id'"))
    with op.batch_alter_table('synapses', schema=None) as batch_op:
        batch_op.create_index('ix_synapses_dataset_post', ['dataset_id', 'post_supervoxel_id'], unique=False)
        batch_op.create_index('ix_synapses_dataset_pre', ['dataset_id', 'pre_supervoxel_id'], unique=False)
    with op.batch_alter_table('synapse_blocks', schema=None) as batch_op:
        batch_op.drop_index('ix_synapse_blocks_dataset')
    op.drop_table('synapse_blocks')
