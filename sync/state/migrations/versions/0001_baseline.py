"""Baseline: our four tables as `init_db` made them before migrations existed.

Revision ID: 0001
Revises:
Create Date: 2026-11-24

Databases made before this revision (`init_db` created what was missing, and later
added indexes it lacked, e.g. ix_oppen_invoices_claim) already hold some or all of
these tables with exactly this shape and a chain's history in them. For those this
revision creates only what is missing, so they are adopted at 0001 with every row in
place; on an empty database it creates everything. Frozen: it never changes, later
revisions change the schema (and schema.py with them).
"""
from alembic import context, op
import sqlalchemy as sa

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# BIGINT on MySQL, INTEGER PRIMARY KEY (rowid, autoincrement) on SQLite.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
MYSQL_OPTS = {"mysql_charset": "utf8mb4", "mysql_engine": "InnoDB"}


def _tables() -> dict[str, tuple[list, list[tuple[str, list[str]]]]]:
    """{table: (columns and constraints, [(index, columns)])}, as of commit 6933c77."""
    return {
        "oppen_invoices": ([
            sa.Column("id", BigId, primary_key=True, autoincrement=True),
            sa.Column("target", sa.String(120), nullable=False),
            sa.Column("factura_id", sa.BigInteger, nullable=False),
            sa.Column("local", sa.String(100), nullable=False),
            sa.Column("fecha", sa.Date, nullable=False),
            sa.Column("tipo", sa.String(10)),
            sa.Column("reference", sa.String(120), nullable=False),
            sa.Column("official_sernr", sa.String(40)),
            sa.Column("monto", sa.Numeric(15, 2)),
            sa.Column("state", sa.String(12), nullable=False),
            sa.Column("needs_lookup", sa.Boolean, nullable=False),
            sa.Column("sernr", sa.BigInteger),
            sa.Column("attempts", sa.Integer, nullable=False),
            sa.Column("last_error", sa.Text),
            sa.Column("last_http_status", sa.Integer),
            sa.Column("request_body", sa.Text),
            sa.Column("response_body", sa.Text),
            sa.Column("claim_owner", sa.String(64)),
            sa.Column("claim_until", sa.DateTime),
            sa.Column("created_at", sa.DateTime, nullable=False),
            sa.Column("updated_at", sa.DateTime, nullable=False),
            sa.Column("sent_at", sa.DateTime),
            sa.UniqueConstraint("target", "factura_id", name="uq_oppen_invoices_target_factura"),
        ], [
            ("ix_oppen_invoices_day", ["target", "local", "fecha", "state"]),
            ("ix_oppen_invoices_state", ["target", "state", "fecha"]),
            ("ix_oppen_invoices_fecha", ["target", "fecha"]),
            ("ix_oppen_invoices_claim", ["claim_owner", "state"]),
        ]),
        "oppen_attempts": ([
            sa.Column("id", BigId, primary_key=True, autoincrement=True),
            sa.Column("invoice_id", sa.BigInteger, nullable=False),
            sa.Column("run_id", sa.BigInteger),
            sa.Column("kind", sa.String(12), nullable=False),
            sa.Column("at", sa.DateTime, nullable=False),
            sa.Column("duration_ms", sa.Integer),
            sa.Column("http_status", sa.Integer),
            sa.Column("outcome", sa.String(20), nullable=False),
            sa.Column("error", sa.Text),
            sa.Column("response_body", sa.Text),
        ], [
            ("ix_oppen_attempts_invoice", ["invoice_id"]),
            ("ix_oppen_attempts_run", ["run_id"]),
        ]),
        "oppen_runs": ([
            sa.Column("id", BigId, primary_key=True, autoincrement=True),
            sa.Column("target", sa.String(120), nullable=False),
            sa.Column("kind", sa.String(12), nullable=False),
            sa.Column("local", sa.String(100)),
            sa.Column("fecha", sa.Date),
            sa.Column("username", sa.String(100)),
            sa.Column("reason", sa.Text),
            sa.Column("owner", sa.String(64), nullable=False),
            sa.Column("state", sa.String(12), nullable=False),
            sa.Column("started_at", sa.DateTime, nullable=False),
            sa.Column("heartbeat_at", sa.DateTime),
            sa.Column("finished_at", sa.DateTime),
            sa.Column("total", sa.Integer, nullable=False),
            sa.Column("processed", sa.Integer, nullable=False),
            sa.Column("exitosas", sa.Integer, nullable=False),
            sa.Column("fallidas", sa.Integer, nullable=False),
            sa.Column("current_ref", sa.String(120)),
            sa.Column("message", sa.Text),
            sa.Column("result_json", sa.Text),
        ], [
            ("ix_oppen_runs_day", ["target", "local", "fecha"]),
            ("ix_oppen_runs_started", ["started_at"]),
        ]),
        "oppen_run_locks": ([
            sa.Column("target", sa.String(120), primary_key=True),
            sa.Column("local", sa.String(100), primary_key=True),
            sa.Column("fecha", sa.Date, primary_key=True),
            sa.Column("run_id", sa.BigInteger, nullable=False),
            sa.Column("owner", sa.String(64), nullable=False),
            sa.Column("lease_until", sa.DateTime, nullable=False),
        ], []),
    }


def upgrade() -> None:
    if context.is_offline_mode():
        existing: set[str] = set()
        indexes: dict[str, set[str]] = {}
    else:
        inspector = sa.inspect(op.get_bind())
        existing = set(inspector.get_table_names())
        indexes = {name: {ix["name"] for ix in inspector.get_indexes(name)}
                   for name in existing}
    for name, (columns, table_indexes) in _tables().items():
        if name not in existing:
            op.create_table(name, *columns, **MYSQL_OPTS)
        for index, index_columns in table_indexes:
            if index not in indexes.get(name, ()):
                op.create_index(index, name, index_columns)


def downgrade() -> None:
    # Undoing the baseline would drop a chain's sync history (these tables held it
    # before migrations existed): never done by a command.
    raise NotImplementedError("La revisión base no se deshace: borraría el historial de envíos")
