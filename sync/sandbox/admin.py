"""A small client for the sandbox's admin endpoint (/__sandbox__/), for the CLI and for
scripts: start or stop the test instance, switch faults, annul an invoice, load invoices
by hand, read the stats and the ledger.

Plain urllib (only sync/oppen/client.py imports requests). It talks only to a sandbox on
this machine (loopback URL), never through a proxy and never following a redirect, sends
the sandbox's own credentials as HTTP Basic, and never puts the password in a message.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import socket
import urllib.error
import urllib.request
from typing import Any, Mapping, Sequence
from urllib.parse import urlsplit

from ..errors import SyncError

DEFAULT_TIMEOUT = 10.0
DEFAULT_USERNAME = "API"


class SandboxAdminError(SyncError):
    """The sandbox's admin endpoint refused or could not be reached; `status` is the HTTP
    status when there was an answer."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # A redirect would carry the Basic credentials elsewhere.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


def _check_url(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if parts.scheme != "http" or not loopback:
        raise SandboxAdminError(f"El sandbox se administra solo en esta máquina: se esperaba "
                                f"http://127.0.0.1:PUERTO o http://localhost:PUERTO, no {url!r}")
    return f"http://{parts.netloc}"


def _call(url: str, method: str, route: str, *, username: str, password: str,
          timeout: float, data: Any = None) -> Any:
    base = _check_url(url)
    credentials = base64.b64encode(f"{username}:{password}".encode("utf-8")).decode("ascii")
    headers = {"Authorization": f"Basic {credentials}", "Accept": "application/json"}
    body = None
    if method == "POST":
        body = json.dumps({} if data is None else data, ensure_ascii=False).encode("utf-8")
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(f"{base}/__sandbox__/{route}", data=body, headers=headers,
                                     method=method)
    try:
        with _OPENER.open(request, timeout=timeout) as answer:
            raw = answer.read()
    except urllib.error.HTTPError as exc:
        raise SandboxAdminError(f"El sandbox respondió {exc.code}: {_error_text(exc)}",
                                status=exc.code) from None
    except (urllib.error.URLError, socket.timeout, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise SandboxAdminError(f"No se pudo conectar con el sandbox en {base}: {reason}") from None
    try:
        answer_body = json.loads(raw)
        return answer_body["data"]
    except (ValueError, KeyError, TypeError):
        raise SandboxAdminError(f"Respuesta ilegible del sandbox en {base}") from None


def _error_text(exc: urllib.error.HTTPError) -> str:
    try:
        text = json.loads(exc.read()).get("error")
    except (ValueError, AttributeError, OSError):
        text = None
    return text if isinstance(text, str) and text else exc.reason or "error"


def start(url: str, *, password: str, username: str = DEFAULT_USERNAME,
          timeout: float = DEFAULT_TIMEOUT) -> dict:
    """Start the test instance: the API answers again. Returns {"stopped": False}."""
    return _call(url, "POST", "start", username=username, password=password, timeout=timeout)


def stop(url: str, *, password: str, username: str = DEFAULT_USERNAME,
         timeout: float = DEFAULT_TIMEOUT) -> dict:
    """Stop the test instance: every API call answers the 502 "Testing Framework" page
    until start(). Returns {"stopped": True}."""
    return _call(url, "POST", "stop", username=username, password=password, timeout=timeout)


def get_faults(url: str, *, password: str, username: str = DEFAULT_USERNAME,
               timeout: float = DEFAULT_TIMEOUT) -> dict:
    """The faults in force, by name."""
    return _call(url, "GET", "faults", username=username, password=password, timeout=timeout)


def set_faults(url: str, changes: Mapping[str, Any], *, password: str,
               username: str = DEFAULT_USERNAME, timeout: float = DEFAULT_TIMEOUT) -> dict:
    """Change some faults (e.g. {"error_rate": 0.2, "down": True}); returns them all."""
    return _call(url, "POST", "faults", username=username, password=password, timeout=timeout,
                 data=dict(changes))


def annul(url: str, *, password: str, sernr: int | None = None,
          official_sernr: str | None = None, voucher_code: str | None = None,
          doc_type: int | str | None = None, username: str = DEFAULT_USERNAME,
          timeout: float = DEFAULT_TIMEOUT) -> dict:
    """Annul one invoice (Invalid = 1) by SerNr, or by OfficialSerNr plus VoucherCode/DocType
    when the number alone names more than one. Returns the annulled record."""
    data: dict[str, Any] = {}
    for key, value in (("SerNr", sernr), ("OfficialSerNr", official_sernr),
                       ("VoucherCode", voucher_code), ("DocType", doc_type)):
        if value is not None:
            data[key] = value
    return _call(url, "POST", "annul", username=username, password=password, timeout=timeout,
                 data=data)


def load(url: str, records: Sequence[Mapping[str, Any]], *, password: str,
         username: str = DEFAULT_USERNAME, timeout: float = DEFAULT_TIMEOUT) -> list[dict]:
    """Load invoices by hand (all or none); returns them as stored, with their SerNr."""
    return _call(url, "POST", "load", username=username, password=password, timeout=timeout,
                 data=list(records))


def stats(url: str, *, password: str, username: str = DEFAULT_USERNAME,
          timeout: float = DEFAULT_TIMEOUT) -> dict:
    """Counts (invoices, annulled, posted, loaded_by_hand, repeat_posts, ...) and state."""
    return _call(url, "GET", "stats", username=username, password=password, timeout=timeout)


def invoices(url: str, *, password: str, username: str = DEFAULT_USERNAME,
             timeout: float = DEFAULT_TIMEOUT) -> list[dict]:
    """Every stored invoice, annulled ones included."""
    return _call(url, "GET", "invoices", username=username, password=password, timeout=timeout)
