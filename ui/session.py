"""Who is using the console and against what: the settings, the process's engine and
Oppen client (one of each, cached), the login form, the role gates, and the badge that
shows the Oppen target. Every page starts with `open_page`.

Credentials and roles are checked in `sync.auth`; the database is made ready by
`sync.wiring.prepare_database`. Nothing here reads or writes business data.
"""

from __future__ import annotations

import hashlib
import logging

import sqlalchemy as sa
import streamlit as st

from sync import auth, wiring
from sync.errors import ConfigError, SyncError
from sync.settings import Settings, User, load_settings
from ui.errors import DB_ERROR
from ui import live

logger = logging.getLogger("console")

# The target's colour and what it means (its name is `settings.env_label`).
BADGES = {
    "sandbox": ("#1d4ed8", "las facturas NO llegan a Oppen"),
    "test": ("#c2410c", "las facturas llegan al Oppen de pruebas"),
    "production": ("#b91c1c", "las facturas llegan al Oppen real"),
}


# --- settings, engine, client ------------------------------------------------------------

def load() -> Settings:
    """The settings; a configuration problem is shown in Spanish and stops the page."""
    try:
        return load_settings()
    except ConfigError as exc:
        st.error(f"Error de configuración: {exc.message}")
        st.stop()


class _NotReady(Exception):
    """The database needs something done first (an upgrade); carries the line to show."""


@st.cache_resource(show_spinner="Preparando la base de datos…")
def _engine(database_url: str, _settings: Settings) -> sa.engine.Engine:
    # Once per database per server process. A failure is not cached: the next page view
    # checks again (e.g. once init-db has upgraded the database, or it is back up).
    engine = wiring.open_engine(_settings)
    try:
        problem = wiring.prepare_database(engine, _settings)
        if problem:
            raise _NotReady(problem)
    except BaseException:
        engine.dispose()
        raise
    return engine


def engine(settings: Settings) -> sa.engine.Engine:
    """The process's engine for the configured database, made ready on first use; a
    problem is shown in one Spanish line and stops the page."""
    try:
        return _engine(settings.database_url, settings)
    except _NotReady as exc:
        st.error(str(exc))
    except ConfigError as exc:
        st.error(f"Error de configuración: {exc.message}")
    except sa.exc.SQLAlchemyError:
        logger.exception("No se pudo abrir la base de datos")
        st.error(DB_ERROR)
    st.stop()


@st.cache_resource(show_spinner=False)
def _client(key: str, _settings: Settings):
    return wiring.open_client(_settings)


def client(settings: Settings):
    """The process's Oppen client for this target: its token is reused across runs."""
    secret = hashlib.sha256((settings.password or "").encode()).hexdigest()
    key = "|".join((settings.oppen_env, settings.base_url or "(sandbox integrado)",
                    settings.api, settings.username or "", secret))
    return _client(key, settings)


# --- login and roles -------------------------------------------------------------------------

def current_user(settings: Settings) -> User | None:
    """The session's user as the configuration says now (None: not logged in)."""
    user = st.session_state.get("user")
    fresh = auth.refresh(settings, user) if isinstance(user, User) else None
    if fresh != user:
        if fresh is None:
            st.session_state.pop("user", None)
        else:
            st.session_state["user"] = fresh
    return fresh


def login_form(settings: Settings) -> None:
    st.title("Consola de facturas Oppen")
    env_badge(settings)
    try:
        auth.users_of(settings)
    except ConfigError as exc:
        st.error(f"Error de configuración: {exc.message}")
        return
    st.write("Iniciá sesión para continuar.")
    if auth.demo_mode(settings):
        st.info("Modo demostración: usuarios **auditor** y **admin** (las contraseñas están "
                "en el README).")
    with st.form("login", clear_on_submit=True):
        username = st.text_input("Usuario")
        password = st.text_input("Contraseña", type="password")
        submitted = st.form_submit_button("Ingresar", type="primary")
    if submitted:
        try:
            user = auth.authenticate(settings, username, password)
        except SyncError as exc:
            st.error(exc.message)
            return
        logger.info("Inicio de sesión de %s (%s)", user.username, user.role)
        st.session_state["user"] = user
        st.rerun()


def require_user(settings: Settings, role: str = "auditor") -> User:
    """The logged-in user with `role`; otherwise the login prompt (or a refusal) and stop."""
    user = current_user(settings)
    if user is None:
        login_form(settings)
        st.stop()
    if not auth.has_role(user, role):
        st.error("Esta página es solo para administradores." if role == "admin"
                 else "No tenés permiso para ver esta página.")
        st.stop()
    return user


def open_page(role: str, title: str, caption: str | None = None
              ) -> tuple[Settings, User, sa.engine.Engine]:
    """What every page starts with: settings, the logged-in user of at least `role`
    (or the login prompt and a stop), the engine, and the page's heading."""
    settings = load()
    user = require_user(settings, role)
    engine_ = engine(settings)
    live.keep_worker(engine_, settings)   # queued runs need a worker: this console's, if none
    st.title(title)
    if caption:
        st.caption(caption)
    return settings, user, engine_


def logout() -> None:
    for key in list(st.session_state.keys()):
        del st.session_state[key]


# --- the Oppen target ------------------------------------------------------------------------

def env_badge(settings: Settings) -> None:
    """The target in a colour that cannot be missed (sidebar and login)."""
    color, text = BADGES[settings.oppen_env]
    label = settings.env_label
    st.markdown(
        f'<div data-testid="oppen-target" style="background:{color};color:#fff;'
        f'border-radius:10px;padding:0.6rem 0.8rem;text-align:center;margin-bottom:0.5rem">'
        f'<div style="font-size:1.35rem;font-weight:800;letter-spacing:0.06em">{label}</div>'
        f'<div style="font-size:0.85rem;font-weight:600">{text}</div></div>',
        unsafe_allow_html=True)


def target_text(settings: Settings) -> str:
    """'SANDBOX (las facturas NO llegan a Oppen)': where actions send, in a sentence."""
    color, text = BADGES[settings.oppen_env]
    return f"{settings.env_label} ({text})"
