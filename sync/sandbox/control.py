"""The sandbox's admin endpoint, /__sandbox__/ on the same server: what a trainer or a
test does from outside the process (start or stop the instance, switch faults, annul an
invoice, load invoices by hand, read the stats and the ledger).

Every call needs HTTP Basic with the sandbox's own username and password: a bearer
token would not do, since `authenticate` answers 502 while the instance is stopped.
It answers only clients on loopback, takes POST bodies only as application/json (a
web page cannot send that cross-site without a preflight this server never allows),
is exempt from the faults, and is not written to the request log (which stays what
the Oppen API saw). It never changes state except through OppenSandbox's public API.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import json
from typing import TYPE_CHECKING, Any, Callable

from .faults import Faults
from .ledger import Conflict, NotHeld
from .replies import Reply, error, json_reply

if TYPE_CHECKING:
    from .instance import OppenSandbox

PREFIX = "/__sandbox__/"
_CHALLENGE = (("WWW-Authenticate", 'Basic realm="Oppen sandbox", charset="UTF-8"'),)
_FAULT_NAMES = frozenset(Faults.__dataclass_fields__)


def is_loopback(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


class AdminEndpoint:
    def __init__(self, sandbox: OppenSandbox, *, username: str, password: str) -> None:
        self._sandbox = sandbox
        self._username = username.encode("utf-8")
        self._password = password.encode("utf-8")
        self._routes: dict[tuple[str, str], Callable[[Any], Any]] = {
            ("GET", "stats"): lambda _: sandbox.stats(),
            ("GET", "invoices"): lambda _: sandbox.invoices(),
            ("GET", "faults"): lambda _: sandbox.faults.as_dict(),
            ("POST", "faults"): self._set_faults,
            ("POST", "start"): lambda _: self._instance(stopped=False),
            ("POST", "stop"): lambda _: self._instance(stopped=True),
            ("POST", "annul"): self._annul,
            ("POST", "load"): self._load,
        }

    def respond(self, method: str, route: str, headers: Any, body: bytes, client_host: str) -> Reply:
        if not is_loopback(client_host):
            return error(403, "El administrador del sandbox solo atiende pedidos desde esta máquina")
        if not self._authorized(headers.get("Authorization", "")):
            return error(401, "Usuario o contraseña del sandbox incorrectos", _CHALLENGE)
        action = self._routes.get((method, route))
        if action is None:
            if any(path == route for _, path in self._routes):
                return error(405, f"{method} no corresponde a /__sandbox__/{route}")
            return error(404, f"No existe /__sandbox__/{route}")
        data = None
        if method == "POST":
            content_type = headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
            if content_type != "application/json":
                return error(415, "El administrador del sandbox solo acepta JSON "
                                  "(Content-Type: application/json)")
            try:
                data = json.loads(body) if body.strip() else {}
            except (ValueError, RecursionError):
                return error(400, "El cuerpo no es JSON válido")
        try:
            return json_reply(200, {"ok": True, "data": action(data)})
        except NotHeld as exc:
            return error(404, str(exc))
        except Conflict as exc:
            return error(409, str(exc))
        except (ValueError, TypeError) as exc:
            return error(400, str(exc))

    def _authorized(self, authorization: str) -> bool:
        scheme, _, encoded = authorization.strip().partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = base64.b64decode(encoded.strip(), validate=True).partition(b":")
        except (binascii.Error, ValueError):
            return False
        # Both comparisons always run, so timing does not tell which one failed.
        user_ok = hmac.compare_digest(user, self._username)
        password_ok = hmac.compare_digest(password, self._password)
        return bool(sep) and user_ok and password_ok

    def _instance(self, *, stopped: bool) -> dict:
        if stopped:
            self._sandbox.stop_instance()
        else:
            self._sandbox.start_instance()
        return {"stopped": self._sandbox.instance_stopped}

    def _set_faults(self, data: Any) -> dict:
        if not isinstance(data, dict):
            raise ValueError("Se espera un objeto JSON con las fallas a cambiar")
        unknown = sorted(set(data) - _FAULT_NAMES)
        if unknown:
            raise ValueError(f"Falla desconocida: {', '.join(unknown)}. "
                             f"Las que hay: {', '.join(sorted(_FAULT_NAMES))}")
        self._sandbox.set_faults(**data)
        return self._sandbox.faults.as_dict()

    def _annul(self, data: Any) -> dict:
        if not isinstance(data, dict):
            raise ValueError("Se espera un objeto JSON con SerNr, u OfficialSerNr "
                             "(y VoucherCode, DocType)")
        sernr = data.get("SerNr")
        if sernr is not None and (not isinstance(sernr, int) or isinstance(sernr, bool)):
            raise ValueError("SerNr debe ser un número entero")
        return self._sandbox.annul(sernr=sernr, official_sernr=data.get("OfficialSerNr"),
                                   voucher_code=data.get("VoucherCode"),
                                   doc_type=data.get("DocType"))

    def _load(self, data: Any) -> list[dict]:
        records = data.get("records") if isinstance(data, dict) else data
        if not isinstance(records, list):
            raise ValueError("Se espera una lista de facturas (o {\"records\": [...]})")
        return self._sandbox.load_invoices(records)
