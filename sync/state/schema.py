"""The database: the host application's tables (read, never altered) and our own state.

Our state answers "which invoice is which Oppen SerNr, and in what state", per Oppen
target (environment + API project), so an invoice sent to the sandbox is not "sent"
for production. Every write is a short transaction; no transaction is ever held open
across an HTTP call. Works the same on SQLite (the embedded default) and MySQL/MariaDB.

Times we write are naive UTC (`utcnow`); the console shows them in Argentina's time.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, make_url

from ..errors import (ConfigError, OppenAuthError, OppenDuplicate, OppenRejected,
                      OppenTransportError)

metadata = sa.MetaData()

# BIGINT on MySQL, INTEGER PRIMARY KEY (rowid, autoincrement) on SQLite.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
MYSQL_OPTS = {"mysql_charset": "utf8mb4", "mysql_engine": "InnoDB"}

# --- The host application's tables (created only where missing: SQLite, tests, demo) --

facturas_trns = sa.Table(
    "facturas_trns", metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("local", sa.String(100), nullable=False),
    sa.Column("fecha", sa.DateTime, nullable=False),
    sa.Column("tipo", sa.String(10)),
    sa.Column("punto_venta", sa.String(20)),
    sa.Column("nro_factura", sa.String(30)),
    sa.Column("monto", sa.Numeric(15, 2)),
    sa.Column("estado", sa.String(20), nullable=False, server_default="ok"),
    sa.Index("ix_facturas_trns_local_fecha", "local", "fecha"),
    sa.Index("ix_facturas_trns_fecha", "fecha"),
    **MYSQL_OPTS,
)

locales_auditados = sa.Table(
    "locales_auditados", metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("local", sa.String(100), nullable=False),
    sa.Column("fecha", sa.Date, nullable=False),
    sa.Column("auditor", sa.String(100)),
    sa.Column("auditado_en", sa.DateTime),
    sa.UniqueConstraint("local", "fecha", name="uq_locales_auditados_local_fecha"),
    sa.Index("ix_locales_auditados_fecha", "fecha"),
    **MYSQL_OPTS,
)

cierres_locales = sa.Table(
    "cierres_locales", metadata,
    sa.Column("local", sa.String(100), primary_key=True),
    sa.Column("fecha", sa.Date, primary_key=True),
    sa.Column("cerrado_en", sa.DateTime),
    sa.Index("ix_cierres_locales_fecha", "fecha"),
    **MYSQL_OPTS,
)

anticipos = sa.Table(
    "anticipos", metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("local", sa.String(100), nullable=False),
    sa.Column("fecha", sa.Date, nullable=False),
    sa.Column("monto", sa.Numeric(15, 2)),
    sa.Column("estado", sa.String(20)),
    sa.Index("ix_anticipos_local_fecha", "local", "fecha"),
    **MYSQL_OPTS,
)

SOURCE_TABLES = (facturas_trns, locales_auditados, cierres_locales, anticipos)

# A host table some chains keep: each local's label code in Oppen. Optional (read when
# it exists, configuration wins), so it lives in its own MetaData: nothing creates,
# requires or migrates it.
host_optional = sa.MetaData()
labels_oppen = sa.Table(
    "labels_oppen", host_optional,
    sa.Column("local", sa.String(100), primary_key=True),
    sa.Column("cod_oppen", sa.String(60)),
    **MYSQL_OPTS,
)

# --- Our own tables ---------------------------------------------------------------

# States of an invoice for one target. "sending" is a claim with a lease: the
# invoice's POST may be in flight; if its owner dies, the next owner looks it up in
# Oppen before any new POST (needs_lookup).
# "excluded" is a row the profile does not send (a local excluded by configuration, a
# type the profile leaves out): audited, never sent, with the reason in last_error.
PENDING, SENDING, SENT, FAILED, INVALID, CONFLICT, EXCLUDED = (
    "pending", "sending", "sent", "failed", "invalid", "conflict", "excluded")
STATES = (PENDING, SENDING, SENT, FAILED, INVALID, CONFLICT, EXCLUDED)
# Labels for people: messages.STATE_LABELS (one place for every sentence).

# Why an invoice (or one attempt) did not get into Oppen, by what a person does next;
# stored in `error_kind`, which is NULL exactly when there is no error (an invoice's
# `last_error`, an attempt's `error`). Spanish labels: messages.ERROR_KIND_LABELS.
# These strings are data: changing one needs a migration that rewrites the rows.
ERROR_DUPLICATE = "duplicate"   # Oppen already holds that number: link it or fix it
ERROR_REJECTED = "rejected"     # Oppen said no on purpose (4xx, unverifiable lookup)
ERROR_AUTH = "auth"             # credentials refused: fix them, nothing was sent
ERROR_TRANSPORT = "transport"   # no usable answer (connection, timeout, 5xx, 429)
ERROR_INVALID = "invalid"       # the sales system's data cannot be mapped
ERROR_CONFLICT = "conflict"     # Oppen holds the number with other data
ERROR_UNKNOWN = "unknown"       # anything else (interrupted run, unexpected error)
ERROR_SERNR_TAKEN = "sernr_taken"   # Oppen holds our SerNr under another number: give a new one
ERROR_KINDS = (ERROR_DUPLICATE, ERROR_REJECTED, ERROR_AUTH, ERROR_TRANSPORT, ERROR_INVALID,
               ERROR_CONFLICT, ERROR_UNKNOWN, ERROR_SERNR_TAKEN)


def error_kind_for(exc: BaseException) -> str:
    """The kind of an exception that kept an invoice out of Oppen (by its class, never
    by its message). Invalid data and conflicts are not exceptions: their writers use
    ERROR_INVALID and ERROR_CONFLICT."""
    if isinstance(exc, OppenDuplicate):
        return ERROR_DUPLICATE
    if isinstance(exc, OppenAuthError):
        return ERROR_AUTH
    if isinstance(exc, OppenTransportError):
        return ERROR_TRANSPORT
    if isinstance(exc, OppenRejected):   # LookupRefused included
        return ERROR_REJECTED
    return ERROR_UNKNOWN


oppen_invoices = sa.Table(
    "oppen_invoices", metadata,
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
    sa.Column("needs_lookup", sa.Boolean, nullable=False, default=False),
    sa.Column("sernr", sa.BigInteger),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("last_error", sa.Text),
    sa.Column("last_http_status", sa.Integer),
    sa.Column("request_body", sa.Text),
    sa.Column("response_body", sa.Text),
    sa.Column("claim_owner", sa.String(64)),
    sa.Column("claim_until", sa.DateTime),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
    sa.Column("sent_at", sa.DateTime),
    sa.Column("error_kind", sa.String(20)),     # one of ERROR_KINDS, with last_error
    sa.Column("total_oppen", sa.Numeric(15, 2)),   # Oppen's Total (VAT included)
    sa.Column("client_sernr", sa.BigInteger),   # a reassigned client SerNr (else base + id)
    # The worker's automatic retries (sync/worker.py), on the database's clock: when the
    # invoice may be tried again on its own (NULL: never, a person decides), how many
    # scheduled steps it took (OPPEN_RETRY_DELAYS), since when it has been failing, and
    # since when it "requiere atención" (past OPPEN_RETRY_HORIZON: no more automatic tries).
    sa.Column("next_attempt_at", sa.DateTime),
    sa.Column("retry_count", sa.Integer),           # NULL: none yet
    sa.Column("first_attempt_at", sa.DateTime),
    sa.Column("attention_at", sa.DateTime),
    sa.UniqueConstraint("target", "factura_id", name="uq_oppen_invoices_target_factura"),
    sa.Index("ix_oppen_invoices_day", "target", "local", "fecha", "state"),
    # Both below end with the columns the console reads, so its queries over a chain's
    # history read these indexes alone, never the rows (migration 0007): a page of
    # problem rows sorted by fecha, local, reference ("Facturas fallidas"), and the
    # counts and amounts of a period by day, local and state.
    sa.Index("ix_oppen_invoices_state", "target", "state", "fecha", "local", "reference"),
    sa.Index("ix_oppen_invoices_fecha", "target", "fecha", "local", "state", "monto"),
    sa.Index("ix_oppen_invoices_claim", "claim_owner", "state"),
    # "Errores por tipo": only rows with an error have a kind, so the range
    # `error_kind IS NOT NULL` of one target reads just those rows.
    sa.Index("ix_oppen_invoices_error_kind", "target", "error_kind", "fecha"),
    **MYSQL_OPTS,
)

# One row per HTTP exchange about an invoice (POST, lookup) or admin action (link).
oppen_attempts = sa.Table(
    "oppen_attempts", metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("oppen_invoice_id", sa.BigInteger, nullable=False),   # oppen_invoices.id
    sa.Column("run_id", sa.BigInteger),
    sa.Column("kind", sa.String(12), nullable=False),
    sa.Column("at", sa.DateTime, nullable=False),
    sa.Column("duration_ms", sa.Integer),
    sa.Column("http_status", sa.Integer),
    sa.Column("outcome", sa.String(20), nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("response_body", sa.Text),
    sa.Column("error_kind", sa.String(20)),     # one of ERROR_KINDS, with error
    # An invoice's last attempt and its attempts by kind, from the index alone (0007).
    sa.Index("ix_oppen_attempts_invoice", "oppen_invoice_id", "kind", "at"),
    sa.Index("ix_oppen_attempts_run", "run_id"),
    **MYSQL_OPTS,
)

RUNNING, DONE, INTERRUPTED, ERROR = "running", "done", "interrupted", "error"
# A run asked for and waiting for a worker (sync/worker.py), and one an admin cancelled.
QUEUED, CANCELLED = "queued", "cancelled"

oppen_runs = sa.Table(
    "oppen_runs", metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("target", sa.String(120), nullable=False),
    sa.Column("kind", sa.String(12), nullable=False),   # audit, resend, link
    sa.Column("local", sa.String(100)),
    sa.Column("fecha", sa.Date),
    sa.Column("username", sa.String(100)),
    sa.Column("reason", sa.Text),
    sa.Column("owner", sa.String(64), nullable=False),
    sa.Column("state", sa.String(12), nullable=False),
    sa.Column("started_at", sa.DateTime, nullable=False),
    sa.Column("heartbeat_at", sa.DateTime),
    sa.Column("finished_at", sa.DateTime),
    sa.Column("total", sa.Integer, nullable=False, default=0),
    sa.Column("processed", sa.Integer, nullable=False, default=0),
    sa.Column("exitosas", sa.Integer, nullable=False, default=0),
    sa.Column("fallidas", sa.Integer, nullable=False, default=0),
    sa.Column("current_ref", sa.String(120)),
    sa.Column("message", sa.Text),
    sa.Column("result_json", sa.Text),
    # The queue (sync/state/queue.py): what to run, as JSON (days and invoice ids), so a
    # worker can run a requested run or take over one whose process died; when it was
    # queued; the worker running it; an admin's request to cancel it.
    sa.Column("request_json", sa.Text),
    sa.Column("queued_at", sa.DateTime),
    sa.Column("worker_id", sa.String(64)),
    sa.Column("cancel_requested_at", sa.DateTime),
    sa.Column("cancel_requested_by", sa.String(100)),
    # How long it took by its own clock, to the millisecond: started_at and finished_at
    # keep whole seconds (MySQL's DATETIME), and a run of 0.8 s must not read "0 s".
    sa.Column("duration_ms", sa.BigInteger),
    sa.Index("ix_oppen_runs_day", "target", "local", "fecha"),
    sa.Index("ix_oppen_runs_started", "started_at"),
    **MYSQL_OPTS,
)

# At most one run per local/day and target, across threads, processes and hosts:
# the primary key is the lock, the lease lets a dead owner's lock be taken over.
oppen_run_locks = sa.Table(
    "oppen_run_locks", metadata,
    sa.Column("target", sa.String(120), primary_key=True),
    sa.Column("local", sa.String(100), primary_key=True),
    sa.Column("fecha", sa.Date, primary_key=True),
    sa.Column("run_id", sa.BigInteger, nullable=False),
    sa.Column("owner", sa.String(64), nullable=False),
    sa.Column("lease_until", sa.DateTime, nullable=False),
    **MYSQL_OPTS,
)

# "What may be retried now": the due invoices of one target, read from this index alone.
sa.Index("ix_oppen_invoices_due", oppen_invoices.c.target, oppen_invoices.c.next_attempt_at)
# The invoices that ran out of automatic tries, for Monitoreo (migration 0009).
sa.Index("ix_oppen_invoices_attention", oppen_invoices.c.target, oppen_invoices.c.attention_at)
# The queue: queued and running runs of one target.
sa.Index("ix_oppen_runs_queue", oppen_runs.c.target, oppen_runs.c.state, oppen_runs.c.queued_at)

# --- The worker's tables (sync/worker.py) -------------------------------------------

# One row per worker process: its heartbeat on the database's clock, shown in the
# console, and what decides whether the console starts a worker of its own.
oppen_workers = sa.Table(
    "oppen_workers", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("target", sa.String(120), nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("embedded", sa.Boolean, nullable=False),   # started by a console process
    sa.Column("state", sa.String(12), nullable=False),    # running, stopping, stopped, lost
    sa.Column("started_at", sa.DateTime, nullable=False),
    sa.Column("heartbeat_at", sa.DateTime, nullable=False),
    sa.Column("stopped_at", sa.DateTime),
    sa.Column("run_id", sa.BigInteger),                  # the run it is executing now
    sa.Column("runs_done", sa.Integer, nullable=False, server_default="0"),
    sa.Index("ix_oppen_workers_target", "target", "heartbeat_at"),
    **MYSQL_OPTS,
)

# One row per target: whether Oppen answers (down since when, and when a worker probes
# it next), and which worker scans for due work right now (a lease, so one scan at a time).
oppen_target_state = sa.Table(
    "oppen_target_state", metadata,
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

# Alerts (sync/alerts.py): a condition is open while `open_key` is set (unique: one open
# alert per condition and target) and says when it is resolved; a run that ended with
# failures is a one-off event (no key). `notify_due` marks what the webhook has not been
# told yet: the outbox that workers deliver, never in the way of sending invoices.
oppen_alerts = sa.Table(
    "oppen_alerts", metadata,
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
    sa.Index("ix_oppen_alerts_target", "target", "opened_at"),
    sa.Index("ix_oppen_alerts_notify", "notify_due"),
    **MYSQL_OPTS,
)

# Facts about this installation, name -> value: `tables_created_on` (AAAA-MM-DD, the day
# our tables were created; OPPEN_PICKUP_SINCE's default, so history is never picked up).
oppen_meta = sa.Table(
    "oppen_meta", metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(255), nullable=False),
    **MYSQL_OPTS,
)
TABLES_CREATED_ON = "tables_created_on"
WORKER_TABLES = (oppen_workers, oppen_target_state, oppen_alerts, oppen_meta)

OWN_TABLES = (oppen_invoices, oppen_attempts, oppen_runs, oppen_run_locks)

# One row per local/day each time it is reconciled against Oppen (sync/reconcile.py):
# when, the range asked for, the outcome and its counts. `detail_json` keeps the day's
# lists (missing, extra, different, annulled, corrected), so the console shows the last
# reconciliation of a day without asking Oppen again. Written once, never updated.
oppen_reconciliations = sa.Table(
    "oppen_reconciliations", metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("target", sa.String(120), nullable=False),
    sa.Column("run_id", sa.BigInteger),            # oppen_runs.id of kind "reconcile"
    sa.Column("reconciled_at", sa.DateTime, nullable=False),
    sa.Column("desde", sa.Date, nullable=False),   # the range that reconciliation covered
    sa.Column("hasta", sa.Date, nullable=False),
    sa.Column("local", sa.String(100), nullable=False),
    sa.Column("fecha", sa.Date, nullable=False),
    sa.Column("excluded", sa.Boolean, nullable=False),   # never synced: listed, not compared
    sa.Column("squares", sa.Boolean),              # NULL when excluded
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
    # "The last reconciliation of each day": a range of days of one target, newest id
    # per (local, fecha), read from this index alone.
    sa.Index("ix_oppen_reconciliations_day", "target", "fecha", "local", "id"),
    sa.Index("ix_oppen_reconciliations_run", "run_id"),
    **MYSQL_OPTS,
)
OWN_TABLES += (oppen_reconciliations,)
OWN_TABLES += WORKER_TABLES


# --- The console's logins (sync/logins.py) --------------------------------------------

# Every attempt to log in to the console (user name as typed, trimmed and case-folded;
# the client's address; never the password): the log, and what throttling counts.
oppen_logins = sa.Table(
    "oppen_logins", metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("at", sa.DateTime, nullable=False),
    sa.Column("username", sa.String(100), nullable=False),
    sa.Column("client", sa.String(100), nullable=False),
    sa.Column("method", sa.String(12), nullable=False),    # password, sso
    sa.Column("outcome", sa.String(12), nullable=False),   # ok, failed, locked
    sa.Column("detail", sa.String(200)),
    sa.Index("ix_oppen_logins_username", "username", "at"),
    sa.Index("ix_oppen_logins_client", "client", "at"),
    **MYSQL_OPTS,
)

# One row per console session: the SHA-256 of its random id (the browser holds the id,
# signed), who, until when, and when "Cerrar sesión" ended it.
oppen_console_sessions = sa.Table(
    "oppen_console_sessions", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("username", sa.String(100), nullable=False),
    sa.Column("method", sa.String(12), nullable=False),
    sa.Column("client", sa.String(100), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("expires_at", sa.DateTime, nullable=False),
    sa.Column("ended_at", sa.DateTime),
    sa.Column("ended_reason", sa.String(20)),
    sa.Index("ix_oppen_console_sessions_username", "username"),
    **MYSQL_OPTS,
)
# The key that signs session tokens when OPPEN_SESSION_SECRET is not set: made once per
# database, so every console process on it signs and checks alike.
oppen_console_keys = sa.Table(
    "oppen_console_keys", metadata,
    sa.Column("id", sa.String(64), primary_key=True),     # what the key is for: "session"
    sa.Column("value", sa.String(255), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    **MYSQL_OPTS,
)
LOGIN_TABLES = (oppen_logins, oppen_console_sessions, oppen_console_keys)
OWN_TABLES += LOGIN_TABLES

def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)


def _sqlite_pragmas(dbapi_conn, _record):
    # Autocommit at the driver level so that SQLAlchemy's "begin" event decides how a
    # transaction starts: BEGIN IMMEDIATE takes the write lock up front, so two
    # writers queue on busy_timeout instead of failing with "database is locked" when
    # a reader upgrades.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _sqlite_begin(conn):
    # Writers take the lock up front; readers (see `reading`) only take a snapshot, so
    # the console's polling never makes a run's writes wait.
    if conn.get_execution_options().get("read_only"):
        conn.exec_driver_sql("BEGIN")
    else:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def reading(engine: Engine):
    """A connection for reads only (a plain snapshot on SQLite; the same as
    `engine.connect()` elsewhere). Writing through it on SQLite could fail as busy."""
    return engine.execution_options(read_only=True).connect()


def make_engine(url: str, **kwargs) -> Engine:
    """An engine for SQLite or MySQL/MariaDB with the settings this package relies on."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            folder = Path(parsed.database).parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError:
                raise ConfigError(f"DATABASE_URL: no se puede crear la carpeta {str(folder)[:120]} "
                                  "para la base SQLite") from None
        engine = sa.create_engine(parsed, connect_args={"timeout": 30, "check_same_thread": False},
                                  **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    if backend in ("mysql", "mariadb"):
        if parsed.get_driver_name() != "pymysql":
            parsed = parsed.set(drivername=f"{backend}+pymysql")
        query = dict(parsed.query)
        query.setdefault("charset", "utf8mb4")
        parsed = parsed.set(query=query)
        kwargs.setdefault("pool_pre_ping", True)
        kwargs.setdefault("pool_recycle", 3600)
        kwargs.setdefault("isolation_level", "READ COMMITTED")
        return sa.create_engine(parsed, **kwargs)
    raise ConfigError(f"DATABASE_URL: base de datos no admitida ({backend})")


def init_db(engine: Engine, *, source_tables: bool | None = None) -> list[str]:
    """Create the host tables that are missing, then bring ours to the latest revision.

    The host application's tables are created only on SQLite (the embedded default) or
    when asked (demo data, tests): on the chain's MySQL they exist already, and an empty
    copy made there by mistake would hide that the URL points at the wrong database.
    They are never altered. Our own tables are Alembic's (`sync.state.migrate`): a
    database made before migrations existed is adopted with every row, and a second
    call changes nothing. Returns the names of the tables it created.
    """
    # Imported here: the migrations read this module's metadata.
    from . import migrate

    if source_tables is None:
        source_tables = engine.dialect.name == "sqlite"
    existing = set(sa.inspect(engine).get_table_names())
    host = [t for t in SOURCE_TABLES if source_tables and t.name not in existing]
    metadata.create_all(engine, tables=host, checkfirst=True)
    migrate.upgrade(engine)
    return [t.name for t in host + [t for t in OWN_TABLES if t.name not in existing]]


def check_schema(engine: Engine) -> list[str]:
    """Names of the tables the package needs that do not exist yet."""
    # (init-db creates ours; the host's must already be there on MySQL.)
    existing = set(sa.inspect(engine).get_table_names())
    return [t.name for t in SOURCE_TABLES + OWN_TABLES if t.name not in existing]


def day_bounds(fecha: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """A calendar day as a half-open DATETIME range, so the (local, fecha) index is used."""
    start = dt.datetime.combine(fecha, dt.time())
    return start, start + dt.timedelta(days=1)


CHUNK = 500
MAX_TEXT = 20000


def db_now(conn: Connection) -> dt.datetime:
    """The database's clock, for leases: two hosts on one MySQL must agree on when a
    claim expires even if their own clocks drift apart."""
    if conn.dialect.name in ("mysql", "mariadb"):
        return conn.execute(sa.text("SELECT UTC_TIMESTAMP()")).scalar()
    # SQLite's own clock (the operating system's), not this process's idea of it: every
    # process on the host then reads the same time, whatever it was told.
    text = conn.execute(sa.text("SELECT strftime('%Y-%m-%d %H:%M:%S', 'now')")).scalar()
    return dt.datetime.strptime(text, "%Y-%m-%d %H:%M:%S")


def new_owner() -> str:
    return uuid.uuid4().hex


def chunks(seq: Sequence, size: int = CHUNK) -> Iterable[Sequence]:
    for i in range(0, len(seq), size):
        yield seq[i:i + size]


def clip(text: str | None, limit: int = MAX_TEXT) -> str | None:
    if text is None:
        return None
    return text if len(text) <= limit else text[:limit] + "…"
