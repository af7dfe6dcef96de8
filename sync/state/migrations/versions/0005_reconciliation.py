"""oppen_reconciliations: the outcome of each local/day every time it is reconciled.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25

A new table only (sync/reconcile.py writes it, the console reads it): one row per
local/day and reconciliation, with when, the range asked for, whether it squares, the
counts on both sides and the day's lists as JSON. Nothing existing changes, so there is
no data to carry over; downgrading drops the table and with it only reconciliation
history, which a new reconciliation rebuilds by asking Oppen again. Frozen: the columns
are spelled out here, not imported from schema.py.
"""
from alembic import op
import sqlalchemy as sa

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# BIGINT on MySQL, INTEGER PRIMARY KEY (rowid, autoincrement) on SQLite.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
MYSQL_OPTS = {"mysql_charset": "utf8mb4", "mysql_engine": "InnoDB"}
TABLE = "oppen_reconciliations"


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("target", sa.String(120), nullable=False),
        sa.Column("run_id", sa.BigInteger),
        sa.Column("reconciled_at", sa.DateTime, nullable=False),
        sa.Column("desde", sa.Date, nullable=False),
        sa.Column("hasta", sa.Date, nullable=False),
        sa.Column("local", sa.String(100), nullable=False),
        sa.Column("fecha", sa.Date, nullable=False),
        sa.Column("excluded", sa.Boolean, nullable=False),
        sa.Column("squares", sa.Boolean),
        sa.Column("facturas", sa.Integer, nullable=False),
        sa.Column("monto", sa.Numeric(18, 2), nullable=False),
        sa.Column("oppen_facturas", sa.Integer, nullable=False),
        sa.Column("oppen_total", sa.Numeric(18, 2), nullable=False),
        sa.Column("missing", sa.Integer, nullable=False),
        sa.Column("extra", sa.Integer, nullable=False),
        sa.Column("different", sa.Integer, nullable=False),
        sa.Column("annulled", sa.Integer, nullable=False),
        sa.Column("corrected", sa.Integer, nullable=False),
        sa.Column("detail_json", sa.Text),
        **MYSQL_OPTS,
    )
    op.create_index("ix_oppen_reconciliations_day", TABLE, ["target", "fecha", "local", "id"])
    op.create_index("ix_oppen_reconciliations_run", TABLE, ["run_id"])


def downgrade() -> None:
    op.drop_index("ix_oppen_reconciliations_run", table_name=TABLE)
    op.drop_index("ix_oppen_reconciliations_day", table_name=TABLE)
    op.drop_table(TABLE)
