"""Synapses stored column-wise in blocks (synapse_blocks) instead of a row per synapse.

Existing synapses keep their ids: they are copied, in id order, into blocks of the same
layout db.store writes, and the `synapse_id` counter continues after the largest id.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 01:00:00
"""
import numpy as np
import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

# The block layout as of this revision (db.store.SYNAPSE_BLOCK_LAYOUT may change later; this must not):
# each column contiguous and little-endian, one after another; points are (count, 3) z, y, x in nm.
LAYOUT = (("id", "<i8", 1), ("ctr", "<f8", 3), ("pre", "<f8", 3), ("post", "<f8", 3),
          ("pre_sv", "<i8", 1), ("post_sv", "<i8", 1), ("score", "<f8", 1), ("size", "<f8", 1))
POINTS = [f"{point}_{axis}_nm" for point in ("ctr", "pre", "post") for axis in "zyx"]
ROW_COLUMNS = ["id", *POINTS, "pre_supervoxel_id", "post_supervoxel_id", "score", "size"]
BLOCK_ROWS = 100_000


def _columns_of_rows(rows: list) -> dict:
    """Rows of the 0001 table, in ROW_COLUMNS order, as block columns (ids stay exact integers)."""
    table = list(zip(*rows))

    def points(first: int) -> np.ndarray:
        return np.array(table[first:first + 3], dtype=np.float64).T

    return {"id": np.array(table[0], dtype=np.int64), "ctr": points(1), "pre": points(4), "post": points(7),
            "pre_sv": np.array(table[10], dtype=np.int64), "post_sv": np.array(table[11], dtype=np.int64),
            "score": np.array(table[12], dtype=np.float64), "size": np.array(table[13], dtype=np.float64)}


def _encode(columns: dict) -> bytes:
    return b"".join(np.ascontiguousarray(columns[name], dtype=dtype).tobytes() for name, dtype, _ in LAYOUT)


def _decode(data: bytes, count: int) -> dict:
    columns, offset = {}, 0
    for name, dtype, width in LAYOUT:
        values = np.frombuffer(data, dtype=dtype, count=count * width, offset=offset)
        columns[name] = values.reshape(count, width) if width > 1 else values
        offset += values.nbytes
    return columns


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
    if op.get_bind().dialect.name == "postgresql":
        # packed floats do not compress: spare the server trying on every write and read
        op.execute("ALTER TABLE synapse_blocks ALTER COLUMN data SET STORAGE EXTERNAL")
    _copy_rows_into_blocks()
    with op.batch_alter_table('synapses', schema=None) as batch_op:
        batch_op.drop_index('ix_synapses_dataset_pre')
        batch_op.drop_index('ix_synapses_dataset_post')
    op.drop_table('synapses')


def _copy_rows_into_blocks() -> None:
    connection = op.get_bind()
    largest = 0
    for (dataset_id,) in connection.execute(sa.text("SELECT DISTINCT dataset_id FROM synapses")).all():
        rows = connection.execute(sa.text(f"SELECT {', '.join(ROW_COLUMNS)} FROM synapses WHERE dataset_id = :d "
                                          "ORDER BY id"), {"d": dataset_id}).all()
        columns = _columns_of_rows(rows)
        for start in range(0, len(rows), BLOCK_ROWS):
            block = {name: column[start:start + BLOCK_ROWS] for name, column in columns.items()}
            connection.execute(sa.text("INSERT INTO synapse_blocks (dataset_id, first_synapse_id, count, data) "
                                       "VALUES (:d, :first, :count, :data)"),
                               {"d": dataset_id, "first": int(block["id"][0]), "count": len(block["id"]),
                                "data": _encode(block)})
        largest = max(largest, int(columns["id"].max()))
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
    names = ["dataset_id", *ROW_COLUMNS]
    insert = sa.text(f"INSERT INTO synapses ({', '.join(names)}) VALUES ({', '.join(':' + n for n in names)})")
    for dataset_id, data, count in connection.execute(
            sa.text("SELECT dataset_id, data, count FROM synapse_blocks ORDER BY id")).all():
        block = _decode(bytes(data), count)
        rows = zip(block["id"].tolist(), block["ctr"].tolist(), block["pre"].tolist(), block["post"].tolist(),
                   block["pre_sv"].tolist(), block["post_sv"].tolist(), block["score"].tolist(), block["size"].tolist())
        connection.execute(insert, [dict(zip(names, [dataset_id, i, *ctr, *pre, *post, a, b, score, size]))
                                    for i, ctr, pre, post, a, b, score, size in rows])
    connection.execute(sa.text("DELETE FROM counters WHERE name = 'synapse_id'"))
    with op.batch_alter_table('synapses', schema=None) as batch_op:
        batch_op.create_index('ix_synapses_dataset_post', ['dataset_id', 'post_supervoxel_id'], unique=False)
        batch_op.create_index('ix_synapses_dataset_pre', ['dataset_id', 'pre_supervoxel_id'], unique=False)
    with op.batch_alter_table('synapse_blocks', schema=None) as batch_op:
        batch_op.drop_index('ix_synapse_blocks_dataset')
    op.drop_table('synapse_blocks')
