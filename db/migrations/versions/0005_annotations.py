"""Annotations: neuron status, cell type, name, notes, and bookmarks / to-dos at points (db.annotations).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 04:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('annotations',
                    sa.Column('id', sa.Integer(), nullable=False),
                    sa.Column('dataset_id', sa.Integer(), nullable=False),
                    sa.Column('kind', sa.String(length=16), nullable=False),
                    sa.Column('value', sa.String(length=2000), nullable=False),
                    sa.Column('anchor_sv', sa.BigInteger(), nullable=True),
                    sa.Column('anchor_root', sa.BigInteger(), nullable=True),
                    sa.Column('position_z_nm', sa.Float(), nullable=True),
                    sa.Column('position_y_nm', sa.Float(), nullable=True),
                    sa.Column('position_x_nm', sa.Float(), nullable=True),
                    sa.Column('user_id', sa.Integer(), nullable=False),
                    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
                    sa.Column('set_edit', sa.Integer(), nullable=False),
                    sa.Column('ended_edit', sa.Integer(), nullable=True),
                    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id']),
                    sa.ForeignKeyConstraint(['user_id'], ['users.id']),
                    sa.PrimaryKeyConstraint('id'))
    with op.batch_alter_table('annotations') as batch:
        batch.create_index('ix_annotations_dataset_kind', ['dataset_id', 'kind', 'ended_edit'], unique=False)
        batch.create_index('ix_annotations_set', ['set_edit'], unique=False)
        batch.create_index('ix_annotations_ended', ['ended_edit'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('annotations') as batch:
        batch.drop_index('ix_annotations_ended')
        batch.drop_index('ix_annotations_set')
        batch.drop_index('ix_annotations_dataset_kind')
    op.drop_table('annotations')
