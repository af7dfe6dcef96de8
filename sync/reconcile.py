"""Reconciliation: does Oppen hold, to the cent, every invoice of each audited local/day?

    reconcile(engine, settings, desde, hasta, local)    the CLI's and the console's
    reconcile_due(engine, settings, now)                the worker's, every morning
      → the audited local/days, our rows and our states (one query each per span of days)
      → what Oppen holds for those days (`OppenClient.invoices_between`: a few paginated
        reads per span, every record checked, bounded when Oppen ignores the filter)
      → `attribute` + `compare_local` (pure): our rows against Oppen's records
      → the safe correction: an invoice Oppen provably holds, identical, becomes sent
      → stored in oppen_reconciliations, one row per local/day; alerted when one does
        not square

The comparison (`label_index`, `attribute`, `compare_local`, `day_json`, `text_table`)
is pure: plain data in, plain data out, no database, no HTTP, no clock. Only one
direction is ever corrected on its own: an invoice we recorded as failed or pending
that Oppen holds, identical and once, becomes sent with Oppen's SerNr and Total. An
invoice we recorded as sent that Oppen does not hold is reported, never resent here:
an admin decides (`resend_missing`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .errors import NotFound, OppenError, SyncError
from .mapping import (Excluded, Mapped, MappingProfile, is_annulled, is_same_invoice,
                      local_key, parse_day, payload_total, voucher_identity)
from .oppen.client import OppenClient
from .settings import AR_TZ, Settings, User, local_today
from .state import binder, read_models, schema
from .state.schema import FAILED, PENDING, SENT, oppen_invoices

logger = logging.getLogger(__name__)

CENT = Decimal("0.01")
MAX_DAYS = 366                  # one reconciliation covers at most a year of days
# Only these recorded states are corrected on their own (to sent): nothing else is
# ever changed by a reconciliation. A conflict or an invalid row stays for a person.
CORRECTABLE = (PENDING, FAILED)
ATTEMPT_KIND = "reconcile"      # oppen_attempts.kind of a correction
RUN_KIND = "reconcile"          # oppen_runs.kind of a reconciliation
AUTO_USER = "automática"        # oppen_runs.username of the morning reconciliation
REASONS = {"cli": "conciliación desde la línea de comandos",
           "console": "conciliación desde la consola",
           "auto": "conciliación de cada mañana"}
# The morning run: one started this long ago without finishing died; one that failed
# (Oppen down) is tried again this long after, not on every poll of the worker.
STALE_AFTER = dt.timedelta(minutes=30)
RETRY_AFTER_ERROR = dt.timedelta(hours=1)
ALERT_DAYS = 10                 # days named in one alert, at most
ALERT_KIND = "reconcile"        # oppen_alerts.kind of the morning run's alerts
ALERT_FAILED = "reconcile_failed"   # the condition "Oppen could not be read this morning"
_TYPE_KEYS = ("VoucherCode", "DocType", "FormType", "InvoiceType")


# --- formats (a person reads these: Argentina's) ------------------------------------------

def pesos(value) -> str:
    """'$ 15.000,50'; '-$ 0,01' for a negative difference (as the console writes them);
    '' when missing."""
    if value is None or value == "":
        return ""
    amount = Decimal(str(value))
    text = f"{abs(amount):,.2f}".replace(",", "·").replace(".", ",").replace("·", ".")
    return f"{'-' if amount < 0 else ''}$ {text}"


def fmt_day(value: dt.date) -> str:
    return value.strftime("%d/%m/%Y")


def fmt_range(desde: dt.date, hasta: dt.date) -> str:
    """'del 05/01/2025 al 07/01/2025', or 'del 05/01/2025' for one day."""
    if desde == hasta:
        return f"del {fmt_day(desde)}"
    return f"del {fmt_day(desde)} al {fmt_day(hasta)}"


# --- the comparison (pure) ------------------------------------------------------------------

@dataclass(frozen=True)
class Ours:
    """One of our `estado = 'ok'` rows of a local/day, as the comparison needs it."""
    reference: str                  # "A 0005-00001691", as the seed's errores name it
    payload: Mapping | None         # what a sync sends for it (None: it cannot be mapped)
    monto: Decimal | None
    state: str | None = None        # our state for this target (None: never registered)
    sernr: int | None = None
    state_id: int | None = None     # oppen_invoices.id
    factura_id: int | None = None   # facturas_trns.id
    problem: str | None = None      # why it cannot be mapped


@dataclass
class DayResult:
    """One local/day compared. `to_correct` are (ours, Oppen's record) pairs the safe
    correction may apply; `corrected` is filled by whoever applies them."""
    local: str
    fecha: dt.date
    facturas: int
    monto: Decimal
    oppen_facturas: int = 0
    oppen_total: Decimal = Decimal("0.00")
    faltan: list[dict] = field(default_factory=list)
    sobran: list[dict] = field(default_factory=list)
    difieren: list[dict] = field(default_factory=list)
    anuladas: list[dict] = field(default_factory=list)
    to_correct: list[tuple[Ours, Mapping]] = field(default_factory=list)
    corrected: list[dict] = field(default_factory=list)

    @property
    def diferencia(self) -> Decimal:
        """Oppen's total minus ours: positive when Oppen holds more."""
        return self.oppen_total - self.monto

    @property
    def cuadra(self) -> bool:
        # Each matched invoice may differ by a cent (Oppen adds VAT to a price without
        # it), so the totals may too, by as many cents as there are invoices.
        within = abs(self.diferencia) <= CENT * max(1, self.facturas)
        return not (self.faltan or self.sobran or self.difieren or self.anuladas) and within


def _code(value) -> str:
    """A voucher or type field as comparable text: "006", "6" and 6 are the same code."""
    if value is None or isinstance(value, bool):
        return ""
    text = str(value).strip()
    return str(int(text)) if text.isascii() and text.isdigit() else text


def _decimal(value) -> Decimal | None:
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError, TypeError):
        return None
    return number if number.is_finite() else None


def _sernr(record: Mapping) -> int | None:
    try:
        return int(record.get("SerNr"))
    except (TypeError, ValueError):
        return None


def record_total(record: Mapping) -> Decimal | None:
    """Oppen's Total for a record (VAT included), or None when it carries no readable one."""
    total = _decimal(record.get("Total"))
    return None if total is None else total.quantize(CENT)


def label_index(locals_: Iterable[str], profile: MappingProfile) -> dict[str, str]:
    """label -> local, for each local the profile gives a label (as `map_invoice` writes
    it: the configured code, else the label format)."""
    index: dict[str, str] = {}
    for local in locals_:
        labels = profile.labels_for(local)
        if not labels and profile.label_format:
            labels = (profile.label_format.replace("{local}", local),)
        for label in labels:
            index.setdefault(label, local)
    return index


def local_of(label, index: Mapping[str, str]) -> str | None:
    """The local a record's Labels names. Oppen appends the company name after a comma
    ("ALMF01,PERSEO"), and our own label may hold a comma too ("Local|Perez, Juan"), so
    the whole text is tried first, then what comes before each comma, longest first."""
    if not isinstance(label, str) or not label:
        return None
    if label in index:
        return index[label]
    cut = len(label)
    while (cut := label.rfind(",", 0, cut)) > 0:
        if label[:cut] in index:
            return index[label[:cut]]
    return None


def attribute(records: Iterable[Mapping], index: Mapping[str, str]) -> dict[str, list[Mapping]]:
    """Oppen's records by the local their Labels name; records of other locals are left out."""
    by_local: dict[str, list[Mapping]] = defaultdict(list)
    for record in records:
        if isinstance(record, Mapping):
            local = local_of(record.get("Labels"), index)
            if local is not None:
                by_local[local].append(record)
    return dict(by_local)


def type_of(record: Mapping, profile: MappingProfile) -> str | None:
    """Which of the profile's invoice types a record is, when its voucher fields and
    InvoiceType say so for exactly one type; else None."""
    found = []
    for tipo in profile.invoice_types:
        wanted = {"VoucherCode": profile.voucher_codes.get(tipo),
                  "DocType": profile.doc_types.get(tipo),
                  "InvoiceType": profile.invoice_types.get(tipo)}
        pairs = [(k, _code(v)) for k, v in wanted.items() if v is not None]
        if pairs and all(_code(record.get(k)) == v for k, v in pairs):
            found.append(tipo)
    return found[0] if len(found) == 1 else None


def _differences(ours: Ours, record: Mapping) -> list[tuple[str, str]]:
    """(field, detail) for each of amount, date, customer and type that differs."""
    payload = ours.payload or {}
    diffs: list[tuple[str, str]] = []
    total = record_total(record)
    if total is not None and ours.monto is not None:
        theirs, mine = total, ours.monto
    else:   # no Total: compare what the items add up to, as a sync would send them
        theirs = payload_total(record) if record.get("Items") else None
        mine = payload_total(payload)
    if theirs is None or abs(theirs - mine) > CENT:
        diffs.append(("monto", f"monto: Oppen tiene {pesos(theirs) if theirs is not None else 'ninguno'}"
                               f", nosotros {pesos(mine)}"))
    day = parse_day(record.get("TransDate"))
    if day is None or day.isoformat() != payload.get("TransDate"):
        shown = fmt_day(day) if day else str(record.get("TransDate") or "ninguna")[:20]
        ours_day = parse_day(payload.get("TransDate"))
        diffs.append(("fecha", f"fecha: Oppen tiene {shown}, nosotros "
                               f"{fmt_day(ours_day) if ours_day else '?'}"))
    if "CustCode" in payload and str(record.get("CustCode")) != str(payload["CustCode"]):
        diffs.append(("cliente", f"cliente: Oppen tiene {str(record.get('CustCode'))[:40]}, "
                                 f"nosotros {str(payload['CustCode'])[:40]}"))
    changed = [k for k in _TYPE_KEYS if k in payload and _code(record.get(k)) != _code(payload[k])]
    if changed:
        diffs.append(("tipo", "tipo: " + ", ".join(
            f"{k} Oppen tiene {str(record.get(k))[:20]}, nosotros {str(payload[k])[:20]}"
            for k in changed)))
    return diffs


def _faltante(ours: Ours) -> dict:
    if ours.payload is None:
        motivo = f"Datos inválidos: {ours.problem}" if ours.problem else "Datos inválidos"
    elif ours.state == SENT:
        motivo = (f"Enviada según nuestro registro (SerNr {ours.sernr}), pero Oppen no la tiene"
                  if ours.sernr else "Enviada según nuestro registro, pero Oppen no la tiene")
    elif ours.state is None:
        motivo = "Todavía no se sincronizó"
    else:
        motivo = "Todavía no llegó a Oppen"
    return {"factura": ours.reference, "factura_id": ours.factura_id, "monto": ours.monto,
            "estado": ours.state or PENDING, "motivo": motivo}


def compare_local(local: str, days: Mapping[dt.date, Sequence[Ours]],
                  records: Sequence[Mapping], profile: MappingProfile) -> list[DayResult]:
    """Our rows of one local's days against the records Oppen holds for that local.

    Each row is matched by OfficialSerNr plus voucher identity (`is_same_invoice`) among
    the local's live records, whatever their day (a record under another date is then a
    difference, not an extra). A row we recorded under a SerNr owns the record with that
    SerNr; the others take, of their candidates, the one with fewest differences, so an
    A and a B sharing a number match their own. A row whose only record is annulled is
    `anuladas`; one with none, `faltan`. Live records nobody matched are `sobran` on
    their own day, when that day is one of `days`. Records of a type the profile does
    not send (CC in the real profile) are not ours to reconcile.

    A correction is proposed only for a failed or pending row whose invoice Oppen holds
    identical and once, and that no other row of ours claims: two rows of the sales
    system with one number and voucher are its duplicate, and which of them Oppen holds
    cannot be known.
    """
    kept = [r for r in records
            if (tipo := type_of(r, profile)) is None or tipo in profile.send_types]
    live = [r for r in kept if not is_annulled(r)]
    annulled = [r for r in kept if is_annulled(r)]
    by_number: dict[str, list[int]] = defaultdict(list)
    for i, record in enumerate(live):
        by_number[str(record.get("OfficialSerNr"))].append(i)

    results: list[DayResult] = []
    rows: list[tuple[DayResult, Ours]] = []
    for fecha in sorted(days):
        its_rows = days[fecha]
        result = DayResult(local, fecha, facturas=len(its_rows),
                           monto=sum((r.monto for r in its_rows if r.monto is not None),
                                     Decimal("0.00")))
        results.append(result)
        rows += [(result, ours) for ours in its_rows]
    held = {n: [i for i in by_number.get(str(ours.payload.get("OfficialSerNr")), ())
                if is_same_invoice(ours.payload, live[i])]
            for n, (_, ours) in enumerate(rows) if ours.payload is not None}
    identities = Counter((str(ours.payload.get("OfficialSerNr")), voucher_identity(ours.payload))
                         for _, ours in rows if ours.payload is not None)
    matched: dict[int, int] = {}      # row number -> live record index
    taken: set[int] = set()
    for n, (_, ours) in enumerate(rows):       # recorded under a SerNr: that record
        for i in held.get(n, ()):
            if ours.sernr is not None and i not in taken and _sernr(live[i]) == ours.sernr:
                matched[n] = i
                taken.add(i)
                break
    for n, (_, ours) in enumerate(rows):       # the rest: the closest one left
        free = [i for i in held.get(n, ()) if i not in taken]
        if n not in matched and free:
            matched[n] = min(free, key=lambda i: len(_differences(ours, live[i])))
            taken.add(matched[n])

    for n, (result, ours) in enumerate(rows):
        if ours.payload is None:
            result.faltan.append(_faltante(ours))
        elif n in matched:
            record = live[matched[n]]
            diffs = _differences(ours, record)
            identity = (str(ours.payload.get("OfficialSerNr")), voucher_identity(ours.payload))
            if diffs:
                result.difieren.append({
                    "factura": ours.reference, "factura_id": ours.factura_id,
                    "sernr": _sernr(record), "campos": [f for f, _ in diffs],
                    "detalle": "; ".join(d for _, d in diffs)})
            elif (ours.state in CORRECTABLE and len(held[n]) == 1
                  and identities[identity] == 1 and _sernr(record) is not None):
                # Provably held, identical and once, and no other row of ours is it.
                result.to_correct.append((ours, record))
        elif gone := [r for r in annulled
                      if is_same_invoice(ours.payload, {**r, "Invalid": 0})]:
            result.anuladas.append({"factura": ours.reference, "factura_id": ours.factura_id,
                                    "sernr": _sernr(gone[0]), "monto": ours.monto,
                                    "estado": ours.state or PENDING})
        else:
            result.faltan.append(_faltante(ours))

    by_day = {r.fecha: r for r in results}
    for i, record in enumerate(live):
        result = by_day.get(parse_day(record.get("TransDate")))
        if result is None:
            continue
        total = record_total(record)
        result.oppen_facturas += 1
        result.oppen_total += total if total is not None else Decimal("0.00")
        if i not in taken:
            result.sobran.append({"factura": str(record.get("OfficialSerNr")),
                                  "sernr": _sernr(record), "total": total,
                                  "tipo": type_of(record, profile)})
    return results


def day_json(result: DayResult) -> dict:
    """A local/day as the CLI's JSON and the stored detail have it."""
    return {"local": result.local, "fecha": result.fecha.isoformat(),
            "faltan_en_oppen": result.faltan, "sobran_en_oppen": result.sobran,
            "difieren": result.difieren, "anuladas_en_oppen": result.anuladas,
            "estado_corregido": result.corrected, "facturas": result.facturas,
            "monto": result.monto, "oppen_facturas": result.oppen_facturas,
            "oppen_total": result.oppen_total, "diferencia": result.diferencia,
            "cuadra": result.cuadra}


def summary(dias: Sequence[Mapping]) -> dict:
    cuadran = sum(1 for d in dias if d["cuadra"])
    return {"dias": len(dias), "cuadran": cuadran, "no_cuadran": len(dias) - cuadran}


def problems_text(day: Mapping) -> str:
    """'falta 1 en Oppen, sobra 1, difiere 1, 1 anulada': what is wrong with a day."""
    parts = []
    for key, one, many in (("faltan_en_oppen", "falta {n} en Oppen", "faltan {n} en Oppen"),
                           ("sobran_en_oppen", "sobra {n}", "sobran {n}"),
                           ("difieren", "difiere {n}", "difieren {n}"),
                           ("anuladas_en_oppen", "{n} anulada", "{n} anuladas")):
        n = len(day.get(key) or ())
        if n:
            parts.append((one if n == 1 else many).format(n=n))
    if not parts and not day.get("cuadra"):
        parts.append(f"los totales difieren en {pesos(day.get('diferencia'))}")
    return ", ".join(parts)


def text_table(result: Mapping, env_label: str = "") -> str:
    """The CLI's short Spanish table: one line per local/day, then what is wrong."""
    desde, hasta = dt.date.fromisoformat(result["desde"]), dt.date.fromisoformat(result["hasta"])
    where = f" ({env_label})" if env_label else ""
    lines = [f"Conciliación con Oppen{where} {fmt_range(desde, hasta)}"]
    dias = result["dias"]
    if not dias and not result.get("excluidos"):
        lines.append("No hay días auditados en ese rango.")
        return "\n".join(lines)
    if dias:
        width = max(12, *(len(d["local"]) for d in dias))
        lines.append(f"{'Local':<{width}}  {'Día':<10}  {'Facturas':>8}  {'Monto':>18}  "
                     f"{'Oppen':>6}  {'Total Oppen':>18}  {'Diferencia':>14}  Resultado")
        for d in dias:
            mark = "✓ cuadra" if d["cuadra"] else "✗ no cuadra: " + problems_text(d)
            lines.append(
                f"{d['local']:<{width}}  {fmt_day(dt.date.fromisoformat(d['fecha'])):<10}  "
                f"{d['facturas']:>8}  {pesos(d['monto']):>18}  {d['oppen_facturas']:>6}  "
                f"{pesos(d['oppen_total']):>18}  {pesos(d['diferencia']):>14}  {mark}")
    for d in dias:
        if d["cuadra"]:
            continue
        head = f"{d['local']} {fmt_day(dt.date.fromisoformat(d['fecha']))}"
        for key, label in (("faltan_en_oppen", "falta en Oppen"),
                           ("sobran_en_oppen", "sobra en Oppen"), ("difieren", "difiere"),
                           ("anuladas_en_oppen", "anulada en Oppen")):
            for item in (d.get(key) or ())[:10]:
                extra = item.get("detalle") or item.get("motivo") or ""
                lines.append(f"  {head} · {label}: {item['factura']}"
                             + (f" ({extra})" if extra else ""))
            if len(d.get(key) or ()) > 10:
                lines.append(f"  {head} · … y {len(d[key]) - 10} más")
    for d in dias:
        for item in d.get("estado_corregido") or ():
            lines.append(f"  {d['local']} {fmt_day(dt.date.fromisoformat(d['fecha']))} · "
                         f"corregida: {item['factura']} estaba {item['estado_anterior']} y "
                         f"Oppen la tiene (SerNr {item['sernr']}): ahora enviada")
    for e in result.get("excluidos") or ():
        lines.append(f"  {e['local']} {fmt_day(dt.date.fromisoformat(e['fecha']))} · "
                     "excluido de la sincronización: no se concilia")
    r = result["resumen"]
    lines.append(f"Resumen: {r['dias']} día(s), {r['cuadran']} cuadra(n), "
                 f"{r['no_cuadran']} no cuadra(n)")
    return "\n".join(lines)


def spans(days: Iterable[dt.date]) -> list[tuple[dt.date, dt.date]]:
    """Consecutive days as (first, last) spans: one read of Oppen each."""
    out: list[list[dt.date]] = []
    for day in sorted(set(days)):
        if out and (day - out[-1][1]).days <= 1:
            out[-1][1] = day
        else:
            out.append([day, day])
    return [(a, b) for a, b in out]


# --- reading our side (one query per table and span) ----------------------------------------

@dataclass
class _Day:
    local: str                  # as the audit row names it
    fecha: dt.date
    rows: list[Ours] = field(default_factory=list)
    excluded: bool = False


def _same_local(column, local: str, dialect: str):
    return _same_locals(column, [local], dialect)


def _same_locals(column, locals_: Iterable[str], dialect: str):
    """The column names one of these locals, as binder.read_facturas matches a local:
    MariaDB's collation ignores case and trailing spaces; SQLite is told to do the same."""
    names = sorted(set(locals_))
    if dialect == "sqlite":
        return sa.func.lower(sa.func.rtrim(column)).in_(
            [sa.func.lower(sa.func.rtrim(sa.literal(n, sa.String))) for n in names])
    return column.in_(names)


def audited_days(engine: Engine, desde: dt.date, hasta: dt.date, local: str | None = None
                 ) -> list[tuple[str, dt.date]]:
    """The audited local/days in [desde, hasta] (of one local, when given)."""
    la = schema.locales_auditados
    query = sa.select(la.c.local, la.c.fecha).where(la.c.fecha >= desde, la.c.fecha <= hasta)
    with schema.reading(engine) as conn:
        if local:
            query = query.where(_same_local(la.c.local, local, conn.dialect.name))
        return sorted({(r.local, _as_date(r.fecha)) for r in conn.execute(query)},
                      key=lambda d: (d[1], d[0]))


def _as_date(value) -> dt.date:
    return value.date() if isinstance(value, dt.datetime) else value


def _read_ours(engine: Engine, settings: Settings, profile: MappingProfile,
               wanted: Sequence[tuple[str, dt.date]], today: dt.date,
               local: str | None = None) -> list[_Day]:
    """Our rows and states for the wanted local/days (of `local` only, when given): two
    queries per span of consecutive days, whatever the number of locals and invoices."""
    days = {(local_key(l), f): _Day(l, f, excluded=profile.is_excluded_local(l))
            for l, f in wanted}
    f, t = schema.facturas_trns, oppen_invoices
    with schema.reading(engine) as conn:
        for first, last in spans(f for _, f in wanted):
            start, _ = schema.day_bounds(first)
            _, end = schema.day_bounds(last)
            state_query = (sa.select(t.c.factura_id, t.c.id, t.c.state, t.c.sernr,
                                     t.c.client_sernr)
                           .where(t.c.target == settings.target, t.c.fecha >= first,
                                  t.c.fecha <= last))
            if local:
                same_local = _same_local(f.c.local, local, conn.dialect.name)
                state_query = state_query.where(_same_local(t.c.local, local, conn.dialect.name))
            else:
                # Only the span's audited locals, matched as one local is (and as the
                # sync reads them): the host's other invoices of those days (a local
                # not audited yet, whose rows are skipped below anyway) are not fetched
                # and decoded, which on MariaDB was most of the read.
                same_local = _same_locals(
                    f.c.local, {l for l, d in wanted if first <= d <= last}, conn.dialect.name)
            where = [f.c.fecha >= start, f.c.fecha < end, same_local]
            # Read as a range of the primary key (already in id order): through
            # ix_facturas_trns_fecha MariaDB looked up each row, then sorted them.
            query = (sa.select(*binder.FACTURA_COLUMNS)
                     .where(*where, read_models.id_span(conn, where), f.c.estado == "ok")
                     .order_by(f.c.id))
            facturas = [r._mapping for r in conn.execute(query)]
            states = {r.factura_id: r for r in conn.execute(state_query)}
            for row in facturas:
                day = days.get((local_key(row["local"]), _as_date(row["fecha"])))
                if day is None or day.excluded:
                    continue
                known = states.get(row["id"])
                mapped = binder.map_factura(row, profile, today, known.id if known else None,
                                            known.client_sernr if known else None)
                if isinstance(mapped, Excluded):
                    continue   # a type this profile does not send: not ours to reconcile
                valid = isinstance(mapped, Mapped)
                day.rows.append(Ours(
                    reference=mapped.reference, payload=mapped.payload if valid else None,
                    monto=mapped.amount if valid else _decimal(row["monto"]),
                    state=known.state if known else None,
                    sernr=known.sernr if known else None, state_id=known.id if known else None,
                    factura_id=row["id"], problem=None if valid else mapped.reason))
    return list(days.values())


# --- the run of a reconciliation, the correction and the results ------------------------------

def _start_run(engine: Engine, settings: Settings, *, user: str | None, origin: str,
               local: str | None, started_at: dt.datetime | None,
               exclusive_since: dt.datetime | None = None) -> int | None:
    """The reconciliation's row in oppen_runs (who, why, when, outcome). With
    `exclusive_since` (the morning run), None when another process already started one
    since then: the first row wins, so several workers reconcile a morning once."""
    r = schema.oppen_runs
    with engine.begin() as conn:
        now = started_at or schema.db_now(conn)
        run_id = conn.execute(sa.insert(r).values(
            target=settings.target, kind=RUN_KIND, local=local, username=user,
            reason=REASONS.get(origin, origin), owner=schema.new_owner(), state=schema.RUNNING,
            started_at=now, total=0, processed=0, exitosas=0, fallidas=0)
        ).inserted_primary_key[0]
    if exclusive_since is None:
        return run_id
    with engine.begin() as conn:
        earlier = conn.execute(sa.select(r.c.id).where(
            r.c.target == settings.target, r.c.kind == RUN_KIND, r.c.username == user,
            r.c.started_at >= exclusive_since, r.c.id < run_id,
            sa.or_(r.c.state == schema.DONE,
                   sa.and_(r.c.state == schema.RUNNING,
                           r.c.started_at >= now - STALE_AFTER))).limit(1)).first()
        if earlier is not None:
            conn.execute(sa.delete(r).where(r.c.id == run_id))
            return None
    return run_id


def _finish_run(engine: Engine, run_id: int, *, state: str, message: str, result: Mapping | None,
                started: float, finished_at: dt.datetime | None = None) -> None:
    """End the run with its answer and how long it took (`started`: time.monotonic() at
    its start; measured here to the millisecond, as a sync measures itself)."""
    r = schema.oppen_runs
    resumen = (result or {}).get("resumen") or {"dias": 0, "cuadran": 0, "no_cuadran": 0}
    short = None if result is None else {k: result[k] for k in ("desde", "hasta", "resumen")}
    with engine.begin() as conn:
        conn.execute(sa.update(r).where(r.c.id == run_id).values(
            state=state, finished_at=finished_at or schema.db_now(conn),
            total=resumen["dias"], processed=resumen["dias"], exitosas=resumen["cuadran"],
            fallidas=resumen["no_cuadran"], message=message[:4000],
            duration_ms=round((time.monotonic() - started) * 1000),
            result_json=None if short is None else json.dumps(short, default=str)))


def _correct(engine: Engine, settings: Settings, run_id: int, result: DayResult,
             now: dt.datetime) -> None:
    """Apply the safe correction to what `compare_local` proved: each row still failed or
    pending, under the same number, becomes sent with Oppen's SerNr (and Total), and the
    change is an attempt of its own kind. One row at a time: a run that claimed the
    invoice meanwhile wins, and this changes nothing for it."""
    t = oppen_invoices
    for ours, record in result.to_correct:
        body = json.dumps(record, ensure_ascii=False, default=str)
        total = record_total(record)
        # Oppen's Total is kept as the exporter keeps it: later documents balance on it.
        values = dict(state=SENT, sernr=_sernr(record), total_oppen=total, needs_lookup=False,
                      last_error=None, error_kind=None, last_http_status=None,
                      response_body=schema.clip(body), updated_at=now, sent_at=now)
        with engine.begin() as conn:
            changed = conn.execute(sa.update(t).where(
                t.c.id == ours.state_id, t.c.state.in_(CORRECTABLE),
                sa.or_(t.c.official_sernr == ours.payload["OfficialSerNr"],
                       t.c.official_sernr.is_(None))).values(**values)).rowcount
            if not changed:
                continue
            conn.execute(sa.insert(schema.oppen_attempts).values(
                oppen_invoice_id=ours.state_id, run_id=run_id, kind=ATTEMPT_KIND, at=now,
                duration_ms=0, http_status=200, outcome="corrected", error=None,
                response_body=schema.clip(body, 4000)))
        result.corrected.append({"factura": ours.reference, "factura_id": ours.factura_id,
                                 "estado_anterior": ours.state, "sernr": _sernr(record),
                                 "total": total})
        logger.info("✅ %s: estaba %s y Oppen la tiene (SerNr %s): enviada", ours.reference,
                    ours.state, _sernr(record))


def _store(engine: Engine, settings: Settings, run_id: int, desde: dt.date, hasta: dt.date,
           dias: Sequence[Mapping], excluded: Sequence[_Day], now: dt.datetime) -> None:
    rows = [{"target": settings.target, "run_id": run_id, "reconciled_at": now, "desde": desde,
             "hasta": hasta, "local": d["local"], "fecha": dt.date.fromisoformat(d["fecha"]),
             "excluded": False, "squares": d["cuadra"], "facturas": d["facturas"],
             "monto": d["monto"], "oppen_facturas": d["oppen_facturas"],
             "oppen_total": d["oppen_total"], "missing": len(d["faltan_en_oppen"]),
             "extra": len(d["sobran_en_oppen"]), "different": len(d["difieren"]),
             "annulled": len(d["anuladas_en_oppen"]), "corrected": len(d["estado_corregido"]),
             "detail_json": json.dumps(d, ensure_ascii=False, default=str)} for d in dias]
    rows += [{"target": settings.target, "run_id": run_id, "reconciled_at": now, "desde": desde,
              "hasta": hasta, "local": e.local, "fecha": e.fecha, "excluded": True,
              "squares": None, "facturas": 0, "monto": Decimal(0), "oppen_facturas": 0,
              "oppen_total": Decimal(0), "missing": 0, "extra": 0, "different": 0,
              "annulled": 0, "corrected": 0, "detail_json": None} for e in excluded]
    if not rows:
        return
    with engine.begin() as conn:   # one executemany, whatever the number of days
        conn.execute(sa.insert(schema.oppen_reconciliations), rows)


# --- what the CLI, the console and the worker call ----------------------------------------------

def check_range(desde: dt.date, hasta: dt.date) -> None:
    if desde > hasta:
        raise SyncError(f"El rango está invertido: desde {fmt_day(desde)} es posterior a "
                        f"hasta {fmt_day(hasta)}")
    if (hasta - desde).days + 1 > MAX_DAYS:
        raise SyncError(f"El rango es demasiado largo: como máximo {MAX_DAYS} días por "
                        "conciliación")


def reconcile(engine: Engine, settings: Settings, desde: dt.date, hasta: dt.date, *,
              local: str | None = None, client: OppenClient | None = None,
              user: str | None = None, origin: str = "cli", today: dt.date | None = None
              ) -> dict:
    """Reconcile every audited local/day in [desde, hasta] (of one local, when given)
    against what Oppen holds; store and return the result:
    {"desde", "hasta", "dias": [...], "resumen": {...}, "excluidos": [...]}.

    Raises SyncError for a bad range, NotFound for an unknown local, and the OppenError
    that kept it from reading Oppen (the run is then recorded as failed)."""
    check_range(desde, hasta)
    if local:
        from .actions import require_local
        require_local(engine, local)
    wanted = audited_days(engine, desde, hasta, local)
    return reconcile_days(engine, settings, wanted, desde=desde, hasta=hasta, local=local,
                          client=client, user=user, origin=origin, today=today)


def reconcile_days(engine: Engine, settings: Settings, wanted: Sequence[tuple[str, dt.date]],
                   *, desde: dt.date, hasta: dt.date, local: str | None = None,
                   client: OppenClient | None = None, user: str | None = None,
                   origin: str = "cli", today: dt.date | None = None,
                   now: dt.datetime | None = None, run_id: int | None = None) -> dict:
    """Reconcile exactly these audited local/days; `desde`/`hasta` is the range recorded."""
    today = today or local_today()
    started = time.monotonic()
    if run_id is None:
        run_id = _start_run(engine, settings, user=user, origin=origin, local=local,
                            started_at=now)
    try:
        # Mapped as a run maps (labels from the host's labels_oppen table too), so
        # each record is attributed to a local by the label a sync gave it.
        profile = binder.run_profile(engine, settings.mapping)
        days = _read_ours(engine, settings, profile, wanted, today, local)
        compared = [d for d in days if not d.excluded]
        records: list[Mapping] = []
        if compared:
            records = _read_oppen(settings, client, [d.fecha for d in compared])
        index = label_index({d.local for d in compared}, profile)
        by_local = attribute(records, index)
        grouped: dict[str, dict[dt.date, list[Ours]]] = defaultdict(dict)
        for d in compared:
            grouped[d.local][d.fecha] = d.rows
        results: list[DayResult] = []
        for name, its_days in grouped.items():
            results += compare_local(name, its_days, by_local.get(name, []), profile)
        stamp = now or schema.utcnow()
        for result in results:
            if result.to_correct:
                _correct(engine, settings, run_id, result, stamp)
        results.sort(key=lambda r: (r.fecha, r.local))
        dias = [day_json(r) for r in results]
        excluded = sorted((d for d in days if d.excluded), key=lambda d: (d.fecha, d.local))
        out = {"desde": desde.isoformat(), "hasta": hasta.isoformat(), "dias": dias,
               "resumen": summary(dias),
               "excluidos": [{"local": e.local, "fecha": e.fecha.isoformat()} for e in excluded]}
        _store(engine, settings, run_id, desde, hasta, dias, excluded, stamp)
    except OppenError as exc:
        _finish_run(engine, run_id, state=schema.ERROR, result=None, started=started,
                    finished_at=now,
                    message=f"No se pudo conciliar: {exc.message}")
        raise
    except BaseException:
        logger.exception("❌ Error inesperado conciliando con Oppen")
        _finish_run(engine, run_id, state=schema.ERROR, result=None, started=started,
                    finished_at=now,
                    message="Error inesperado (detalle en el log del servidor)")
        raise
    r = out["resumen"]
    _finish_run(engine, run_id, state=schema.DONE, result=out, started=started, finished_at=now,
                message=f"Conciliación {fmt_range(desde, hasta)}: {r['dias']} "
                        f"día(s), {r['cuadran']} cuadra(n), {r['no_cuadran']} no cuadra(n)")
    out["run_id"] = run_id
    return out


def _read_oppen(settings: Settings, client: OppenClient | None, fechas: Iterable[dt.date]
                ) -> list[Mapping]:
    owned = client is None
    if owned:
        from .wiring import open_client
        client = open_client(settings)
    try:
        records: list[Mapping] = []
        for first, last in spans(fechas):
            records += client.invoices_between(first.isoformat(), last.isoformat())
        return records
    finally:
        if owned:
            client.close()


def public(result: Mapping) -> dict:
    """The result as the CLI prints it (without the run's id)."""
    return {k: v for k, v in result.items() if k != "run_id"}


# --- every morning --------------------------------------------------------------------------

def _utc_naive(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value.replace(microsecond=0)


def due_window(engine: Engine, settings: Settings, now: dt.datetime
               ) -> tuple[dt.datetime, list[tuple[str, dt.date]]] | None:
    """When the morning reconciliation is due at `now` (naive UTC): the start of today's
    slot and the local/days to reconcile; None when it is not due (not yet time, done
    today, another process doing it, or failed less than RETRY_AFTER_ERROR ago)."""
    if settings.reconcile_at is None:
        return None
    now_ar = now.replace(tzinfo=dt.timezone.utc).astimezone(AR_TZ)
    slot_ar = dt.datetime.combine(now_ar.date(), settings.reconcile_at, tzinfo=AR_TZ)
    if now_ar < slot_ar:
        return None
    slot = _utc_naive(slot_ar)
    r = schema.oppen_runs
    mine = sa.and_(r.c.target == settings.target, r.c.kind == RUN_KIND, r.c.username == AUTO_USER)
    with schema.reading(engine) as conn:
        today_runs = conn.execute(sa.select(r.c.state, r.c.started_at, r.c.finished_at)
                                  .where(mine, r.c.started_at >= slot)
                                  .order_by(r.c.id.desc())).all()
        last_done = conn.execute(sa.select(sa.func.max(r.c.started_at))
                                 .where(mine, r.c.state == schema.DONE)).scalar()
        for run in today_runs:
            if run.state == schema.DONE:
                return None
            if run.state == schema.RUNNING and run.started_at >= now - STALE_AFTER:
                return None
        errors = [run for run in today_runs if run.state == schema.ERROR]
        if errors and (errors[0].finished_at or errors[0].started_at) >= now - RETRY_AFTER_ERROR:
            return None
        today = now_ar.date()
        first = today - dt.timedelta(days=settings.reconcile_days)
        la = schema.locales_auditados
        # The previous days again (late changes in Oppen), and whatever was audited since
        # the last morning run, however old its day.
        condition = sa.and_(la.c.fecha >= first, la.c.fecha <= today)
        if last_done is not None:
            condition = sa.or_(condition, la.c.auditado_en >= last_done)
        days = {(row.local, _as_date(row.fecha))
                for row in conn.execute(sa.select(la.c.local, la.c.fecha).where(condition))}
    return slot, sorted(days, key=lambda d: (d[1], d[0]))


def reconcile_due(engine: Engine, settings: Settings, now: dt.datetime | None = None, *,
                  client: OppenClient | None = None) -> dict | None:
    """What the worker calls on every poll: at OPPEN_RECONCILE_AT (Argentina's time),
    once a day, reconcile the days audited since the last morning reconciliation and
    the OPPEN_RECONCILE_DAYS previous days again; alert through the webhook naming each
    day that does not square, or that Oppen could not be read (once, until a later
    morning run succeeds). Alerts go to the outbox (sync/alerts.py), which the worker's
    own thread posts, so the webhook never holds the worker.

    Returns the result when it ran ({"error": message} when Oppen could not be read),
    None when nothing was due. Never raises for Oppen; a database error propagates."""
    now = _utc_naive(now or dt.datetime.now(dt.timezone.utc))
    due = due_window(engine, settings, now)
    if due is None:
        return None
    slot, wanted = due
    run_id = _start_run(engine, settings, user=AUTO_USER, origin="auto", local=None,
                        started_at=now, exclusive_since=slot)
    if run_id is None:
        return None
    today = now.replace(tzinfo=dt.timezone.utc).astimezone(AR_TZ).date()
    fechas = [f for _, f in wanted]
    desde, hasta = (min(fechas), max(fechas)) if fechas else (today, today)
    try:
        result = reconcile_days(engine, settings, wanted, desde=desde, hasta=hasta,
                                client=client, user=AUTO_USER, origin="auto", today=today,
                                now=now, run_id=run_id)
    except SyncError as exc:   # Oppen could not be read: recorded, alerted, tried later
        logger.error("❌ No se pudo conciliar con Oppen: %s", exc.message)
        _alert(engine, settings, f"⚠️ No se pudo conciliar con Oppen los días "
                                 f"{fmt_range(desde, hasta)}: {exc.message}. Se reintenta "
                                 "en una hora.",
               {"desde": desde.isoformat(), "hasta": hasta.isoformat(), "error": exc.message},
               key=ALERT_FAILED)
        return {"error": exc.message, "desde": desde.isoformat(), "hasta": hasta.isoformat()}
    _resolve(engine, settings, "✅ La conciliación con Oppen volvió a funcionar "
                               f"({fmt_range(desde, hasta)}).")
    bad = [d for d in result["dias"] if not d["cuadra"]]
    if bad:
        _alert(engine, settings, alert_text(bad, desde, hasta),
               {"desde": desde.isoformat(), "hasta": hasta.isoformat(),
                "no_cuadran": [{"local": d["local"], "fecha": d["fecha"],
                                "problemas": problems_text(d)} for d in bad]})
    return result


def alert_text(bad: Sequence[Mapping], desde: dt.date, hasta: dt.date) -> str:
    """The webhook's text: each day that does not square, named, with what is wrong."""
    lines = [f"⚠️ Conciliación con Oppen {fmt_range(desde, hasta)}: "
             f"{len(bad)} día(s) no cuadran"]
    for d in bad[:ALERT_DAYS]:
        lines.append(f"• {d['local']} {fmt_day(dt.date.fromisoformat(d['fecha']))}: "
                     f"{problems_text(d)} (diferencia {pesos(d['diferencia'])})")
    if len(bad) > ALERT_DAYS:
        lines.append(f"… y {len(bad) - ALERT_DAYS} día(s) más (ver Conciliación en la consola)")
    return "\n".join(lines)


def _alert(engine: Engine, settings: Settings, text: str, details: Mapping,
           key: str | None = None) -> None:
    """Into the alerts' outbox: a one-off event, or (`key`) a condition told once until
    `_resolve`. An alert never breaks the reconciliation that raised it."""
    from .state import alerts as outbox
    try:
        if key is None:
            outbox.event(engine, target=settings.target, kind=ALERT_KIND, text=text,
                         details=details)
        else:
            outbox.open_condition(engine, target=settings.target, kind=ALERT_KIND, key=key,
                                  text=text, details=details)
    except Exception:  # noqa: BLE001
        logger.warning("No se pudo registrar el aviso de la conciliación", exc_info=True)


def _resolve(engine: Engine, settings: Settings, text: str) -> None:
    from .state import alerts as outbox
    try:
        outbox.resolve_condition(engine, target=settings.target, key=ALERT_FAILED, text=text)
    except Exception:  # noqa: BLE001
        logger.warning("No se pudo registrar el aviso de la conciliación", exc_info=True)


# --- what an admin decides -------------------------------------------------------------------

def resend_missing(engine: Engine, settings: Settings, *, user: User, reason: str, local: str,
                   fecha: dt.date, factura_ids: Sequence[int], client: OppenClient | None = None):
    """"Reenviar faltantes": send again, through the normal resend (in the background,
    with the reason recorded), the invoices a reconciliation found missing in Oppen.

    An invoice we recorded as sent is the admin's decision to reopen: it goes back to
    pending and is looked up in Oppen by number before any POST (so one Oppen holds
    after all is never sent twice), and that decision is an attempt with who and why.
    Only an admin may; returns background.Started."""
    from . import background
    from .auth import require_role
    require_role(user, "admin", "reenviar facturas")
    reason = background.clean_reason(reason)
    ids = sorted({int(i) for i in factura_ids})
    if not ids:
        raise SyncError("No hay facturas faltantes para reenviar")
    t = oppen_invoices
    with engine.begin() as conn:
        now = schema.db_now(conn)
        rows = conn.execute(sa.select(t.c.id, t.c.reference, t.c.fecha, t.c.local).where(
            t.c.target == settings.target, t.c.factura_id.in_(ids), t.c.state == SENT)).all()
        for row in rows:
            if row.fecha != fecha or local_key(row.local) != local_key(local):
                raise NotFound(f"La factura {row.reference} no es de {local} "
                               f"{fmt_day(fecha)}")
            note = (f"Reabierta por {user.username}: la conciliación no la encontró en Oppen "
                    f"({reason})")
            conn.execute(sa.update(t).where(t.c.id == row.id, t.c.state == SENT).values(
                state=PENDING, needs_lookup=True, last_error=schema.clip(note, 4000),
                error_kind=schema.ERROR_UNKNOWN, updated_at=now))
            conn.execute(sa.insert(schema.oppen_attempts).values(
                oppen_invoice_id=row.id, run_id=None, kind=ATTEMPT_KIND, at=now, duration_ms=0,
                http_status=None, outcome="reopened", error=schema.clip(note, 4000),
                error_kind=schema.ERROR_UNKNOWN))
    return background.start_resend(engine, settings, user=user, reason=reason, invoice_ids=ids,
                                   client=client)
