"""The binder: which invoice is which Oppen record, in what state, and who holds it.

Every function here is one short transaction (or reads). Claims and run locks carry
an owner and a lease so a process that dies mid-run never blocks forever and never
has its half-finished work silently dropped: whoever takes an expired claim over
must look the invoice up in Oppen before posting it again.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from .. import schedule as retry_schedule
from ..mapping import Excluded, Invalid, Mapped, MappingProfile, as_date, map_invoice
from . import schema
from .transactions import retry_deadlocks
from .schema import (CONFLICT, EXCLUDED, FAILED, INVALID, PENDING, SENDING, SENT, chunks, clip, db_now,
                     oppen_attempts, oppen_invoices, oppen_runs)


# --- reading the host's invoices -----------------------------------------------------

class _RawAmount(sa.types.TypeDecorator):
    """The amount as the driver returns it (Decimal on MySQL; int, float or text on SQLite)."""
    impl = sa.types.NullType
    cache_ok = True


_F = schema.facturas_trns
# `monto` is read as the database holds it, not through Numeric's conversion: on SQLite
# a text amount ('abc', '12,50') would otherwise break the whole day's read, where it
# must be one invalid row naming the field (the mapping checks every amount).
FACTURA_COLUMNS = (_F.c.id, _F.c.local, _F.c.fecha, _F.c.tipo, _F.c.punto_venta,
                   _F.c.nro_factura, sa.type_coerce(_F.c.monto, _RawAmount()).label("monto"),
                   _F.c.estado)
_ORDER = (schema.facturas_trns.c.tipo, schema.facturas_trns.c.punto_venta,
          schema.facturas_trns.c.nro_factura, schema.facturas_trns.c.id)


def read_facturas(conn: Connection, local: str, fecha: dt.date) -> list[Mapping]:
    """The `estado = 'ok'` invoices of one local and calendar day, in one query.

    The local is matched as MariaDB's collation matches it ("Matriz " is "MATRIZ": case
    and trailing spaces do not count), on SQLite too, so the same rows are sent
    whatever the database."""
    start, end = schema.day_bounds(fecha)
    f = schema.facturas_trns
    if conn.dialect.name == "sqlite":
        # Both sides folded by SQLite itself (ASCII case only), so a name with "Ñ" still
        # finds its own rows exactly.
        # Trailing spaces only, as MariaDB's PAD SPACE collations ignore them.
        same_local = (sa.func.lower(sa.func.rtrim(f.c.local))
                      == sa.func.lower(sa.func.rtrim(sa.literal(local, sa.String))))
    else:
        same_local = f.c.local == local
    query = (sa.select(*FACTURA_COLUMNS)
             .where(same_local, f.c.fecha >= start, f.c.fecha < end, f.c.estado == "ok")
             .order_by(*_ORDER))
    return [r._mapping for r in conn.execute(query)]


def read_facturas_by_id(conn: Connection, ids: Sequence[int]) -> list[Mapping]:
    f = schema.facturas_trns
    rows = []
    for part in chunks(list(ids)):
        rows.extend(r._mapping for r in conn.execute(
            sa.select(*FACTURA_COLUMNS).where(f.c.id.in_(part)).order_by(*_ORDER)))
    return rows


def run_profile(engine: Engine, profile: MappingProfile) -> MappingProfile:
    """The profile a run maps with: the configured one plus the labels of the host's
    `labels_oppen(local, cod_oppen)` table when that table exists (configuration wins)."""
    with schema.reading(engine) as conn:
        if not sa.inspect(conn).has_table(schema.labels_oppen.name):
            return profile
        L = schema.labels_oppen
        rows = conn.execute(sa.select(L.c.local, L.c.cod_oppen)).all()
    return profile.with_labels([tuple(r) for r in rows]) if rows else profile


# --- registering invoices for a target -------------------------------------------------

# States a registration checks again against the sales system (and the configuration):
# nothing has reached Oppen for them, so they may still change.
RECHECKED = (PENDING, FAILED, INVALID, EXCLUDED)

@dataclass
class Registered:
    """What a run needs of one invoice: its state row and its source row."""
    state_id: int
    factura: Mapping
    state: str
    reference: str
    needs_lookup: bool
    sernr: int | None
    last_error: str | None = None
    # The run's one mapping of this invoice (None for rows a run does not send:
    # sent or conflict). For a new row the client SerNr is already its own.
    mapped: Mapped | Invalid | None = None
    client_sernr: int | None = None      # a reassigned SerNr, if an admin gave one


# A reassigned SerNr moves this far from the invoice's own: past any row id we will
# ever have, so it never meets another invoice's base + id.
REASSIGN_STEP = 10 ** 13


def sernr_for(profile: MappingProfile, state_id: int, client_sernr: int | None = None
              ) -> int | None:
    """Client-assigned SerNr: allocated once per invoice from our database, never reused
    (base + our row id), unless an admin gave the invoice a new one (`client_sernr`)."""
    if profile.sernr_mode != "client":
        return None
    return client_sernr if client_sernr is not None else profile.sernr_base + state_id


def map_factura(factura: Mapping, profile: MappingProfile, today: dt.date,
                state_id: int | None, client_sernr: int | None = None) -> Mapped | Invalid:
    sernr = sernr_for(profile, state_id, client_sernr) if state_id is not None else None
    if profile.sernr_mode == "client" and sernr is None:
        sernr = 0  # only to learn the reference before the row has its id
    return map_invoice(factura, profile, today=today, sernr=sernr)


_FIDS = sa.bindparam("r_fids", expanding=True)
_STATE_ROWS = sa.select(oppen_invoices).where(
    oppen_invoices.c.target == sa.bindparam("r_target"), oppen_invoices.c.factura_id.in_(_FIDS))
_NEW_IDS = sa.select(oppen_invoices.c.id, oppen_invoices.c.factura_id).where(
    oppen_invoices.c.target == sa.bindparam("r_target"), oppen_invoices.c.factura_id.in_(_FIDS))


@retry_deadlocks
def register(engine: Engine, target: str, facturas: Sequence[Mapping], profile: MappingProfile,
             today: dt.date, *, retry_in: float | None = None) -> list[Registered]:
    """Make sure each invoice has a state row for `target`; re-check the unsent ones.

    A row whose data was fixed in the host application goes from invalid back to
    pending, and one that became unmappable goes to invalid; sent and conflict rows
    are never touched. `retry_in`: a new pending row is due for an automatic retry that
    many seconds from now (a lease), in case the run that registers it dies before it
    records an outcome; the outcome replaces that time.
    """
    now = schema.utcnow()
    t = oppen_invoices
    by_factura = {f["id"]: f for f in facturas}
    ids = list(by_factura)
    existing: dict[int, Mapping] = {}
    with engine.begin() as conn:
        due = (None if retry_in is None
               else db_now(conn) + dt.timedelta(seconds=retry_in))
        for part in chunks(ids):
            for r in conn.execute(_STATE_ROWS, {"r_target": target, "r_fids": part}):
                existing[r.factura_id] = r._mapping
        new_rows = []
        mapped_now: dict[int, Mapped | Invalid] = {}
        for fid in ids:
            if fid in existing:
                continue
            factura = by_factura[fid]
            mapped = mapped_now[fid] = map_factura(factura, profile, today, None)
            valid = isinstance(mapped, Mapped)
            excluded = isinstance(mapped, Excluded)
            new_rows.append({
                "target": target, "factura_id": fid, "local": factura["local"],
                "fecha": as_date(factura["fecha"]), "tipo": _clip_str(factura["tipo"], 10),
                "reference": mapped.reference[:120],
                "official_sernr": mapped.official_sernr if valid else None,
                "monto": mapped.amount if valid else _safe_amount(factura["monto"]),
                "state": PENDING if valid else EXCLUDED if excluded else INVALID,
                "needs_lookup": False,
                "attempts": 0,
                "last_error": None if valid else _problem(mapped),
                "error_kind": None if valid or excluded else schema.ERROR_INVALID,
                "created_at": now, "updated_at": now,
                "next_attempt_at": due if valid else None,
            })
        inserted = {r["factura_id"] for r in new_rows}
        if new_rows:
            all_ours = True
            try:
                with conn.begin_nested():
                    insert_rows(conn, t, new_rows)
            except IntegrityError:
                all_ours = False
                # Another process registered some of them first: theirs stand.
                for row in new_rows:
                    try:
                        with conn.begin_nested():
                            conn.execute(sa.insert(t), [row])
                    except IntegrityError:
                        pass
            written = {r["factura_id"]: r for r in new_rows}
            for part in chunks(list(written)):
                if all_ours:
                    # Each row is what we just wrote: only its id is new to us.
                    for r in conn.execute(_NEW_IDS, {"r_target": target, "r_fids": part}):
                        row = existing[r.factura_id] = written[r.factura_id]
                        row.update(id=r.id, sernr=None, client_sernr=None)
                else:
                    for r in conn.execute(_STATE_ROWS, {"r_target": target, "r_fids": part}):
                        existing[r.factura_id] = r._mapping

        result, changes = [], []
        for fid in ids:
            row = existing[fid]
            factura = by_factura[fid]
            state, reference, error = row["state"], row["reference"], row["last_error"]
            kind = row["error_kind"]
            # Rows inserted just now were mapped a moment ago; only older ones may have
            # changed in the sales system since.
            mapped = None
            if fid in inserted and fid in mapped_now:
                mapped = _with_sernr(mapped_now[fid], profile, row["id"])
            if state in RECHECKED and fid not in inserted:
                mapped = map_factura(factura, profile, today, row["id"], row["client_sernr"])
                posted_before = row["attempts"] > 0 or row["needs_lookup"]
                number_now = mapped.official_sernr if isinstance(mapped, Mapped) else None
                if posted_before and row["official_sernr"] and number_now != row["official_sernr"]:
                    # An earlier POST may be in Oppen under the old number: a lookup by
                    # the new one would miss it and send a second invoice.
                    new = (CONFLICT, reference,
                           f"Conflicto: la factura cambió en el sistema de ventas después de un "
                           f"envío que pudo llegar a Oppen como {row['official_sernr']}; "
                           "revisala en Oppen antes de reenviar", schema.ERROR_CONFLICT)
                elif isinstance(mapped, Excluded):
                    new = (EXCLUDED, mapped.reference, mapped.reason, None)
                elif isinstance(mapped, Invalid):
                    new = (INVALID, mapped.reference, _problem(mapped), schema.ERROR_INVALID)
                elif state in (INVALID, EXCLUDED):
                    new = (PENDING, mapped.reference, None, None)
                else:
                    new = (state, mapped.reference, error, kind)
                if new != (state, reference, error, kind):
                    state, reference, error, kind = new
                    changes.append({"b_id": row["id"], "b_state": state, "b_ref": reference[:120],
                                    "b_err": error, "b_kind": kind,
                                    "b_off": number_now if state in (PENDING, FAILED)
                                    else row["official_sernr"], "b_now": now})
            result.append(Registered(row["id"], factura, state, reference, bool(row["needs_lookup"]),
                                     row["sernr"], error, mapped, row["client_sernr"]))
        if changes:
            conn.execute(
                # Spelled out: an IN list cannot be expanded in an executemany.
                sa.update(t).where(t.c.id == sa.bindparam("b_id"),
                                   sa.or_(*(t.c.state == state for state in RECHECKED)))
                .values(state=sa.bindparam("b_state"), reference=sa.bindparam("b_ref"),
                        last_error=sa.bindparam("b_err"), error_kind=sa.bindparam("b_kind"),
                        official_sernr=sa.bindparam("b_off"),
                        updated_at=sa.bindparam("b_now")),
                changes)
    return result


def _problem(result: Invalid | Excluded) -> str:
    """What a row that is not sent records: the exclusion's reason, or the bad data."""
    if isinstance(result, Excluded):
        return result.reason
    return f"Datos inválidos: {result.reason}"


def _with_sernr(mapped: Mapped | Invalid, profile: MappingProfile, state_id: int
                ) -> Mapped | Invalid:
    """A new row's mapping with the SerNr its id gives it (it was mapped before it had one,
    by `register` a moment ago: nothing else holds its payload, so it is completed in
    place rather than copied)."""
    sernr = sernr_for(profile, state_id)
    if sernr is None or not isinstance(mapped, Mapped):
        return mapped
    mapped.payload["SerNr"] = sernr
    return mapped


def _clip_str(value, limit: int) -> str | None:
    return None if value is None else str(value)[:limit]


def _safe_amount(value):
    try:
        amount = Decimal(str(value))
        return amount if amount.is_finite() and abs(amount) < Decimal("1e13") else None
    except (InvalidOperation, ValueError):
        return None


def count_settled(engine: Engine, target: str, factura_ids: Sequence[int]) -> int:
    """How many of these invoices a run would not count: sent, or excluded by the
    configuration, as their state rows say now."""
    t = oppen_invoices
    count = 0
    with schema.reading(engine) as conn:
        for part in chunks(list(factura_ids)):
            count += conn.execute(sa.select(sa.func.count()).where(
                t.c.target == target, t.c.factura_id.in_(part),
                t.c.state.in_((SENT, EXCLUDED)))).scalar() or 0
    return count


# --- claims --------------------------------------------------------------------------

CLAIMABLE = (PENDING, FAILED)
KEEP = object()   # mark_pending: leave the automatic retry's schedule as it is

# The hot path's statements are built once: building one per call (its IN list coerced
# value by value, its cache key generated anew) cost more than the database's own work.
_T = oppen_invoices
_IDS = sa.bindparam("c_ids", expanding=True)
_NOW = sa.bindparam("c_now", type_=sa.DateTime)
_UNTIL = sa.bindparam("c_until", type_=sa.DateTime)
_OWNER = sa.bindparam("c_owner", type_=sa.String)
# needs_lookup is assigned before state: MySQL evaluates SET left to right and would
# otherwise see the new state.
_CLAIM = (sa.update(_T)
          .where(_T.c.id.in_(_IDS),
                 sa.or_(_T.c.state.in_(CLAIMABLE),
                        sa.and_(_T.c.state == SENDING, _T.c.claim_until < _NOW)))
          .ordered_values(
              (_T.c.needs_lookup, sa.case((_T.c.state == SENDING, sa.true()),
                                          else_=_T.c.needs_lookup)),
              (_T.c.state, SENDING), (_T.c.claim_owner, _OWNER), (_T.c.claim_until, _UNTIL),
              (_T.c.next_attempt_at, _UNTIL), (_T.c.updated_at, _NOW)))
_CLAIMED = sa.select(_T.c.id, _T.c.needs_lookup).where(_T.c.id.in_(_IDS),
                                                       _T.c.claim_owner == _OWNER,
                                                       _T.c.state == SENDING)


# One outcome's values, as the batch statement below carries them per row.
_OUTCOME_COLUMNS = (("b_id", sa.BigInteger()), ("b_state", sa.String(16)),
                    ("b_lookup", sa.Boolean()), ("b_sernr", sa.BigInteger()),
                    ("b_total", sa.Numeric(15, 2)), ("b_posts", sa.Integer()),
                    ("b_error", sa.Text()), ("b_kind", sa.String(32)),
                    ("b_status", sa.Integer()), ("b_req", sa.Text()), ("b_resp", sa.Text()))
# A batch is padded up to the next of these. Compiling one costs time once per process
# (256 rows: a quarter of a second, 64: 36 ms), which a short run would feel.
RECORD_SIZES = (1, 4, 16, 64)


def _record_statement(size: int) -> sa.Update:
    """A batch of outcomes written by one UPDATE joined to its rows (`size` of them), each
    where the claim is still this run's."""
    rows = [sa.select(*(sa.bindparam(f"r{i}_{name}", type_=type_).label(name)
                        for name, type_ in _OUTCOME_COLUMNS)) for i in range(size)]
    v = (sa.union_all(*rows) if size > 1 else rows[0]).subquery("v")
    now = sa.bindparam("b_now", type_=sa.DateTime)

    def sent_clears(column: sa.Column, value=None):
        # A sent invoice is never retried on its own: its schedule is cleared.
        return sa.case((v.c.b_state == SENT, value), else_=column)

    return (sa.update(_T)
            .where(_T.c.id == v.c.b_id, _T.c.claim_owner == sa.bindparam("b_owner"))
            .values(state=v.c.b_state, needs_lookup=v.c.b_lookup,
                    sernr=sa.func.coalesce(v.c.b_sernr, _T.c.sernr),
                    total_oppen=sa.func.coalesce(v.c.b_total, _T.c.total_oppen),
                    attempts=_T.c.attempts + v.c.b_posts,
                    last_error=v.c.b_error, error_kind=v.c.b_kind,
                    last_http_status=v.c.b_status,
                    request_body=sa.func.coalesce(v.c.b_req, _T.c.request_body),
                    response_body=sa.func.coalesce(v.c.b_resp, _T.c.response_body),
                    claim_owner=None, claim_until=None, updated_at=now,
                    sent_at=sent_clears(_T.c.sent_at, now),
                    next_attempt_at=sent_clears(_T.c.next_attempt_at),
                    retry_count=sent_clears(_T.c.retry_count, 0),
                    first_attempt_at=sent_clears(_T.c.first_attempt_at),
                    attention_at=sent_clears(_T.c.attention_at)))


@dataclass(frozen=True, slots=True)
class _DriverStatement:
    """A statement compiled once for a dialect, run through the driver with its values in
    order. SQLAlchemy's per-execution work (a cache key over every bound parameter, then
    each parameter resolved by name) grows with a statement's parameters: for a batch of
    256 outcomes it cost more than the database's own work."""
    sql: str
    slots: tuple[tuple[str | None, object, object], ...]   # (name, constant, processor)
    statement: sa.Executable

    @classmethod
    def compile(cls, statement, dialect, types: Mapping[str, sa.types.TypeEngine]):
        compiled = statement.compile(dialect=dialect)
        if not compiled.positional:     # a driver with named parameters: SQLAlchemy's way
            return cls("", (), statement)
        slots = []
        for name in compiled.positiontup:
            type_ = types.get(name)
            if type_ is None:       # a constant of the statement (`'sent'`, 0, NULL)
                bind = compiled.binds[name]
                processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
                slots.append((None, bind.value if processor is None or bind.value is None
                              else processor(bind.value), None))
            else:
                slots.append((name, None, type_.dialect_impl(dialect).bind_processor(dialect)))
        return cls(compiled.string, tuple(slots), statement)

    def execute(self, conn: Connection, values: Mapping[str, object]) -> None:
        if not self.sql:
            conn.execute(self.statement, values)
            return
        args = []
        for name, constant, processor in self.slots:
            value = constant if name is None else values[name]
            args.append(value if processor is None or value is None else processor(value))
        conn.exec_driver_sql(self.sql, tuple(args))

    def execute_many(self, conn: Connection, rows: Sequence[Mapping[str, object]]) -> None:
        """One row of values each (MySQL's driver makes an INSERT of many rows one
        statement; SQLite steps through them in C)."""
        if not self.sql:
            conn.execute(self.statement, list(rows))
            return
        conn.exec_driver_sql(self.sql, [tuple(
            constant if name is None else (
                row[name] if processor is None or row[name] is None else processor(row[name]))
            for name, constant, processor in self.slots) for row in rows])


@functools.lru_cache(maxsize=16)
def _insert_for(dialect, table: sa.Table, names: tuple[str, ...]) -> _DriverStatement:
    """An INSERT of these columns of `table`, a row per dict (the hot path's inserts)."""
    statement = sa.insert(table).values(
        {name: sa.bindparam(name, type_=table.c[name].type) for name in names})
    return _DriverStatement.compile(statement, dialect, {n: table.c[n].type for n in names})


def insert_rows(conn: Connection, table: sa.Table, rows: Sequence[Mapping]) -> None:
    """Rows that all have the same keys, inserted through the driver in one executemany."""
    if rows:
        _insert_for(conn.dialect, table, tuple(rows[0])).execute_many(conn, rows)


@functools.lru_cache(maxsize=64)
def _record_for(dialect, size: int) -> _DriverStatement:
    types = {f"r{i}_{name}": type_ for i in range(size) for name, type_ in _OUTCOME_COLUMNS}
    types.update(b_owner=sa.String(), b_now=sa.DateTime())
    return _DriverStatement.compile(_record_statement(size), dialect, types)


def prepare(engine: Engine) -> None:
    """Compile the batch statements of `record` now, before a run starts sending: done
    on the first batches instead, it held the sending loop (and every thread waiting
    for its next invoice) for tens of milliseconds."""
    for size in RECORD_SIZES:
        _record_for(engine.dialect, size)


def _write_outcomes(conn: Connection, owner: str, now: dt.datetime,
                    outcomes: Sequence[Outcome]) -> None:
    """The outcomes in one statement per RECORD_SIZES[-1] of them: MySQL's driver sends
    an executemany of an UPDATE row by row, a round trip and a parse each, which cost
    more of the sync's CPU than the POST itself. A few fixed sizes, padded with rows that
    match nothing, keep the compiled statements few."""
    for start in range(0, len(outcomes), RECORD_SIZES[-1]):
        part = outcomes[start:start + RECORD_SIZES[-1]]
        size = next(s for s in RECORD_SIZES if s >= len(part))
        values: dict = {"b_owner": owner, "b_now": now}
        for i in range(size):
            if i < len(part):
                o = part[i]
                row = (o.state_id, o.state, o.needs_lookup, o.sernr, o.total_oppen, o.posts,
                       clip(o.error, 4000),
                       (o.error_kind or schema.ERROR_UNKNOWN) if o.error else None,
                       o.http_status, clip(o.request_body), clip(o.response_body))
            else:
                row = (None,) * len(_OUTCOME_COLUMNS)   # matches no row
            values.update(zip((f"r{i}_{name}" for name, _ in _OUTCOME_COLUMNS), row))
        _record_for(conn.dialect, size).execute(conn, values)




@retry_deadlocks
def claim(engine: Engine, state_ids: Sequence[int], owner: str, lease: float
          ) -> dict[int, bool]:
    """Claim the invoices that are free (or whose claim expired), in one transaction.

    Returns {state_id: needs_lookup} for the ones now ours. Taking over an expired
    "sending" claim sets needs_lookup: its POST may have reached Oppen. A claim is also
    an automatic retry's due time: if its run dies, the invoice is due when the claim
    expires (the outcome, when it is recorded, replaces that time).
    """
    claimed: dict[int, bool] = {}
    with engine.begin() as conn:
        now = db_now(conn)
        until = now + dt.timedelta(seconds=lease)
        for part in chunks(list(state_ids)):
            conn.execute(_CLAIM, {"c_ids": part, "c_now": now, "c_until": until,
                                  "c_owner": owner})
            for r in conn.execute(_CLAIMED, {"c_ids": part, "c_owner": owner}):
                claimed[r.id] = bool(r.needs_lookup)
    return claimed


def release_claims(conn: Connection, owner: str, reason: str, *,
                   retry_in: float | None = 0.0) -> int:
    """Hand back claims a run ends without an outcome for (it was interrupted).

    Their POST may have left before the interruption, so the next run must look
    them up first. They are due for an automatic retry `retry_in` seconds from now
    (None: not automatically, e.g. an admin cancelled the run).
    """
    t = oppen_invoices
    due = None if retry_in is None else db_now(conn) + dt.timedelta(seconds=retry_in)
    return conn.execute(sa.update(t).where(t.c.claim_owner == owner, t.c.state == SENDING)
                        .values(state=PENDING, needs_lookup=True, claim_owner=None,
                                claim_until=None, last_error=reason, next_attempt_at=due,
                                error_kind=schema.ERROR_UNKNOWN,
                                updated_at=schema.utcnow())).rowcount


@dataclass(slots=True)
class Attempt:
    kind: str            # post, lookup, link
    outcome: str         # sent, duplicate, rejected, unknown, refused, found, not_found, conflict, auth
    at: dt.datetime
    duration_ms: int
    http_status: int | None = None
    error: str | None = None
    response_body: str | None = None
    error_kind: str | None = None   # schema.ERROR_*, with `error`


@dataclass(slots=True)   # one per invoice of a run: kept small
class Outcome:
    """What happened to one claimed invoice in this run."""
    state_id: int
    reference: str
    state: str                   # sent, failed, conflict, pending
    needs_lookup: bool
    sernr: int | None = None
    error: str | None = None
    http_status: int | None = None
    request_body: str | None = None
    response_body: str | None = None
    posts: int = 0
    attempts: list[Attempt] = field(default_factory=list)
    total_oppen: Decimal | None = None   # the Total Oppen holds for it (VAT included)
    error_kind: str | None = None        # schema.ERROR_*, with `error`
    # How it continues when not sent (schedule.TRANSIENT, NOW, NEVER); None: by its
    # state (pending is due now; failed, conflict and invalid wait for a person).
    retry: str | None = None


@retry_deadlocks
def record(engine: Engine, owner: str, run_id: int | None, outcomes: Sequence[Outcome],
           progress: Mapping | None = None, *,
           schedule: retry_schedule.Schedule | None = None, fresh: bool = False) -> None:
    """Write a batch of outcomes, their attempts and the run's progress in one transaction.

    A sent invoice's automatic retry is cleared. With a `schedule`, every other outcome
    also sets when the invoice is tried again on its own (`_write_schedule`); `fresh` (a
    person's run) starts the schedule over."""
    now = schema.utcnow()
    with engine.begin() as conn:
        unsent = [o for o in outcomes if o.state != SENT]
        if unsent and schedule is not None:
            _write_schedule(conn, owner, unsent, schedule, fresh)
        if outcomes:
            _write_outcomes(conn, owner, now, outcomes)
            attempts = [{"oppen_invoice_id": o.state_id, "run_id": run_id, "kind": a.kind,
                         "at": a.at, "duration_ms": a.duration_ms, "http_status": a.http_status,
                         "outcome": a.outcome, "error": clip(a.error, 4000),
                         "error_kind": (a.error_kind or schema.ERROR_UNKNOWN) if a.error else None,
                         "response_body": clip(a.response_body, 4000)}
                        for o in outcomes for a in o.attempts]
            insert_rows(conn, oppen_attempts, attempts)
        if run_id is not None and progress is not None:
            # Progress only: the run's heartbeat is the heartbeat thread's, on the
            # database's clock, whatever this thread is waiting on. Only while the run
            # is this owner's: a process resumed after a worker took its run over must
            # not write over the new owner's progress.
            conn.execute(sa.update(oppen_runs).where(oppen_runs.c.id == run_id,
                                                     oppen_runs.c.owner == owner)
                         .values(**progress))


def _write_schedule(conn: Connection, owner: str, outcomes: Sequence[Outcome],
                    schedule: retry_schedule.Schedule, fresh: bool) -> None:
    """Each outcome's automatic retry, on the database's clock: sent clears it; a
    transient failure takes the next step of the schedule (or reaches the horizon:
    "requiere atención"); pending for a reason of ours is due now; anything a person
    must look at is never retried on its own."""
    t = oppen_invoices
    now = db_now(conn)
    ids = [o.state_id for o in outcomes]
    current = {}
    for part in chunks(ids):
        for r in conn.execute(sa.select(t.c.id, t.c.retry_count, t.c.first_attempt_at,
                                        t.c.attention_at).where(t.c.id.in_(part),
                                                                t.c.claim_owner == owner)):
            current[r.id] = r
    rows = []
    for o in outcomes:
        row = current.get(o.state_id)
        if row is None:
            continue   # no longer ours: the next owner writes its schedule
        mode = o.retry or (retry_schedule.NOW if o.state == PENDING else retry_schedule.NEVER)
        count, first, attention = row.retry_count or 0, row.first_attempt_at, row.attention_at
        if o.state == SENT:
            due, count, first, attention = None, 0, None, None
        elif mode == retry_schedule.TRANSIENT:
            step = schedule.step(retry_count=count, first_attempt_at=first, now=now,
                                 fresh=fresh)
            due, count, first, attention = (step.next_attempt_at, step.retry_count,
                                            step.first_attempt_at, step.attention_at)
        elif mode == retry_schedule.NOW:
            due = now
        else:
            due = None
        rows.append({"s_id": o.state_id, "s_due": due, "s_count": count, "s_first": first,
                     "s_attention": attention})
    if rows:
        conn.execute(sa.update(t).where(t.c.id == sa.bindparam("s_id"), t.c.claim_owner == owner)
                     .values(next_attempt_at=sa.bindparam("s_due", type_=sa.DateTime),
                             retry_count=sa.bindparam("s_count", type_=sa.Integer),
                             first_attempt_at=sa.bindparam("s_first", type_=sa.DateTime),
                             attention_at=sa.bindparam("s_attention", type_=sa.DateTime)),
                     rows)


@retry_deadlocks
def mark_pending(engine: Engine, state_ids: Sequence[int], reason: str,
                 kind: str = schema.ERROR_UNKNOWN, *, retry_in: float | None | object = KEEP
                 ) -> None:
    """Record why a set of unsent invoices was not attempted (e.g. authentication failed).

    `retry_in`: due for an automatic retry that many seconds from now (and, if they had
    none, their failing starts now, for the horizon); None: not automatically; KEEP:
    leave their schedule as it is."""
    t = oppen_invoices
    with engine.begin() as conn:
        values = {"last_error": reason, "error_kind": kind, "updated_at": schema.utcnow()}
        if retry_in is None:
            values["next_attempt_at"] = None
        elif retry_in is not KEEP:
            now = db_now(conn)
            values["next_attempt_at"] = now + dt.timedelta(seconds=float(retry_in))
            values["first_attempt_at"] = sa.func.coalesce(t.c.first_attempt_at, now)
        for part in chunks(list(state_ids)):
            conn.execute(sa.update(t).where(t.c.id.in_(part), t.c.state.in_(CLAIMABLE))
                         .values(**values))
