"""The worker: retry schedule per invoice, the run queue, worker heartbeats, Oppen's
health per target, alerts, and the day our tables were created.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25

`oppen_invoices` gains the automatic retry schedule (`next_attempt_at`, `retry_count`,
`first_attempt_at`, `attention_at`), all empty for existing rows: an invoice that was
failing before this revision is not retried on its own until a run or a resend gives it
a schedule. (Audited days since `tables_created_on` that were never registered are
picked up by a worker: that is what the worker is for.) `oppen_runs` gains
what a queued run needs (`request_json`, `queued_at`, `worker_id`, the cancel request);
existing runs keep every value and get NULLs. New tables: `oppen_workers` (heartbeats),
`oppen_target_state` (is Oppen answering; the scan lease), `oppen_alerts` (conditions and
the webhook's outbox) and `oppen_meta`, where `tables_created_on` records the day our
tables were created: OPPEN_PICKUP_SINCE's default, so a chain with years of audits never
has its history picked up and sent. On a database that already holds our rows that day
is the earliest one they show (an invoice registered, a run started), in Argentina's
calendar; on a new database it is today. Frozen: columns and constants are spelled out.
"""
import datetime as dt
from zoneinfo import ZoneInfo

from alembic import context, op
import sqlalchemy as sa

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
MYSQL_OPTS = {"mysql_charset": "utf8mb4", "mysql_engine": "InnoDB"}
AR_TZ = ZoneInfo("America/Argentina/Buenos_Aires")
TABLES_CREATED_ON = "tables_created_on"


def _tables_created_on() -> dt.date:
    """The earliest day our tables show (naive UTC read as Argentina's day), else today."""
    earliest = None
    if not context.is_offline_mode():
        bind = op.get_bind()
        for query in ("SELECT MIN(created_at) FROM oppen_invoices",
                      "SELECT MIN(started_at) FROM oppen_runs"):
            value = bind.exec_driver_sql(query).scalar()
            if isinstance(value, str):   # SQLite hands back text
                value = dt.datetime.fromisoformat(value)
            if value is not None and (earliest is None or value < earliest):
                earliest = value
    moment = (earliest.replace(tzinfo=dt.timezone.utc) if earliest is not None
              else dt.datetime.now(dt.timezone.utc))
    return moment.astimezone(AR_TZ).date()


def upgrade() -> None:
    with op.batch_alter_table("oppen_invoices") as batch:
        batch.add_column(sa.Column("next_attempt_at", sa.DateTime, nullable=True))
        batch.add_column(sa.Column("retry_count", sa.Integer, nullable=True))
        batch.add_column(sa.Column("first_attempt_at", sa.DateTime, nullable=True))
        batch.add_column(sa.Column("attention_at", sa.DateTime, nullable=True))
        batch.create_index("ix_oppen_invoices_due", ["target", "next_attempt_at"])
    with op.batch_alter_table("oppen_runs") as batch:
        batch.add_column(sa.Column("request_json", sa.Text, nullable=True))
        batch.add_column(sa.Column("queued_at", sa.DateTime, nullable=True))
        batch.add_column(sa.Column("worker_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("cancel_requested_at", sa.DateTime, nullable=True))
        batch.add_column(sa.Column("cancel_requested_by", sa.String(100), nullable=True))
        batch.create_index("ix_oppen_runs_queue", ["target", "state", "queued_at"])

    op.create_table(
        "oppen_workers",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("target", sa.String(120), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("embedded", sa.Boolean, nullable=False),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("started_at", sa.DateTime, nullable=False),
        sa.Column("heartbeat_at", sa.DateTime, nullable=False),
        sa.Column("stopped_at", sa.DateTime),
        sa.Column("run_id", sa.BigInteger),
        sa.Column("runs_done", sa.Integer, nullable=False, server_default="0"),
        **MYSQL_OPTS,
    )
    op.create_index("ix_oppen_workers_target", "oppen_workers", ["target", "heartbeat_at"])
    op.create_table(
        "oppen_target_state",
        sa.Column("target", sa.String(120), primary_key=True),
        sa.Column("down_since", sa.DateTime),
        sa.Column("down_error", sa.Text),
        sa.Column("probe_failures", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_probe_at", sa.DateTime),
        sa.Column("last_probe_at", sa.DateTime),
        sa.Column("scan_owner", sa.String(64)),
        sa.Column("scan_until", sa.DateTime),
        **MYSQL_OPTS,
    )
    op.create_table(
        "oppen_alerts",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("target", sa.String(120), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("open_key", sa.String(200)),
        sa.Column("opened_at", sa.DateTime, nullable=False),
        sa.Column("resolved_at", sa.DateTime),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("resolved_text", sa.Text),
        sa.Column("details_json", sa.Text),
        sa.Column("notify_due", sa.Boolean, nullable=False, server_default="0"),
        sa.Column("notified_at", sa.DateTime),
        sa.Column("resolved_notified_at", sa.DateTime),
        sa.Column("notify_owner", sa.String(64)),
        sa.Column("notify_until", sa.DateTime),
        sa.Column("notify_attempts", sa.Integer, nullable=False, server_default="0"),
        sa.UniqueConstraint("open_key", name="uq_oppen_alerts_open_key"),
        **MYSQL_OPTS,
    )
    op.create_index("ix_oppen_alerts_target", "oppen_alerts", ["target", "opened_at"])
    op.create_index("ix_oppen_alerts_notify", "oppen_alerts", ["notify_due"])
    meta = op.create_table(
        "oppen_meta",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(255), nullable=False),
        **MYSQL_OPTS,
    )
    op.bulk_insert(meta, [{"name": TABLES_CREATED_ON,
                           "value": _tables_created_on().isoformat()}])


def downgrade() -> None:
    for table in ("oppen_meta", "oppen_alerts", "oppen_target_state", "oppen_workers"):
        op.drop_table(table)
    with op.batch_alter_table("oppen_runs") as batch:
        batch.drop_index("ix_oppen_runs_queue")
        for column in ("cancel_requested_by", "cancel_requested_at", "worker_id",
                       "queued_at", "request_json"):
            batch.drop_column(column)
    with op.batch_alter_table("oppen_invoices") as batch:
        batch.drop_index("ix_oppen_invoices_due")
        for column in ("attention_at", "first_attempt_at", "retry_count", "next_attempt_at"):
            batch.drop_column(column)
