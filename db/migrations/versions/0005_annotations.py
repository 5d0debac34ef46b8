"""Annotations (neuron status, cell type, name, notes, bookmarks / to-dos: db.annotations) and review
queues (db.review).

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
    op.create_table('review_tasks',
                    sa.Column('id', sa.Integer(), nullable=False),
                    sa.Column('dataset_id', sa.Integer(), nullable=False),
                    sa.Column('queue', sa.String(length=16), nullable=False),
                    sa.Column('sv_a', sa.BigInteger(), nullable=False),
                    sa.Column('sv_b', sa.BigInteger(), nullable=False),
                    sa.Column('priority', sa.Float(), nullable=False),
                    sa.Column('state', sa.String(length=16), nullable=False),
                    sa.Column('leased_by', sa.Integer(), nullable=True),
                    sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
                    sa.Column('answer', sa.String(length=16), nullable=True),
                    sa.Column('answered_by', sa.Integer(), nullable=True),
                    sa.Column('answered_at', sa.DateTime(timezone=True), nullable=True),
                    sa.Column('answer_edit', sa.Integer(), nullable=True),
                    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id']),
                    sa.ForeignKeyConstraint(['leased_by'], ['users.id']),
                    sa.ForeignKeyConstraint(['answered_by'], ['users.id']),
                    sa.PrimaryKeyConstraint('id'))
    with op.batch_alter_table('review_tasks') as batch:
        batch.create_index('ix_review_tasks_next', ['dataset_id', 'queue', 'state', 'priority'], unique=False)
        batch.create_index('ix_review_tasks_pair', ['dataset_id', 'queue', 'sv_a', 'sv_b'], unique=True)


def downgrade() -> None:
    with op.batch_alter_table('review_tasks') as batch:
        batch.drop_index('ix_review_tasks_pair')
        batch.drop_index('ix_review_tasks_next')
    op.drop_table('review_tasks')
    with op.batch_alter_table('annotations') as batch:
        batch.drop_index('ix_annotations_ended')
        batch.drop_index('ix_annotations_set')
        batch.drop_index('ix_annotations_dataset_kind')
    op.drop_table('annotations')
