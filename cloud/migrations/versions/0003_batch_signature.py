"""Batch signatures: ``ingested_batches.signature``, the Ed25519 signature of each accepted
envelope, so ingest tells a true resend (byte-identical, same signature) from a different
batch reusing a seen seq (``409 seq_reused``, e.g. an outbox restored from an old backup).

Nullable: rows stored before this revision have none and keep being deduped on
``(gateway_id, seq)`` alone. Adding a nullable column is a metadata-only change on both
PostgreSQL and SQLite (no table rewrite, no long lock on a large ``ingested_batches``).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('ingested_batches') as batch_op:
        batch_op.add_column(sa.Column('signature', sa.LargeBinary(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('ingested_batches') as batch_op:
        batch_op.drop_column('signature')
