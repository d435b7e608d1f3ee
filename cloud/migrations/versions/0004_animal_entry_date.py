"""Animals: ``pledged_animals.entry_date``, the day ``entry_weight_kg`` was measured, so
valuation can anchor an animal not yet weighed by the scale on its entry weight at its age
then (without a date the entry weight cannot be placed on the growth curve).

Nullable: animals imported before this revision keep no date and are valued as before.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 01:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('pledged_animals') as batch_op:
        batch_op.add_column(sa.Column('entry_date', sa.Date(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('pledged_animals') as batch_op:
        batch_op.drop_column('entry_date')
