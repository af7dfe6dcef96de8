"""The console's logins and sessions: every login attempt, and the sessions that survive
a reload.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25

Three new tables (sync/logins.py): `oppen_logins`, one row per attempt to log in (user
name, client address, method, outcome; never a password), which login throttling counts
so it holds across server processes; and `oppen_console_sessions`, one row per console
session (a hash of its id, who, until when, when it was ended); and
`oppen_console_keys`, the key that signs session tokens when OPPEN_SESSION_SECRET is not
set, made once per database. Nothing existing
changes; downgrading drops them, which only logs everyone out and forgets the attempts.
Frozen: the columns are spelled out here, not imported from schema.py.
"""
from alembic import op
import sqlalchemy as sa

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# BIGINT on MySQL, INTEGER PRIMARY KEY (rowid, autoincrement) on SQLite.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
MYSQL_OPTS = {"mysql_charset": "utf8mb4", "mysql_engine": "InnoDB"}


def upgrade() -> None:
    op.create_table(
        "oppen_logins",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime, nullable=False),
        sa.Column("username", sa.String(100), nullable=False),
        sa.Column("client", sa.String(100), nullable=False),
        sa.Column("method", sa.String(12), nullable=False),
        sa.Column("outcome", sa.String(12), nullable=False),
        sa.Column("detail", sa.String(200)),
        **MYSQL_OPTS,
    )
    op.create_index("ix_oppen_logins_username", "oppen_logins", ["username", "at"])
    op.create_index("ix_oppen_logins_client", "oppen_logins", ["client", "at"])
    op.create_table(
        "oppen_console_sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("username", sa.String(100), nullable=False),
        sa.Column("method", sa.String(12), nullable=False),
        sa.Column("client", sa.String(100), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("expires_at", sa.DateTime, nullable=False),
        sa.Column("ended_at", sa.DateTime),
        sa.Column("ended_reason", sa.String(20)),
        **MYSQL_OPTS,
    )
    op.create_index("ix_oppen_console_sessions_username", "oppen_console_sessions",
                    ["username"])
    op.create_table(
        "oppen_console_keys",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        **MYSQL_OPTS,
    )


def downgrade() -> None:
    op.drop_table("oppen_console_keys")
    op.drop_index("ix_oppen_console_sessions_username", table_name="oppen_console_sessions")
    op.drop_table("oppen_console_sessions")
    op.drop_index("ix_oppen_logins_client", table_name="oppen_logins")
    op.drop_index("ix_oppen_logins_username", table_name="oppen_logins")
    op.drop_table("oppen_logins")
