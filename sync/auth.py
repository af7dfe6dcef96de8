"""Who may use the console, and what each role may do.

Users come from `[users.<name>]` in `.streamlit/secrets.toml` (`name`, `role` =
auditor|admin, `password_hash` = bcrypt, made with `python -m sync hash-password`).
With no users configured and the sandbox as target, two demo users exist (their
passwords are in the README, never here: only their bcrypt hashes). Demo users are
refused for the test and production targets.

Roles are checked where actions run (`require_role`), not only by hiding pages.
No Streamlit here, no plain password anywhere, and no hand-made crypto: bcrypt only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import bcrypt

from .settings import ROLES, Settings, User
from .errors import ConfigError, LoginFailed, PermissionDenied, SyncError  # noqa: F401

# bcrypt hashes of the demo passwords documented in the README (cost 12).
DEMO_USERS: Mapping[str, User] = {
    "auditor": User("auditor", "Auditor de demostración", "auditor",
                    "$2b$12$yRVWopTEKhDEKUO.9S6mIul2F39MggM6eFiwEFBNjBhuDOvB5NCSC"),
    "admin": User("admin", "Administrador de demostración", "admin",
                  "$2b$12$RoIPGzQE4Xz7h23ACjEHp.cT4CnlcbYmjBpQZJwKwCDQDs2juKalS"),
}
# Checked against when the user does not exist, so a wrong user name costs as much
# time as a wrong password (no way to tell which names exist by timing).
_DUMMY_HASH = b"$2b$12$GLWH4DgxkSHUvlwGh/jMVurlTsIeN3MhsAzn.AxuaZSvPmamX8azu"
ROLE_LABELS = {"auditor": "Auditor", "admin": "Administrador"}
MAX_PASSWORD_BYTES = 72  # bcrypt's limit; longer input is refused, not silently cut


def demo_mode(settings: Settings) -> bool:
    """True when the demo users are the ones in force."""
    return not settings.users and settings.oppen_env == "sandbox"


def users_of(settings: Settings) -> Mapping[str, User]:
    """The users who may log in; raises ConfigError when there are none for this target."""
    if settings.users:
        return settings.users
    if settings.oppen_env == "sandbox":
        return DEMO_USERS
    raise ConfigError(
        f"No hay usuarios configurados para el entorno {settings.env_label}. Los usuarios de "
        "demostración solo funcionan con el sandbox: agregá una sección [users.<nombre>] "
        "(name, role, password_hash) en .streamlit/secrets.toml; el hash se genera con "
        "python -m sync hash-password")


def public(user: User) -> User:
    """The user without its password hash: what the session keeps."""
    return dataclasses.replace(user, password_hash="")


def authenticate(settings: Settings, username: str, password: str) -> User:
    """The user (without its hash) if the password matches; raises LoginFailed otherwise."""
    users = users_of(settings)
    user = users.get((username or "").strip())
    secret = (password or "").encode("utf-8")
    if len(secret) > MAX_PASSWORD_BYTES:
        raise LoginFailed("Usuario o contraseña incorrectos")
    digest = user.password_hash.encode("ascii") if user else _DUMMY_HASH
    try:
        ok = bcrypt.checkpw(secret, digest)
    except ValueError:  # a malformed hash in the configuration
        ok = False
    if user is None or not ok or not secret:
        raise LoginFailed("Usuario o contraseña incorrectos")
    return public(user)


def refresh(settings: Settings, user: User | None) -> User | None:
    """The session's user as the configuration says now (role changes apply at once);
    None when that user no longer exists for this target."""
    if user is None:
        return None
    try:
        current = users_of(settings).get(user.username)
    except ConfigError:
        return None
    if current is None:
        return None
    return public(current)


def has_role(user: User | None, role: str) -> bool:
    """Admin can do everything an auditor can."""
    if user is None or role not in ROLES or user.role not in ROLES:
        return False
    return user.role == "admin" or user.role == role


def require_role(user: User | None, role: str, action: str = "hacer esto") -> User:
    """The user, if their role allows `action`; raises PermissionDenied otherwise."""
    if user is None:
        raise PermissionDenied("Tenés que iniciar sesión")
    if not has_role(user, role):
        raise PermissionDenied(f"No tenés permiso para {action}: hace falta el rol "
                               f"{ROLE_LABELS.get(role, role)}")
    return user
