"""Settings for the console and the CLI, read once from one place.

Source order: built-in defaults < `.streamlit/secrets.toml` < environment variables.
Every problem raises `ConfigError` naming the setting; no credential has a default
here, and `Settings.__repr__` never shows the password.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
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
from .mapping import PROFILES, MappingProfile

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
    mapping: MappingProfile = MappingProfile()
    users: Mapping[str, User] = field(default_factory=lambda: MappingProxyType({}), repr=False)

    @property
    def target(self) -> str:
        """Which Oppen the sync state belongs to: sent to the sandbox is not sent to production."""
        return f"{self.oppen_env}/{self.api}"

    @property
    def safe_database_url(self) -> str:
        return make_url(self.database_url).render_as_string(hide_password=True)

    @property
    def env_label(self) -> str:
        return ENV_LABELS[self.oppen_env]

    @property
    def embedded_sandbox(self) -> bool:
        return self.oppen_env == "sandbox" and self.base_url is None

    def replace(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **changes)


# Environment variable / secrets key -> (Settings field, parser)
def _positive_float(name: str, raw: Any) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} debe ser un número mayor que 0 (se recibió {str(raw)[:40]!r})")
    if not value > 0 or value == float("inf"):
        raise ConfigError(f"{name} debe ser un número mayor que 0 (se recibió {str(raw)[:40]!r})")
    return value


def _positive_int(name: str, raw: Any) -> int:
    try:
        value = int(str(raw).strip())
    except (TypeError, ValueError):
        raise ConfigError(f"{name} debe ser un entero mayor que 0 (se recibió {str(raw)[:40]!r})")
    if value < 1:
        raise ConfigError(f"{name} debe ser un entero mayor que 0 (se recibió {value})")
    return value


def _text(name: str, raw: Any) -> str:
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
}


def read_secrets(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except (tomllib.TOMLDecodeError, OSError) as exc:
        raise ConfigError(f"No se pudo leer {path}: {exc}") from None


def _mapping_value(name: str, current: Any, raw: Any) -> Any:
    """Parse one mapping override to the type of the profile field it replaces."""
    if isinstance(current, Mapping):
        if isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except json.JSONDecodeError:
                raise ConfigError(f"{name} debe ser un objeto JSON (p. ej. {{\"A\": \"001\"}})")
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{name} debe ser una tabla clave = valor")
        by_type = not name.lower().endswith("by_local")
        as_int = name.lower().endswith(("invoice_types", "doc_types"))
        try:
            return MappingProxyType({
                (str(k).strip().upper() if by_type else str(k)): (int(v) if as_int else str(v))
                for k, v in raw.items()})
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: los valores deben ser enteros") from None
    if isinstance(current, bool):
        text = str(raw).strip().lower()
        if text in ("1", "true", "si", "sí", "yes"):
            return True
        if text in ("0", "false", "no"):
            return False
        raise ConfigError(f"{name} debe ser true o false (se recibió {str(raw)[:40]!r})")
    if isinstance(current, int):
        try:
            return int(str(raw).strip())
        except ValueError:
            raise ConfigError(f"{name} debe ser un entero (se recibió {str(raw)[:40]!r})")
    if isinstance(current, Decimal):
        try:
            return Decimal(str(raw).strip())
        except InvalidOperation:
            raise ConfigError(f"{name} debe ser un número (se recibió {str(raw)[:40]!r})")
    return str(raw)


def _merged(profile: MappingProfile, key: str, value: Any) -> Any:
    """A table given in the configuration changes only the keys it names: setting
    art_codes for A alone must not leave B, Z and CC without one."""
    current = getattr(profile, key)
    if isinstance(current, Mapping) and isinstance(value, Mapping):
        return MappingProxyType({**current, **value})
    return value


_MAPPING_FIELDS = {f.name for f in dataclasses.fields(MappingProfile)} - {"name"}


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
    for key, raw in table.items():
        if key == "profile":
            continue
        if key not in _MAPPING_FIELDS:
            raise ConfigError(f"[mapping] {key}: no es un ajuste del mapeo "
                              f"(válidos: {', '.join(sorted(_MAPPING_FIELDS))})")
        changes[key] = _merged(profile, key, _mapping_value(f"[mapping] {key}",
                                                            getattr(profile, key), raw))
    for key in _MAPPING_FIELDS:
        env_name = f"OPPEN_MAPPING_{key.upper()}"
        if env_name in environ:
            changes[key] = _merged(profile, key, _mapping_value(env_name, getattr(profile, key),
                                                                environ[env_name]))
    profile = profile.replace(**changes)
    if profile.sernr_mode not in ("client", "server"):
        raise ConfigError("sernr_mode debe ser 'client' o 'server'")
    if not 1 <= profile.pos_width <= 8 or not 1 <= profile.number_width <= 12:
        raise ConfigError("pos_width debe estar entre 1 y 8 y number_width entre 1 y 12")
    if "{local}" not in profile.label_format and profile.label_format:
        raise ConfigError("label_format debe contener {local} (o estar vacío para usar labels_by_local)")
    return profile


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
        if not _BCRYPT.fullmatch(digest):
            raise ConfigError(f"[users.{username}] password_hash debe ser un hash bcrypt "
                              "(python -m sync hash-password)")
        users[username] = User(username, str(entry.get("name", username)), role, digest)
    return MappingProxyType(users)


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
    settings = Settings(**values, mapping=_load_mapping(secrets, environ), users=_load_users(secrets))
    return validate(settings)


def validate(settings: Settings) -> Settings:
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
    base_url = settings.base_url or ENVIRONMENTS[settings.oppen_env]
    if base_url:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"OPPEN_BASE_URL debe ser una URL http(s) (se recibió {base_url[:80]!r})")
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
        parts = urlsplit(settings.webhook_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError("OPPEN_WEBHOOK_URL debe ser una URL http(s)")
    if settings.max_attempts > 20:
        raise ConfigError("OPPEN_MAX_ATTEMPTS no puede ser mayor que 20")
    if settings.concurrency > 64:
        raise ConfigError("OPPEN_CONCURRENCY no puede ser mayor que 64")
    if settings.lease_seconds < 1:
        raise ConfigError("OPPEN_LEASE_SECONDS debe ser al menos 1")
    _check_mapping_ranges(settings.mapping)
    return settings


def _check_mapping_ranges(profile: MappingProfile) -> None:
    if not (profile.vat_rate.is_finite() and 0 <= profile.vat_rate < 1):
        raise ConfigError("[mapping] vat_rate debe estar entre 0 y 1 (p. ej. 0.21)")
    if profile.qty < 1:
        raise ConfigError("[mapping] qty debe ser al menos 1")
    if profile.payment_days < 0:
        raise ConfigError("[mapping] payment_days no puede ser negativo")
    if profile.sernr_base < 1:
        raise ConfigError("[mapping] sernr_base debe ser mayor que 0")
