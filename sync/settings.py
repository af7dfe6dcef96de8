"""Settings for the console and the CLI, read once from one place.

Source order: built-in defaults < `.streamlit/secrets.toml` < environment variables.
Every problem raises `ConfigError` naming the setting; no credential has a default
here, and `Settings.__repr__` never shows the password.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from sqlalchemy.engine import make_url

from .errors import ConfigError
from .mapping import PROFILES, MappingProfile, local_key

PROJECT_DIR = Path(__file__).resolve().parent.parent
DEFAULT_SECRETS = PROJECT_DIR / ".streamlit" / "secrets.toml"
DEFAULT_DATABASE_URL = f"sqlite:///{PROJECT_DIR / 'data' / 'console.sqlite3'}"

ENVIRONMENTS = {
    "sandbox": None,  # the built-in sandbox, started by whoever needs it
    "test": "https://ngprueba.oppen.io",
    "production": "https://ng.oppen.io",
}
ENV_LABELS = {"sandbox": "SANDBOX", "test": "PRUEBAS", "production": "PRODUCCIÓN"}
ROLES = ("auditor", "admin")
# The chain's days are Argentine days, whatever the server's time zone.
AR_TZ = ZoneInfo("America/Argentina/Buenos_Aires")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
_BCRYPT = re.compile(r"^\$2[aby]\$\d{2}\$[./A-Za-z0-9]{53}$")


def local_today(now: dt.datetime | None = None) -> dt.date:
    """Today in Argentina (the auditors' day)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    if now.tzinfo is None:
        now = now.replace(tzinfo=dt.timezone.utc)
    return now.astimezone(AR_TZ).date()


@dataclass(frozen=True)
class User:
    username: str
    name: str
    role: str
    password_hash: str = field(repr=False)
    # Single sign-on (st.login): the e-mail the identity provider vouches for.
    email: str = ""


@dataclass(frozen=True)
class Settings:
    # Not in repr: a MySQL URL carries its password.
    database_url: str = field(default=DEFAULT_DATABASE_URL, repr=False)
    oppen_env: str = "sandbox"
    # None with the sandbox environment: start the built-in sandbox in-process.
    base_url: str | None = None
    api: str = "ApiNg"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 30.0
    max_attempts: int = 3
    backoff_base: float = 0.5
    backoff_cap: float = 8.0
    lease_seconds: float = 120.0
    concurrency: int = 4
    breaker_threshold: int = 5
    # Not in repr: a webhook's path is its secret.
    webhook_url: str | None = field(default=None, repr=False)
    webhook_format: str = "slack"          # slack ({"text": …}) or json (a plain object)
    # The worker (`python -m sync worker`): how often it looks for work, the automatic
    # retry schedule of an invoice (the last delay repeats until the horizon), when an
    # alert says invoices or Oppen have been waiting too long, and from which cash day
    # audits made in the host application are picked up (None: the day our tables were
    # created, recorded in the database).
    worker_poll: float = 5.0
    retry_delays: tuple[float, ...] = (60.0, 300.0, 900.0, 3600.0, 10800.0, 21600.0)
    retry_horizon: float = 7 * 86_400.0
    alert_stale_after: float = 4 * 3600.0
    pickup_since: dt.date | None = None
    # The morning reconciliation against Oppen (sync/reconcile.py `reconcile_due`): at
    # this Argentine time of day (None: never on its own), over the days audited since
    # the last one plus this many previous days again, for late changes in Oppen.
    reconcile_at: dt.time | None = dt.time(6, 0)
    reconcile_days: int = 7
    # The console's login: how long a session lasts (kept across reloads and tabs), the
    # key that signs it (None: one made once per database), and the single-sign-on
    # providers configured in [auth] (st.login; "" is [auth]'s own, unnamed one).
    session_hours: float = 12.0
    session_secret: str | None = field(default=None, repr=False)
    sso_providers: tuple[str, ...] = ()
    mapping: MappingProfile = MappingProfile()
    users: Mapping[str, User] = field(default_factory=lambda: MappingProxyType({}), repr=False)

    @property
    def target(self) -> str:
        """Which Oppen the sync state belongs to: sent to the sandbox is not sent to production."""
        return f"{self.oppen_env}/{self.api}"

    @property
    def env_label(self) -> str:
        return ENV_LABELS[self.oppen_env]

    @property
    def embedded_sandbox(self) -> bool:
        return self.oppen_env == "sandbox" and self.base_url is None

    def replace(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **changes)


# --- scalar settings: parse the type here, check the range in `validate` -----------------
# Ranges live in `validate` (not only in the parsers) so Settings built in code are
# held to them too. A value that parses but is absurd (a lease of 1e300 seconds) would
# overflow far from here, mid-run; refusing it at start-up names the setting instead.

def _shown(raw: Any) -> str:
    return repr(str(raw)[:40])


def _positive_float(name: str, raw: Any) -> float:
    # TOML `true` is an int to Python: float(True) would quietly be 1.0 second.
    if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
        raise ConfigError(f"{name} debe ser un número mayor que 0 (se recibió {_shown(raw)})")
    try:
        value = float(str(raw).strip())
    except ValueError:
        raise ConfigError(f"{name} debe ser un número mayor que 0 "
                          f"(se recibió {_shown(raw)})") from None
    if not math.isfinite(value) or not value > 0:
        raise ConfigError(f"{name} debe ser un número mayor que 0 (se recibió {_shown(raw)})")
    return value


def _positive_int(name: str, raw: Any) -> int:
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        raise ConfigError(f"{name} debe ser un entero mayor que 0 (se recibió {_shown(raw)})")
    try:
        value = int(str(raw).strip())
    except ValueError:  # also a 5,000-digit number: int() refuses it
        raise ConfigError(f"{name} debe ser un entero mayor que 0 "
                          f"(se recibió {_shown(raw)})") from None
    if value < 1:
        raise ConfigError(f"{name} debe ser un entero mayor que 0 (se recibió {_shown(value)})")
    return value


def _clock(name: str, raw: Any) -> dt.time | None:
    """'HH:MM' (24 h, Argentina's time), or 'off' for never."""
    if isinstance(raw, dt.time):   # a TOML time literal: 06:00:00
        return raw.replace(second=0, microsecond=0, tzinfo=None)
    text = str(raw).strip().lower() if isinstance(raw, str) else None
    if text in ("off", "no", "nunca"):
        return None
    match = re.fullmatch(r"([01]?[0-9]|2[0-3]):([0-5][0-9])", text or "")
    if not match:
        raise ConfigError(f"{name} debe ser una hora HH:MM (p. ej. 06:00) u 'off' "
                          f"(se recibió {_shown(raw)})")
    return dt.time(int(match.group(1)), int(match.group(2)))


def _delays(name: str, raw: Any) -> tuple[float, ...]:
    """Seconds, comma-separated ("60,300,900"), or a TOML list of numbers."""
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        raw = [raw]
    parts = [p for p in raw.split(",") if p.strip()] if isinstance(raw, str) else raw
    if not isinstance(parts, (list, tuple)) or not parts:
        raise ConfigError(f"{name} debe ser una lista de segundos separados por comas "
                          f"(p. ej. 60,300,900; se recibió {_shown(raw)})")
    return tuple(_positive_float(name, part) for part in parts)


def _day(name: str, raw: Any) -> dt.date:
    """A cash day: AAAA-MM-DD (TOML reads an unquoted date as a date already)."""
    if isinstance(raw, dt.datetime):
        raw = raw.date()
    if isinstance(raw, dt.date):
        return raw
    try:
        if not isinstance(raw, str) or len(raw.strip()) != 10:
            raise ValueError
        return dt.date.fromisoformat(raw.strip())
    except ValueError:
        raise ConfigError(f"{name} debe ser una fecha AAAA-MM-DD (p. ej. 2026-11-24; se "
                          f"recibió {_shown(raw)})") from None


def _text(name: str, raw: Any) -> str:
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        raise ConfigError(f"{name} debe ser un texto")
    value = str(raw).strip()
    if not value:
        raise ConfigError(f"{name} está vacío")
    return value


_SCALARS = {
    "DATABASE_URL": ("database_url", _text),
    "OPPEN_ENV": ("oppen_env", _text),
    "OPPEN_BASE_URL": ("base_url", _text),
    "OPPEN_API": ("api", _text),
    "OPPEN_USERNAME": ("username", _text),
    "OPPEN_PASSWORD": ("password", _text),
    "OPPEN_TIMEOUT": ("timeout", _positive_float),
    "OPPEN_MAX_ATTEMPTS": ("max_attempts", _positive_int),
    "OPPEN_BACKOFF_BASE": ("backoff_base", _positive_float),
    "OPPEN_BACKOFF_CAP": ("backoff_cap", _positive_float),
    "OPPEN_LEASE_SECONDS": ("lease_seconds", _positive_float),
    "OPPEN_CONCURRENCY": ("concurrency", _positive_int),
    "OPPEN_BREAKER_THRESHOLD": ("breaker_threshold", _positive_int),
    "OPPEN_WEBHOOK_URL": ("webhook_url", _text),
    "OPPEN_SESSION_HOURS": ("session_hours", _positive_float),
    "OPPEN_SESSION_SECRET": ("session_secret", _text),
    "OPPEN_WEBHOOK_FORMAT": ("webhook_format", _text),
    "OPPEN_WORKER_POLL": ("worker_poll", _positive_float),
    "OPPEN_RETRY_DELAYS": ("retry_delays", _delays),
    "OPPEN_RETRY_HORIZON": ("retry_horizon", _positive_float),
    "OPPEN_ALERT_STALE_AFTER": ("alert_stale_after", _positive_float),
    "OPPEN_PICKUP_SINCE": ("pickup_since", _day),
    "OPPEN_RECONCILE_AT": ("reconcile_at", _clock),
    "OPPEN_RECONCILE_DAYS": ("reconcile_days", _positive_int),
}

# Settings field -> (setting name, lowest, highest, unit). A lowest of 0 is exclusive
# (a timeout or a backoff of 0 makes no sense); any other lowest is inclusive.
_NUMBER_RANGES = {
    "timeout": ("OPPEN_TIMEOUT", 0, 600, "segundos"),
    "max_attempts": ("OPPEN_MAX_ATTEMPTS", 1, 20, ""),
    "backoff_base": ("OPPEN_BACKOFF_BASE", 0, 60, "segundos"),
    "backoff_cap": ("OPPEN_BACKOFF_CAP", 0, 300, "segundos"),
    "lease_seconds": ("OPPEN_LEASE_SECONDS", 1, 86_400, "segundos"),
    "concurrency": ("OPPEN_CONCURRENCY", 1, 64, ""),
    "breaker_threshold": ("OPPEN_BREAKER_THRESHOLD", 1, 1000, ""),
    "session_hours": ("OPPEN_SESSION_HOURS", 0, 720, "horas"),
    "worker_poll": ("OPPEN_WORKER_POLL", 0, 3600, "segundos"),
    "reconcile_days": ("OPPEN_RECONCILE_DAYS", 1, 366, "días"),
}
# The API project name goes into every URL path: /genericapi/<API>/ ("." or ".." would
# climb out of it).
_API_NAME = re.compile(r"^(?!\.+$)[A-Za-z0-9_.-]{1,64}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def read_secrets(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except (tomllib.TOMLDecodeError, OSError) as exc:
        raise ConfigError(f"No se pudo leer {path}: {exc}") from None


# --- the mapping profile ---------------------------------------------------------------

@dataclass(frozen=True)
class _Rule:
    """How one MappingProfile field is read and which values make sense.

    kind: "text" | "int" | "bool" | "decimal" | "choice" | "format" | "types" | "locals";
    per: None (one value), "type" (a table by invoice type) or "local" (by local name).
    """
    kind: str
    low: Any = None
    high: Any = None
    per: str | None = None
    choices: tuple[str, ...] = ()


# Codes Oppen keeps (CustCode, Office, ArtCode, label codes) are short; 60 leaves room.
_CODE = 60
# A type as facturas_trns holds it; the state table keeps up to 10 characters.
_TYPE_NAME = re.compile(r"^[A-Z0-9]{1,10}$")
# The client SerNr is sernr_base + our row id; up to 10**15 leaves room for 9 * 10**18
# rows below 2**63 (BIGINT), and is the order of magnitude Oppen's own numbers live in
# (10**10 seen); a larger base is refused by Oppen (RANGEERR4) or overflows BIGINT.
SERNR_BASE_MAX = 10 ** 15
PAYMENT_DAYS_MAX = 3650

_MAPPING_RULES: dict[str, _Rule] = {
    "customer": _Rule("text", 1, _CODE),
    "customers_by_local": _Rule("text", 1, _CODE, per="local"),
    "office": _Rule("text", 1, _CODE),
    "label_format": _Rule("format", 0, 200),
    "labels_by_local": _Rule("text", 1, _CODE, per="local"),
    "create_user": _Rule("text", 1, _CODE),
    "status": _Rule("int", 0, 1),
    "invoice_types": _Rule("int", 0, 999, per="type"),
    "art_codes": _Rule("text", 1, _CODE, per="type"),
    "qty": _Rule("int", 1, 1000),
    "pos_width": _Rule("int", 1, 8),
    "number_width": _Rule("int", 1, 12),
    "price_includes_vat": _Rule("bool"),
    "vat_rate": _Rule("decimal", 0, 1),
    "vat_code": _Rule("text", 0, 20),
    "sernr_mode": _Rule("choice", choices=("client", "server")),
    "sernr_base": _Rule("int", 1, SERNR_BASE_MAX),
    "payment_days": _Rule("int", 0, PAYMENT_DAYS_MAX),
    "due_date_not_past": _Rule("bool"),
    "voucher_codes": _Rule("text", 1, 20, per="type"),
    "doc_types": _Rule("int", 0, 999, per="type"),
    "form_types": _Rule("text", 1, 20, per="type"),
    "send_to_official_sernr": _Rule("bool"),
    "send_invoice_date": _Rule("bool"),
    "allow_zero_amount": _Rule("bool"),
    "offices": _Rule("text", 1, _CODE, per="type"),
    "vat_codes": _Rule("text", 0, 20, per="type"),
    "price_includes_vat_by_type": _Rule("bool", per="type"),
    "pos_widths": _Rule("int", 1, 8, per="type"),
    "number_widths": _Rule("int", 1, 12, per="type"),
    "send_types": _Rule("types"),
    "excluded_locals": _Rule("locals", 1, 200),
}

_TRUE = ("1", "true", "si", "sí", "yes")
_FALSE = ("0", "false", "no")


def _one_value(name: str, rule: _Rule, raw: Any) -> Any:
    """One value of a mapping field, typed and within its range, or a ConfigError."""
    if raw is None:
        raise ConfigError(f"{name}: falta el valor (null)")
    if rule.kind == "bool":
        text = str(raw).strip().lower() if isinstance(raw, (str, int)) else ""
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ConfigError(f"{name} debe ser true o false (se recibió {_shown(raw)})")
    if rule.kind == "int":
        if isinstance(raw, bool) or not isinstance(raw, (str, int)):
            raise ConfigError(f"{name} debe ser un entero (se recibió {_shown(raw)})")
        try:
            value = int(str(raw).strip())
        except ValueError:
            raise ConfigError(f"{name} debe ser un entero (se recibió {_shown(raw)})") from None
        if not rule.low <= value <= rule.high:
            raise ConfigError(f"{name} debe estar entre {rule.low} y {rule.high} "
                              f"(se recibió {_shown(value)})")
        return value
    if rule.kind == "decimal":
        if isinstance(raw, bool) or not isinstance(raw, (str, int, float, Decimal)):
            raise ConfigError(f"{name} debe ser un número (se recibió {_shown(raw)})")
        try:
            value = Decimal(str(raw).strip())
        except InvalidOperation:
            raise ConfigError(f"{name} debe ser un número (se recibió {_shown(raw)})") from None
        if not (value.is_finite() and rule.low <= value < rule.high):
            raise ConfigError(f"{name} debe estar entre {rule.low} y {rule.high} "
                              f"(p. ej. 0.21; se recibió {_shown(raw)})")
        return value
    # Text of some kind. TOML numbers are accepted as their text (office = 200).
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        raise ConfigError(f"{name} debe ser un texto (se recibió {_shown(raw)})")
    value = str(raw) if rule.kind == "format" else str(raw).strip()
    if _CONTROL.search(value):
        raise ConfigError(f"{name} tiene caracteres de control (saltos de línea, tabulaciones)")
    if rule.kind == "choice":
        if value not in rule.choices:
            raise ConfigError(f"{name} debe ser {' o '.join(repr(c) for c in rule.choices)} "
                              f"(se recibió {_shown(value)})")
        return value
    if not rule.low <= len(value) <= rule.high:
        what = "no puede estar vacío" if not value else f"tiene más de {rule.high} caracteres"
        raise ConfigError(f"{name} {what}")
    if rule.kind == "format" and value and "{local}" not in value:
        raise ConfigError(f"{name}: label_format debe contener {{local}} "
                          "(o estar vacío para usar labels_by_local)")
    return value


def _as_json(name: str, raw: Any, example: str) -> Any:
    if not isinstance(raw, str):
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        raise ConfigError(f"{name} debe ser JSON (p. ej. {example})") from None


def _type_name(name: str, raw: Any) -> str:
    text = isinstance(raw, (str, int)) and not isinstance(raw, bool)
    value = str(raw).strip().upper() if text else ""
    if not _TYPE_NAME.fullmatch(value):
        raise ConfigError(f"{name}: {_shown(raw)} no es un tipo de factura (p. ej. A, B, Z, CC)")
    return value


def _mapping_value(name: str, key: str, raw: Any) -> Any:
    """Parse one mapping setting (from secrets.toml or OPPEN_MAPPING_<FIELD>) to its type."""
    rule = _MAPPING_RULES[key]
    if rule.kind in ("types", "locals"):
        if isinstance(raw, str) and not raw.strip().startswith(("[", "{")):
            raw = [part for part in raw.split(",") if part.strip()]  # "A,B,Z"
        raw = _as_json(name, raw, '["A", "B", "Z"]')
        if not isinstance(raw, (list, tuple)):
            raise ConfigError(f"{name} debe ser una lista (p. ej. [\"A\", \"B\", \"Z\"])")
        if rule.kind == "types":
            return tuple(dict.fromkeys(_type_name(name, t) for t in raw))
        return tuple(_one_value(name, _Rule("text", rule.low, rule.high), v) for v in raw)
    if rule.per is None:
        return _one_value(name, rule, raw)
    raw = _as_json(name, raw, '{"A": "001"}')
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{name} debe ser una tabla clave = valor (en el entorno, un objeto "
                          "JSON como {\"A\": \"001\"})")
    table: dict[str, Any] = {}
    for k, v in raw.items():
        if rule.per == "type":
            k = _type_name(name, k)
        else:
            k = str(k).strip()
            if not k:
                raise ConfigError(f"{name}: hay un local sin nombre")
        shown = f"{name} [{k[:40]!r}]"
        if v is None:
            # JSON null / a missing value: refused here so "None" never reaches Oppen.
            raise ConfigError(f"{shown}: el valor está vacío (null); poné el código o "
                              "quitá la entrada")
        table[k] = _one_value(shown, rule, v)
    return MappingProxyType(table)


def _check_locals_unique(name: str, table: Mapping[str, Any]) -> None:
    """"Tostado" and "TOSTADO " are one local to MariaDB: two codes for it are a mistake."""
    seen: dict[str, tuple[str, Any]] = {}
    for k, v in table.items():
        key = local_key(k)
        if key in seen and seen[key][1] != v:
            raise ConfigError(f"{name}: {seen[key][0][:40]!r} y {k[:40]!r} son el mismo local "
                              "(no se distinguen mayúsculas ni espacios) con valores distintos")
        seen.setdefault(key, (k, v))


def _merged(current: Any, value: Any, per: str | None) -> Any:
    """A table given in the configuration changes only the keys it names: setting
    art_codes for A alone must not leave B, Z and CC without one. By local, the keys
    compare as MariaDB does (`local_key`), so "MATRIZ" replaces "Matriz"."""
    if per is None or not isinstance(current, Mapping):
        return value
    if per == "local":
        replaced = {local_key(k) for k in value}
        current = {k: v for k, v in current.items() if local_key(k) not in replaced}
    return MappingProxyType({**current, **value})


_MAPPING_FIELDS = {f.name for f in dataclasses.fields(MappingProfile)} - {"name"}
assert _MAPPING_FIELDS == set(_MAPPING_RULES), "every mapping field needs a rule"


def _load_mapping(secrets: Mapping, environ: Mapping[str, str]) -> MappingProfile:
    table = secrets.get("mapping") or {}
    if not isinstance(table, Mapping):
        raise ConfigError("[mapping] en secrets.toml debe ser una tabla")
    profile_name = str(environ.get("OPPEN_PROFILE") or table.get("profile") or "seed").strip()
    if profile_name not in PROFILES:
        raise ConfigError(f"OPPEN_PROFILE debe ser uno de {', '.join(PROFILES)} "
                          f"(se recibió {profile_name[:40]!r})")
    profile = PROFILES[profile_name]
    changes: dict[str, Any] = {}
    sources: list[tuple[str, str, Any]] = []
    for key, raw in table.items():
        if key == "profile":
            continue
        if key not in _MAPPING_FIELDS:
            raise ConfigError(f"[mapping] {key}: no es un ajuste del mapeo "
                              f"(válidos: {', '.join(sorted(_MAPPING_FIELDS))})")
        sources.append((f"[mapping] {key}", key, raw))
    for key in sorted(_MAPPING_FIELDS):
        env_name = f"OPPEN_MAPPING_{key.upper()}"
        if env_name in environ:
            sources.append((f"{env_name} ({key})", key, environ[env_name]))
    # The environment comes after the file, so it wins key by key over both the
    # profile and the file.
    for name, key, raw in sources:
        value, per = _mapping_value(name, key, raw), _MAPPING_RULES[key].per
        if per == "local":
            # Here, not in `_check_mapping_ranges`: two spellings of one local in the
            # host's labels table are a data problem that maps those rows as invalid,
            # not a reason to stop the console.
            _check_locals_unique(name, value)
        changes[key] = _merged(changes.get(key, getattr(profile, key)), value, per)
    return profile.replace(**changes)


def _load_users(secrets: Mapping) -> Mapping[str, User]:
    table = secrets.get("users") or {}
    if not isinstance(table, Mapping):
        raise ConfigError("[users] en secrets.toml debe ser una tabla")
    users = {}
    for username, entry in table.items():
        if not isinstance(entry, Mapping):
            raise ConfigError(f"[users.{username}] debe ser una tabla con role y password_hash")
        role = str(entry.get("role", "")).strip()
        if role not in ROLES:
            raise ConfigError(f"[users.{username}] role debe ser auditor o admin")
        digest = str(entry.get("password_hash", "")).strip()
        email = str(entry.get("email", "")).strip()
        if email and not _EMAIL.fullmatch(email):
            raise ConfigError(f"[users.{username}] email no es una dirección de correo válida")
        # A user who only signs in through the identity provider needs no password.
        if (digest or not email) and not _BCRYPT.fullmatch(digest):
            raise ConfigError(f"[users.{username}] password_hash debe ser un hash bcrypt "
                              "(python -m sync hash-password)")
        users[username] = User(username, str(entry.get("name", username)), role, digest, email)
    return MappingProxyType(users)


_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


def _sso_providers(secrets: Mapping) -> tuple[str, ...]:
    """The providers of st.login configured in [auth]: its named subtables ([auth.google],
    [auth.microsoft]), or "" when [auth] itself holds the provider (client_id)."""
    table = secrets.get("auth")
    if not isinstance(table, Mapping):
        return ()
    named = tuple(sorted(k for k, v in table.items() if isinstance(v, Mapping)))
    return named or (("",) if table.get("client_id") else ())


def load_settings(environ: Mapping[str, str] | None = None,
                  secrets_path: Path | str | None = None) -> Settings:
    """Build the settings; raises ConfigError with one clear message on any problem."""
    environ = os.environ if environ is None else environ
    path = Path(secrets_path or environ.get("OPPEN_SECRETS_FILE") or DEFAULT_SECRETS)
    secrets = read_secrets(path)
    values: dict[str, Any] = {}
    for key, (attr, parse) in _SCALARS.items():
        raw = environ.get(key)
        if raw is None or raw == "":
            raw = secrets.get(key)
        if raw is None or raw == "":
            continue
        values[attr] = parse(key, raw)
    settings = Settings(**values, mapping=_load_mapping(secrets, environ), users=_load_users(secrets),
                        sso_providers=_sso_providers(secrets))
    return validate(settings)


def _url_parts(name: str, url: str):
    """urlsplit, with every way a URL can be malformed turned into one Spanish line.

    The message never repeats the URL: it may carry a password (ftp://u:CLAVE@host) or,
    for a webhook, be the secret itself.
    """
    if _CONTROL.search(url) or " " in url:
        raise ConfigError(f"{name} no es una URL válida (tiene espacios o caracteres de control)")
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
        parts.port  # noqa: B018  (raises ValueError for a port out of range or not a number)
    except ValueError:
        raise ConfigError(f"{name} no es una URL válida (revisá los corchetes de la "
                          "dirección IPv6 y el puerto)") from None
    if parts.scheme not in ("http", "https") or not hostname:
        raise ConfigError(f"{name} debe ser una URL http(s)://host "
                          f"(se recibió el esquema {parts.scheme[:10]!r})" if parts.scheme
                          else f"{name} debe ser una URL http(s)://host")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(f"{name} no debe llevar usuario ni clave en la URL"
                          + (" (usá OPPEN_USERNAME y OPPEN_PASSWORD)"
                             if name == "OPPEN_BASE_URL" else ""))
    return parts


def _check_numbers(settings: Settings) -> None:
    for attr, (name, low, high, unit) in _NUMBER_RANGES.items():
        value = getattr(settings, attr)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name} debe ser un número")
        exclusive = low == 0
        too_low = value <= low if exclusive else value < low
        if not math.isfinite(value) or too_low or value > high:
            lowest = f"mayor que {low}" if exclusive else f"al menos {low}"
            raise ConfigError(f"{name} debe ser {lowest} y como máximo {high:g}"
                              f"{' ' + unit if unit else ''} (se recibió {_shown(value)})")


def validate(settings: Settings) -> Settings:
    """Every setting within a range that makes sense, before anything is sent.

    Called by `load_settings`, and by whoever builds Settings in code.
    """
    if settings.oppen_env not in ENVIRONMENTS:
        raise ConfigError(f"OPPEN_ENV debe ser sandbox, test o production "
                          f"(se recibió {settings.oppen_env[:40]!r})")
    try:
        url = make_url(settings.database_url)
    except Exception:  # ArgumentError, or ValueError for a bad port: never echo the URL
        raise ConfigError("DATABASE_URL no es una URL de base de datos válida "
                          "(p. ej. sqlite:///data/console.sqlite3 o "
                          "mysql+pymysql://usuario:clave@host/base)") from None
    if url.get_backend_name() not in ("sqlite", "mysql", "mariadb"):
        raise ConfigError(f"DATABASE_URL: solo se admiten SQLite y MySQL/MariaDB "
                          f"(se recibió {url.get_backend_name()!r})")
    if not _API_NAME.fullmatch(settings.api or ""):
        raise ConfigError("OPPEN_API debe ser el nombre del proyecto de API: letras, números, "
                          f"'.', '_' o '-', hasta 64 (se recibió {_shown(settings.api)})")
    base_url = settings.base_url or ENVIRONMENTS[settings.oppen_env]
    if base_url:
        parts = _url_parts("OPPEN_BASE_URL", base_url)
        if parts.query or parts.fragment:
            raise ConfigError("OPPEN_BASE_URL no debe tener ?consulta ni #fragmento")
        if parts.scheme != "https" and parts.hostname not in LOOPBACK:
            raise ConfigError("OPPEN_BASE_URL debe usar https:// (sin cifrado solo se admite "
                              "127.0.0.1 o localhost)")
        # The target names where invoices go: a "sandbox" that is really Oppen, or a
        # "test" that is really production, would mark real invoices as sent elsewhere.
        if settings.oppen_env == "sandbox" and parts.hostname not in LOOPBACK:
            raise ConfigError("OPPEN_BASE_URL: con OPPEN_ENV=sandbox la URL debe ser local "
                              "(127.0.0.1 o localhost); para Oppen usá OPPEN_ENV=test o production")
        for env, known in ENVIRONMENTS.items():
            if known and parts.hostname == urlsplit(known).hostname and env != settings.oppen_env:
                raise ConfigError(f"OPPEN_BASE_URL apunta al entorno {env} pero OPPEN_ENV es "
                                  f"{settings.oppen_env}: corregí uno de los dos")
        settings = settings.replace(base_url=base_url.rstrip("/"))
        for name, value in (("OPPEN_USERNAME", settings.username),
                            ("OPPEN_PASSWORD", settings.password)):
            if not value:
                raise ConfigError(f"Falta {name} para el entorno {settings.oppen_env} "
                                  "(en .streamlit/secrets.toml o en el entorno)")
    if settings.webhook_url:
        parts = _url_parts("OPPEN_WEBHOOK_URL", settings.webhook_url)
        # The webhook's path is its secret: it travels encrypted or stays on this machine.
        if parts.scheme != "https" and parts.hostname not in LOOPBACK:
            raise ConfigError("OPPEN_WEBHOOK_URL debe usar https:// (sin cifrado solo se admite "
                              "127.0.0.1 o localhost)")
    _check_numbers(settings)
    if settings.session_secret is not None and len(settings.session_secret) < 32:
        raise ConfigError("OPPEN_SESSION_SECRET debe tener al menos 32 caracteres "
                          "(p. ej. python -c \"import secrets; print(secrets.token_hex(32))\")")
    _check_worker(settings)
    _check_mapping_ranges(settings.mapping)
    return settings


# Each automatic retry waits between 1 second and 7 days; at most 20 steps.
RETRY_DELAY_RANGE = (1, 604_800)
MAX_RETRY_DELAYS = 20
WEBHOOK_FORMATS = ("slack", "json")
PICKUP_YEARS = (2000, 2099)


def _check_worker(settings: Settings) -> None:
    """The worker's settings that are not plain numbers: the schedule, the day, the format."""
    low, high = RETRY_DELAY_RANGE
    delays = settings.retry_delays
    if not isinstance(delays, tuple) or not 1 <= len(delays) <= MAX_RETRY_DELAYS:
        raise ConfigError(f"OPPEN_RETRY_DELAYS debe tener entre 1 y {MAX_RETRY_DELAYS} "
                          "esperas separadas por comas (p. ej. 60,300,900)")
    for delay in delays:
        if isinstance(delay, bool) or not isinstance(delay, (int, float)) \
                or not math.isfinite(delay) or not low <= delay <= high:
            raise ConfigError(f"OPPEN_RETRY_DELAYS: cada espera debe estar entre {low} y "
                              f"{high} segundos (se recibió {_shown(delay)})")
    for name, value, days in (("OPPEN_RETRY_HORIZON", settings.retry_horizon, 365),
                              ("OPPEN_ALERT_STALE_AFTER", settings.alert_stale_after, 30)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or not 1 <= value <= days * 86_400:
            raise ConfigError(f"{name} debe ser al menos 1 y como máximo {days * 86_400} "
                              f"segundos ({days} días; se recibió {_shown(value)})")
    if settings.webhook_format not in WEBHOOK_FORMATS:
        raise ConfigError("OPPEN_WEBHOOK_FORMAT debe ser slack o json "
                          f"(se recibió {_shown(settings.webhook_format)})")
    since = settings.pickup_since
    if since is not None and (not isinstance(since, dt.date)
                              or not PICKUP_YEARS[0] <= since.year <= PICKUP_YEARS[1]):
        raise ConfigError(f"OPPEN_PICKUP_SINCE debe ser una fecha entre {PICKUP_YEARS[0]} y "
                          f"{PICKUP_YEARS[1]} (AAAA-MM-DD; se recibió {_shown(since)})")


def _both(key: str) -> str:
    """A mapping field by both its names: a check on the whole profile does not know
    whether the value came from secrets.toml or from the environment."""
    return f"[mapping] {key} (OPPEN_MAPPING_{key.upper()})"


def _check_mapping_ranges(profile: MappingProfile) -> None:
    """The profile as a whole, however it was built (configuration or code).

    Each field again through its rule (a profile built in code never met the parser),
    then what involves several fields: types named in per-type tables and send_types
    must be types the profile knows.
    """
    for key, rule in _MAPPING_RULES.items():
        name, value = f"[mapping] {key}", getattr(profile, key)
        if rule.kind in ("types", "locals") or rule.per is not None:
            _mapping_value(name, key, list(value) if rule.kind in ("types", "locals")
                           else dict(value))
        else:
            _one_value(name, rule, value)
    known = set(profile.invoice_types)
    for key, rule in _MAPPING_RULES.items():
        if rule.per == "type":
            unknown = sorted(set(getattr(profile, key)) - known)
            if unknown:
                raise ConfigError(f"{_both(key)}: tipo(s) desconocido(s) {', '.join(unknown)} "
                                  f"(los tipos son los de invoice_types: "
                                  f"{', '.join(sorted(known))})")
    missing_art = sorted(known - set(profile.art_codes))
    if missing_art:
        raise ConfigError(f"{_both('art_codes')}: falta el artículo de {', '.join(missing_art)}")
    if not profile.send_types:
        raise ConfigError(f"{_both('send_types')} no puede estar vacío (nombrá los tipos que "
                          "se envían, p. ej. [\"A\", \"B\", \"Z\"])")
    unknown = [t for t in profile.send_types if t not in known]
    if unknown:
        raise ConfigError(f"{_both('send_types')}: tipo(s) desconocido(s) {', '.join(unknown)} "
                          f"(los tipos son los de invoice_types: {', '.join(sorted(known))})")
