"""OppenSandbox: one running sandbox, put together from its parts, and its Python API
(lifecycle, faults, the stopped instance, the ledger, the log and the stats).

It routes each request to the Oppen API (/genericapi/<API>/), the admin endpoint
(/__sandbox__/) or its own root page, and holds the state they share. It never
talks to the real Oppen or any other host and listens only on the address it is given.
"""

from __future__ import annotations

import copy
import datetime
import threading
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import urlsplit

from . import pages
from .api import OppenApi
from .control import PREFIX as ADMIN_PREFIX, AdminEndpoint
from .faults import Dice, Faults
from .ledger import Ledger
from .log import RequestLog
from .replies import Reply, error
from .server import HttpFront, Request
from .tokens import TokenBook
from .validation import MAX_SERNR, Rules

# The company name the real service appends to Labels in the "real" profile (the one
# seen in the customer's notes: "ALMF01" comes back as "ALMF01,PERSEO").
REAL_COMPANY = "PERSEO"
PROFILES = ("seed", "real")
_DEFAULT: Any = object()

TodayArg = datetime.date | Callable[[], datetime.date] | None


def _today_function(today: TodayArg) -> Callable[[], datetime.date] | None:
    if today is None or callable(today):
        return today
    if isinstance(today, datetime.date):
        return lambda: today
    raise TypeError("today must be a date, a function returning one, or None")


class OppenSandbox:
    """An Oppen NG API look-alike on a real socket.

    `profile` "seed" (default) answers as the seed's examples: Labels stored as sent,
    rejections with 400, duplicates with 409, any due date accepted. "real" answers as
    the real service: Labels + ",PERSEO", rejections 422, duplicates 400 "Duplicate
    Official Serial Nr!", a due date before today refused. `company` and `today`
    override the profile's choice (`company=None` appends nothing; `today` is a date or
    a function returning one; None accepts past due dates); the two styles can be
    switched back at runtime with set_faults.
    `labels`/`articles`/`customers` are the codes Oppen knows (None: anything links);
    `max_sernr` is the largest client SerNr accepted (RANGEERR4 above); `stopped`
    starts with the test instance stopped.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api: str = "ApiNg",
        username: str = "API",
        password: str,
        faults: Faults | None = None,
        labels: Iterable[str] | None = None,
        articles: Iterable[str] | None = None,
        customers: Iterable[str] | None = None,
        store_path: str | None = None,
        profile: str = "seed",
        company: str | None = _DEFAULT,
        today: TodayArg = _DEFAULT,
        max_sernr: int = MAX_SERNR,
        stopped: bool = False,
    ) -> None:
        if not isinstance(password, str):
            raise TypeError("password must be a string")
        if profile not in PROFILES:
            raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
        real = profile == "real"
        faults = faults if faults is not None else Faults()
        if real:
            faults = faults.changed(duplicate_style="real", validation_style="real")
        if company is _DEFAULT:
            company = REAL_COMPANY if real else None
        if today is _DEFAULT:
            today = datetime.date.today if real else None
        self.host = host
        self.api = api
        self.username = username
        self.profile = profile
        self._base = f"/genericapi/{api}/"
        self._lock = threading.Lock()  # faults, stopped
        self._faults = Faults(**faults.as_dict())
        self._stopped = bool(stopped)
        self._dice = Dice(self._faults.seed)
        self._ledger = Ledger(store_path=store_path, company=company)
        self._tokens = TokenBook()
        self._log = RequestLog()
        rules = Rules(
            labels=frozenset(labels) if labels is not None else None,
            articles=frozenset(articles) if articles is not None else None,
            customers=frozenset(customers) if customers is not None else None,
            max_sernr=max_sernr,
            today=_today_function(today),
        )
        self._front = HttpFront(host, port, self._respond)
        self._api = OppenApi(
            base=self._base, username=username, password=password, ledger=self._ledger,
            tokens=self._tokens, log=self._log, dice=self._dice, rules=rules,
            faults=lambda: self._faults, stopped=lambda: self._stopped,
            wait=self._front.stopping.wait,
        )
        self._admin = AdminEndpoint(self, username=username, password=password)
        # Bound now so `url` is known before start(); a port of 0 is fixed here and
        # reused on a restart so the URL stays valid.
        self.port: int = self._front.port
        self.url: str = f"http://{host}:{self.port}"

    # ----- the HTTP server's lifecycle -----------------------------------------------

    def start(self) -> OppenSandbox:
        """Serve on the socket (not to be confused with start_instance)."""
        self._front.start()
        return self

    def stop(self) -> None:
        """Close the socket and the store file; start() serves again on the same port."""
        self._front.stop()
        self._ledger.close()

    def __enter__(self) -> OppenSandbox:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    # ----- the Oppen test instance: stopped until someone starts it -------------------

    def stop_instance(self) -> None:
        """Every API call answers the "Testing Framework" 502 page until start_instance."""
        with self._lock:
            self._stopped = True

    def start_instance(self) -> None:
        with self._lock:
            self._stopped = False

    @property
    def instance_stopped(self) -> bool:
        return self._stopped

    # ----- faults ------------------------------------------------------------------------

    @property
    def faults(self) -> Faults:
        """A copy of the faults in force."""
        return Faults(**self._faults.as_dict())

    def set_faults(self, **changes: Any) -> None:
        with self._lock:
            # Swapped whole: a request in flight keeps the snapshot it started with.
            self._faults = self._faults.changed(**changes)
            if "seed" in changes:
                self._dice.reseed(changes["seed"])

    # ----- the ledger ----------------------------------------------------------------------

    def invoices(self) -> list[dict]:
        # Stored records are never mutated, so copying outside the ledger's lock is safe.
        return copy.deepcopy(self._ledger.all())

    def add_invoice(self, record: Mapping) -> dict:
        """Store one record as if it already existed in Oppen (loaded by hand): no
        validation, no faults. ValueError if that invoice or SerNr is already stored."""
        return self.load_invoices([record])[0]

    def load_invoices(self, records: Iterable[Mapping]) -> list[dict]:
        """Store records as a person or the old integration would have, all or none:
        SerNr assigned when absent, Labels as Oppen stores them, not counted as POSTed.
        ValueError (Spanish) if one is malformed or already stored."""
        return copy.deepcopy(self._ledger.load([copy.deepcopy(r) for r in records]))

    def annul(self, *, sernr: int | None = None, official_sernr: str | None = None,
              voucher_code: Any = None, doc_type: Any = None) -> dict:
        """Mark one invoice Invalid (it stays, and still counts for uniqueness), by SerNr
        or by OfficialSerNr (+ VoucherCode/DocType when the number is not enough).
        ValueError (Spanish) when none or more than one invoice fits."""
        record = self._ledger.annul(sernr=sernr, official=official_sernr,
                                    voucher_code=voucher_code, doc_type=doc_type)
        return copy.deepcopy(record)

    def reset(self) -> None:
        """Forget every invoice (also in the store file), token and log entry."""
        self._ledger.reset()
        self._tokens.clear()
        self._log.clear()

    # ----- what callers read back ------------------------------------------------------------

    def issued_tokens(self) -> list[str]:
        """Every token handed out and not yet forgotten (for tests that hunt for leaks)."""
        return self._tokens.issued()

    def request_log(self) -> list[dict]:
        return self._log.entries()

    def in_flight(self, method: str = "POST", path: str = "Invoice") -> int:
        """Requests of that kind received whose answer is not ready yet (waiting out the
        latency fault; a hang or a trickle counts only until its answer starts): a test
        that pauses a sender waits for the moment all its threads wait on Oppen."""
        return self._log.in_flight(method, path)

    def repeat_posts(self) -> dict[str, int]:
        """POSTs of an invoice already held, per invoice ("OfficialSerNr" or
        "OfficialSerNr VoucherCode/DocType"), whatever the answer was; {} when every
        invoice was POSTed at most until it was stored."""
        return self._log.repeats()

    def stats(self) -> dict:
        repeats = self._log.repeats()
        return {
            **self._ledger.counts(),
            "repeat_posts": sum(repeats.values()),
            "repeat_posts_by_invoice": repeats,
            "stopped": self._stopped,
            "down": self._faults.down,
            "profile": self.profile,
            "url": self.url,
            "api": self.api,
        }

    # ----- routing -------------------------------------------------------------------------------

    def _respond(self, request: Request) -> Reply:
        parts = urlsplit(request.path)
        path = parts.path
        if path in ("", "/"):
            if request.method != "GET":
                return error(404, "Not Found")
            return pages.root_page(self._base, invoices=len(self._ledger),
                                   down=self._faults.down, stopped=self._stopped)
        if path.startswith(ADMIN_PREFIX):
            return self._admin.respond(request.method, path[len(ADMIN_PREFIX):].strip("/"),
                                       request.headers, request.body, request.client_host)
        if not (path + "/").startswith(self._base):
            return error(404, "Not Found")
        resource = path[len(self._base):].strip("/")
        return self._api.respond(request.method, resource, request.headers, request.body,
                                 parts.query)
