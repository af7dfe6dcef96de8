"""The Oppen NG API as the sandbox serves it under /genericapi/<API>/: authenticate,
POST Invoice, GET Invoice and the docs page, with the faults in force applied and
every call written to the request log.

It turns one request into one Reply; it never touches a socket, never logs a password,
a token or a payload, and reaches stored invoices only through the Ledger.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import parse_qsl

from . import pages
from .faults import Dice, Faults
from .ledger import Ledger, identity_label, voucher_label, voucher_of
from .log import RequestLog
from .query import QueryError, answer, parse
from .replies import Reply, error, json_reply
from .tokens import TokenBook
from .validation import Rules, check_invoice

_INVALID_JSON = object()
_SERVER_ERRORS = frozenset({"error_500", "error_502", "error_503"})


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return _INVALID_JSON


@dataclass
class _Call:
    """One API call as the log sees it; `repeat` is the invoice's identity when a POST
    brings an invoice already held."""

    log: RequestLog
    method: str
    resource: str
    official: Any = None
    voucher: str | None = None
    repeat: str | None = None
    # When the request arrived, so a test can tell a POST already on the wire when its
    # sender was killed or paused from one sent afterwards (entries are logged when done).
    received: float = field(default_factory=time.monotonic)

    def record(self, outcome: str) -> None:
        self.log.record(self.method, self.resource, outcome, official=self.official,
                        voucher=self.voucher, repeat=self.repeat, received=self.received)


class OppenApi:
    def __init__(
        self,
        *,
        base: str,
        username: str,
        password: str,
        ledger: Ledger,
        tokens: TokenBook,
        log: RequestLog,
        dice: Dice,
        rules: Rules,
        faults: Callable[[], Faults],
        stopped: Callable[[], bool],
        wait: Callable[[float], Any],
    ) -> None:
        self._base = base
        self._username = username
        self._password = password
        self._ledger = ledger
        self._tokens = tokens
        self._log = log
        self._dice = dice
        self._rules = rules
        self._faults = faults
        self._stopped = stopped
        self._wait = wait

    def respond(self, method: str, resource: str, headers: Any, body: bytes, query: str) -> Reply:
        faults = self._faults()
        if resource == "docs" and method == "GET":
            if self._stopped():
                return pages.testing_framework()
            return pages.bad_gateway() if faults.down else pages.docs_page(self._base)
        call = _Call(self._log, method, resource)
        payload: Any = None
        params: list[tuple[str, str]] = []
        if method == "POST":
            payload = _parse_json(body)
            if isinstance(payload, dict):
                call.official = payload.get("OfficialSerNr")
                call.voucher = voucher_label(voucher_of(payload))
                if resource == "Invoice" and isinstance(call.official, str) and self._ledger.holds(payload):
                    call.repeat = identity_label(call.official, voucher_of(payload))
        elif method == "GET":
            params = parse_qsl(query, keep_blank_values=True)
            call.official = next((v for k, v in params if k == "OfficialSerNr"), None)
        self._log.arrived(method, resource)
        try:
            return self._serve(call, headers, payload, params, faults)
        except Exception:
            call.record("error")
            return error(500, "Internal Server Error")
        finally:
            self._log.answered(method, resource)

    def _serve(self, call: _Call, headers: Any, payload: Any, params: list, faults: Faults) -> Reply:
        if faults.latency_ms > 0:
            self._wait(faults.latency_ms / 1000.0)
        # A stopped or unreachable instance answers everything the same way, before any
        # checking.
        if self._stopped():
            call.record("stopped")
            return pages.testing_framework()
        if faults.down:
            call.record("down")
            return pages.bad_gateway()
        if call.resource == "authenticate" and call.method == "POST":
            return self._authenticate(call, payload, faults)
        if call.resource != "Invoice" or call.method not in ("GET", "POST"):
            call.record("not_found")
            return error(404, "Not Found")
        if not self._tokens.use(headers.get("Authorization", ""), ttl=faults.token_ttl,
                                max_uses=faults.token_max_uses):
            call.record("unauthorized")
            return error(401, "Unauthorized")
        if call.method == "POST":
            return self._create_invoice(call, payload, faults)
        return self._list_invoices(call, params, faults)

    def _authenticate(self, call: _Call, payload: Any, faults: Faults) -> Reply:
        if payload is _INVALID_JSON:
            call.record("rejected")
            return error(400, "Invalid JSON")
        user = payload.get("username") if isinstance(payload, dict) else None
        password = payload.get("password") if isinstance(payload, dict) else None
        # What the log keeps of an authenticate call: nothing of its body.
        call.official = call.voucher = None
        if not (isinstance(user, str) and isinstance(password, str)):
            call.record("auth_failed")
            return error(401, "Unauthorized")
        # Both comparisons always run, so timing does not tell which one failed.
        user_ok = hmac.compare_digest(user.encode("utf-8"), self._username.encode("utf-8"))
        password_ok = hmac.compare_digest(password.encode("utf-8"), self._password.encode("utf-8"))
        if not (user_ok and password_ok):
            call.record("auth_failed")
            return error(401, "Unauthorized")
        token = self._tokens.issue(faults.token_ttl)
        call.record("authenticated")
        return json_reply(200, {"ok": True, "token": token, "expires": int(faults.token_ttl)})

    def _fault_reply(self, call: _Call, fault: str) -> Reply:
        if fault == "error_502":
            call.record("fault_502_html")
            return pages.bad_gateway()
        if fault in _SERVER_ERRORS:
            call.record("fault_5xx")
            return error(int(fault[-3:]), "Internal Server Error")
        if fault == "rate_limit":
            call.record("rate_limited")
            return error(429, "Too Many Requests", (("Retry-After", "0"),))
        call.record("dropped")
        return Reply(action="drop")

    def _create_invoice(self, call: _Call, payload: Any, faults: Faults) -> Reply:
        fault = self._dice.draw(faults, post=True)
        if fault in _SERVER_ERRORS or fault in ("rate_limit", "drop"):
            return self._fault_reply(call, fault)
        if fault in ("empty", "foreign"):
            # A gateway or a bug answering 2xx for a record it did not store.
            other = None
            if fault == "foreign":
                other = self._ledger.foreign_to(payload if isinstance(payload, dict) else {},
                                                self._dice.pick)
            call.record("foreign_answer" if other is not None else "empty_answer")
            return json_reply(201, {"ok": True, "data": other if other is not None else {}})
        reply, outcome = self._store(call, payload, faults)
        if fault == "timeout" and outcome == "stored":
            call.record("timeout_after_store")
            return Reply(action="hang", hang_seconds=faults.hang_seconds)
        if fault == "trickle":
            call.record("trickled")
            return dataclasses.replace(reply, action="trickle", trickle_ms=faults.trickle_ms)
        call.record(outcome)
        return reply

    def _store(self, call: _Call, payload: Any, faults: Faults) -> tuple[Reply, str]:
        if not isinstance(payload, dict):
            return error(400, "Invalid JSON"), "rejected"
        problem = check_invoice(payload, self._rules)
        if problem is not None:
            return error(422 if faults.validation_style == "real" else 400, problem), "rejected"
        record, same = self._ledger.create(payload)
        if same:
            # Held by the time the lock was taken, even if not when the call arrived.
            call.repeat = identity_label(call.official, voucher_of(payload))
        if record is None:
            if faults.duplicate_style == "real":
                return error(400, "Duplicate Official Serial Nr!"), "duplicate"
            return error(409, "Duplicate invoice"), "duplicate"
        return json_reply(201, {"ok": True, "data": record}), "stored"

    def _list_invoices(self, call: _Call, params: list, faults: Faults) -> Reply:
        fault = self._dice.draw(faults, post=False)
        if fault is not None and fault != "trickle":
            return self._fault_reply(call, fault)
        try:
            query = parse(params)
        except QueryError as exc:
            call.record("rejected")
            return error(400, str(exc))
        honour = not faults.ignore_filters
        records = self._candidates(query) if honour else self._ledger.walk()
        reply = json_reply(200, answer(records, query, honour_filters=honour))
        if fault == "trickle":
            call.record("trickled")
            return dataclasses.replace(reply, action="trickle", trickle_ms=faults.trickle_ms)
        call.record("listed")
        return reply

    def _candidates(self, query) -> Any:
        """Records worth testing: an index hit for OfficialSerNr/SerNr equality, else all."""
        official = query.equal_to("OfficialSerNr")
        if official is not None:
            return self._ledger.with_official(official)
        sernr = query.equal_to("SerNr")
        if sernr is not None:
            try:
                return self._ledger.with_sernr(int(sernr))
            except ValueError:
                return []
        return self._ledger.walk()
