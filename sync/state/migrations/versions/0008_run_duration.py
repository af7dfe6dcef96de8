"""A run's duration, measured to the millisecond.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25

`oppen_runs.duration_ms` is how long the run took by its own monotonic clock. Its
`started_at` and `finished_at` keep whole seconds (MySQL's DATETIME), so a run of 0.8 s
or 12.4 s could only be shown as "0 s" or "12 s". Runs finished before this revision
have none (NULL): the console computes theirs from the timestamps, as before.
"""
from alembic import op
import sqlalchemy as sa

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("oppen_runs") as batch:
        batch.add_column(sa.Column("duration_ms", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("oppen_runs") as batch:
        batch.drop_column("duration_ms")
