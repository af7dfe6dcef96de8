"""The built-in Oppen: a stand-in for the Oppen "NG" generic API, served over real HTTP
on loopback. The console uses it as its embedded default target and as the demo and
training target; the test suite drives it over real sockets.

It answers as the publicly known real service does (authenticate, POST/GET Invoice with
Oppen's filters and error texts, Labels with the company name, per-voucher numbering,
annulled invoices, the stopped test instance) and can be told to misbehave (latency,
5xx, 502 pages, timeouts after storing, dropped connections, 429, expiring tokens,
empty or foreign 2xx answers, trickling bodies, ignored filters) so that retries and
"unknown outcome" handling can be exercised on purpose.

It never talks to the real Oppen or to any other host, never listens anywhere but the
address it is given (loopback by default), never logs passwords or tokens, and writes
to disk only the `store_path` it is handed.

    instance.py    OppenSandbox: parts put together, the Python API, routing
    server.py      the HTTP front: sockets, bodies, hang/drop/trickle on the wire
    api.py         /genericapi/<API>/: authenticate, POST and GET Invoice, docs
    control.py     /__sandbox__/: the admin endpoint (Basic auth, loopback only)
    admin.py       a small client for the admin endpoint (for the CLI)
    ledger.py      stored invoices: identity, uniqueness, annul, load, store file
    query.py       GET Invoice's filters and paging
    validation.py  what a POSTed invoice must be, in Oppen's words
    faults.py      Faults and the seeded dice
    tokens.py, log.py, replies.py, pages.py   tokens, request log, replies, HTML
"""

from .faults import Faults
from .instance import OppenSandbox
from .ledger import FIRST_ASSIGNED_SERNR

__all__ = ["FIRST_ASSIGNED_SERNR", "Faults", "OppenSandbox"]
