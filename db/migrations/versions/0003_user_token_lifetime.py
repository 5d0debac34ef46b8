"""Users' tokens can expire and users can be removed (revoked) without losing their edits.

`token_expires_at` (NULL: never) ends a token at a time; `revoked_at` (NULL: active) marks a
removed user, whose edits stay attributed to them but whose token no longer opens anything.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 21:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("token_expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("revoked_at")
        batch.drop_column("token_expires_at")
