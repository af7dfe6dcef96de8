"""The invoices the sandbox holds: what makes two of them the same invoice, storing,
annulling, loading by hand, and the JSONL file that keeps them across restarts.

An invoice is identified by its OfficialSerNr and its voucher (VoucherCode, DocType):
Argentine numbers run per point of sale and per voucher type, so a Factura A and a
Factura B may share a number. A record without voucher fields clashes with every
voucher of its number, which is the seed's "one OfficialSerNr, one invoice".
A stored record is never changed in place (annulling swaps in a new dict), so readers
may copy what they got outside the lock. Nothing here speaks HTTP, draws faults or
writes anywhere but `store_path`; records are never deleted except by `reset`.
"""

from __future__ import annotations

import itertools
import json
import threading
from typing import Any, Iterator, Mapping, Sequence

from .validation import OFFICIAL_SERNR_RE, is_number, is_sernr

# Oppen assigns SerNr values above 2**31; starting there makes a client that stores
# them in a 32-bit column fail here rather than in production.
FIRST_ASSIGNED_SERNR = 3_000_000_001
_ASSIGNED_SERNR_SPAN = 10**9
DEFAULT_CUSTOMER = "C00001"

# Marks, in the store file only, a record loaded by hand rather than POSTed.
_ORIGIN_KEY = "_sandbox_origin"
HAND, API = "hand", "api"

Voucher = tuple[str | None, str | None]


class LedgerError(ValueError):
    """A request on the ledger that cannot be done; the message is Spanish."""


class NotHeld(LedgerError):
    pass


class Conflict(LedgerError):
    pass


def voucher_of(record: Mapping) -> Voucher:
    """(VoucherCode, DocType) as text; a missing one is None and matches any."""
    code, doc = record.get("VoucherCode"), record.get("DocType")
    return (None if code is None else str(code), None if doc is None else str(doc))


def same_voucher(a: Voucher, b: Voucher) -> bool:
    return all(x is None or y is None or x == y for x, y in zip(a, b))


def voucher_label(voucher: Voucher) -> str | None:
    """"006/1" for the log and the counters; None when the record carries no voucher."""
    if voucher == (None, None):
        return None
    return f"{voucher[0] or ''}/{voucher[1] or ''}"


def identity_label(official: str, voucher: Voucher) -> str:
    label = voucher_label(voucher)
    return official if label is None else f"{official} {label}"


def _items_total(items: Any) -> float:
    total = 0.0
    if isinstance(items, list):
        for item in items:
            if isinstance(item, dict) and is_number(item.get("Qty")) and is_number(item.get("Price")):
                total += item["Qty"] * item["Price"]
    return round(total, 2)


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "si", "sí")
    return bool(value)


class Ledger:
    """Every stored invoice, indexed by SerNr and OfficialSerNr; thread-safe."""

    def __init__(self, *, store_path: str | None = None, company: str | None = None) -> None:
        self._company = company
        self._store_path = store_path
        self._store_file = None
        self._lock = threading.Lock()
        self._clear_locked()
        if store_path:
            self._load_store()

    def _clear_locked(self) -> None:
        # A new list rather than clear(): readers walking the old one stay consistent.
        self._records: list[dict] = []
        self._position: dict[int, int] = {}  # internalId -> index in _records
        self._by_official: dict[str, list[int]] = {}  # OfficialSerNr -> internalIds
        self._by_sernr: dict[int, int] = {}  # SerNr -> internalId
        self._hand_loaded: set[int] = set()
        self._next_sernr = FIRST_ASSIGNED_SERNR
        self._next_internal_id = 1

    # ----- reading -----------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._records)

    def all(self) -> list[dict]:
        with self._lock:
            return list(self._records)

    def walk(self) -> Iterator[dict]:
        """Every record in storage order, without copying the list: it only grows or
        has entries swapped (reset swaps in a new one), so a length-bounded walk over
        this reference is safe."""
        with self._lock:
            records, count = self._records, len(self._records)
        return itertools.islice(records, count)

    def with_official(self, official: str) -> list[dict]:
        with self._lock:
            return [self._records[self._position[i]] for i in self._by_official.get(official, ())]

    def with_sernr(self, sernr: int) -> list[dict]:
        with self._lock:
            internal_id = self._by_sernr.get(sernr)
            return [] if internal_id is None else [self._records[self._position[internal_id]]]

    def holds(self, payload: Mapping) -> bool:
        """Whether an invoice with this OfficialSerNr and voucher is already stored."""
        official = payload.get("OfficialSerNr")
        if not isinstance(official, str):
            return False
        with self._lock:
            return self._same_invoice_locked(official, voucher_of(payload)) is not None

    def foreign_to(self, payload: Mapping, pick) -> dict | None:
        """A stored record that is not `payload`'s invoice, chosen with `pick`, or None."""
        official, voucher = payload.get("OfficialSerNr"), voucher_of(payload)
        # The first thousand are plenty to pick from, and keep this fault cheap on a
        # ledger of a hundred thousand.
        with self._lock:
            others = [r for r in itertools.islice(self._records, 0, 1000)
                      if r.get("OfficialSerNr") != official or not same_voucher(voucher_of(r), voucher)]
        return pick(others) if others else None

    def counts(self) -> dict:
        with self._lock:
            return {
                "invoices": len(self._records),
                "annulled": sum(1 for r in self._records if r.get("Invalid")),
                "posted": len(self._records) - len(self._hand_loaded),
                "loaded_by_hand": len(self._hand_loaded),
            }

    # ----- writing -----------------------------------------------------------------

    def create(self, payload: dict) -> tuple[dict | None, bool]:
        """Store a POSTed invoice. Returns (record, False), or (None, same) when it
        clashes, `same` telling whether the clash is this very invoice (not just its
        SerNr). Checked and stored under one lock: two identical concurrent POSTs
        store one."""
        with self._lock:
            official = payload.get("OfficialSerNr")
            same = isinstance(official, str) and \
                self._same_invoice_locked(official, voucher_of(payload)) is not None
            if same or self._sernr_taken_locked(payload):
                return None, same
            return self._store_locked(payload, API), False

    def load(self, records: Sequence[Mapping]) -> list[dict]:
        """Store records as a person or the old integration would have: all or none.
        Each needs an OfficialSerNr; SerNr is assigned when absent; Invalid is kept."""
        with self._lock:
            batch: list[tuple[str, Voucher, Any]] = []
            for n, record in enumerate(records, start=1):
                problem = self._load_problem_locked(record, batch)
                if problem is not None:
                    kind, text = problem
                    raise kind(f"Registro {n}: {text}. No se cargó ningún registro.")
                batch.append((record["OfficialSerNr"], voucher_of(record), record.get("SerNr")))
            return [self._store_locked(dict(record), HAND) for record in records]

    def _load_problem_locked(self, record: Any, batch: list) -> tuple[type, str] | None:
        if not isinstance(record, Mapping):
            return LedgerError, "no es un objeto JSON"
        official = record.get("OfficialSerNr")
        if not isinstance(official, str) or not OFFICIAL_SERNR_RE.fullmatch(official):
            return LedgerError, "OfficialSerNr falta o no tiene la forma PPPP-NNNNNNNN"
        sernr = record.get("SerNr")
        if sernr is not None and not is_sernr(sernr):
            return LedgerError, "SerNr debe ser un entero positivo"
        voucher = voucher_of(record)
        if self._same_invoice_locked(official, voucher) is not None or self._sernr_taken_locked(record):
            return Conflict, f"la factura {identity_label(official, voucher)} ya existe en el sandbox"
        for other_official, other_voucher, other_sernr in batch:
            if (other_official == official and same_voucher(other_voucher, voucher)) \
                    or (sernr is not None and sernr == other_sernr):
                return Conflict, f"la factura {identity_label(official, voucher)} está repetida en la carga"
        return None

    def annul(self, *, sernr: int | None = None, official: str | None = None,
              voucher_code: Any = None, doc_type: Any = None) -> dict:
        """Mark one invoice Invalid (kept, and still counting for uniqueness)."""
        with self._lock:
            record = self._find_one_locked(sernr, official, voucher_code, doc_type)
            if record.get("Invalid"):
                return record
            annulled = {**record, "Invalid": 1}
            self._persist_locked(annulled, HAND if record["internalId"] in self._hand_loaded else API)
            self._records[self._position[record["internalId"]]] = annulled
            return annulled

    def _find_one_locked(self, sernr, official, voucher_code, doc_type) -> dict:
        if sernr is not None:
            internal_id = self._by_sernr.get(sernr) if is_sernr(sernr) else None
            if internal_id is None:
                raise NotHeld(f"No hay ninguna factura con SerNr {sernr}")
            return self._records[self._position[internal_id]]
        if not isinstance(official, str) or not official:
            raise LedgerError("Indique SerNr u OfficialSerNr")
        wanted = voucher_of({"VoucherCode": voucher_code, "DocType": doc_type})
        found = [self._records[self._position[i]] for i in self._by_official.get(official, ())]
        found = [r for r in found if same_voucher(voucher_of(r), wanted)]
        if not found:
            raise NotHeld(f"No hay ninguna factura {identity_label(official, wanted)}")
        if len(found) > 1:
            raise Conflict(f"Hay {len(found)} facturas {official}: indique VoucherCode y DocType, "
                           "o el SerNr")
        return found[0]

    def reset(self) -> None:
        with self._lock:
            self._clear_locked()
            if self._store_path:
                # Forgetting must survive a restart too.
                self.close_locked()
                open(self._store_path, "w", encoding="utf-8").close()

    def close(self) -> None:
        with self._lock:
            self.close_locked()

    def close_locked(self) -> None:
        if self._store_file is not None:
            self._store_file.close()
            self._store_file = None

    # ----- inside the lock -----------------------------------------------------------

    def _same_invoice_locked(self, official: str, voucher: Voucher) -> dict | None:
        for internal_id in self._by_official.get(official, ()):
            record = self._records[self._position[internal_id]]
            if same_voucher(voucher_of(record), voucher):
                return record
        return None

    def _sernr_taken_locked(self, payload: Mapping) -> bool:
        sernr = payload.get("SerNr")
        return is_sernr(sernr) and sernr in self._by_sernr

    def _store_locked(self, payload: dict, origin: str) -> dict:
        record = dict(payload)
        if record.get("SerNr") is None:
            while self._next_sernr in self._by_sernr:
                self._next_sernr += 1
            record["SerNr"] = self._next_sernr
            self._next_sernr += 1
        if "ToOfficialSerNr" not in record and "OfficialSerNr" in record:
            record["ToOfficialSerNr"] = record["OfficialSerNr"]
        if "Total" not in record:
            record["Total"] = _items_total(record.get("Items"))
        record["Saldo"] = record["Total"]
        record.setdefault("Status", 0)
        record.setdefault("CustCode", DEFAULT_CUSTOMER)
        if "Labels" in record:
            record["Labels"] = self._with_company(record["Labels"])
        record["Invalid"] = 1 if origin == HAND and _truthy(record.get("Invalid")) else 0
        record["internalId"] = self._next_internal_id
        # Written before it becomes visible: a failed write must not leave an invoice
        # that a restart would forget.
        self._persist_locked(record, origin)
        self._next_internal_id += 1
        self._index_locked(record, origin)
        return record

    def _with_company(self, labels: Any) -> Any:
        # Oppen appends its company name to the stored label ("ALMF01" -> "ALMF01,PERSEO");
        # a record that already carries it (an export from Oppen) keeps one.
        if not self._company or not isinstance(labels, str) or not labels:
            return labels
        suffix = "," + self._company
        return labels if labels.endswith(suffix) else labels + suffix

    def _index_locked(self, record: dict, origin: str) -> None:
        internal_id = record["internalId"]
        if internal_id in self._position:  # a later line of the same record (annulled)
            self._records[self._position[internal_id]] = record
            return
        self._position[internal_id] = len(self._records)
        self._records.append(record)
        if origin == HAND:
            self._hand_loaded.add(internal_id)
        official = record.get("OfficialSerNr")
        if official is not None:
            self._by_official.setdefault(str(official), []).append(internal_id)
        sernr = record.get("SerNr")
        if is_sernr(sernr):
            self._by_sernr.setdefault(sernr, internal_id)
            if FIRST_ASSIGNED_SERNR <= sernr < FIRST_ASSIGNED_SERNR + _ASSIGNED_SERNR_SPAN:
                self._next_sernr = max(self._next_sernr, sernr + 1)
        self._next_internal_id = max(self._next_internal_id, internal_id + 1)

    # ----- the store file ------------------------------------------------------------

    def _load_store(self) -> None:
        try:
            handle = open(self._store_path, encoding="utf-8")
        except FileNotFoundError:
            return
        with handle:
            for line in handle:
                line = line.strip()
                if not line:
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # a line cut short by a crash
                if not isinstance(record, dict):
                    continue
                origin = HAND if record.pop(_ORIGIN_KEY, None) == HAND else API
                if not isinstance(record.get("internalId"), int):
                    record["internalId"] = self._next_internal_id
                record.setdefault("Invalid", 0)
                self._index_locked(record, origin)

    def _persist_locked(self, record: dict, origin: str) -> None:
        if not self._store_path:
            return
        if self._store_file is None:
            self._store_file = open(self._store_path, "a", encoding="utf-8")
        line = {**record, _ORIGIN_KEY: origin} if origin == HAND else record
        self._store_file.write(json.dumps(line, separators=(",", ":"), ensure_ascii=False) + "\n")
        self._store_file.flush()
