"""Who is using the console and against what: the settings, the process's engine and
Oppen client (one of each, cached), the login form, the role gates, and the badge that
shows the Oppen target. Every page starts with `open_page`.

Credentials and roles are checked in `sync.auth`; the database is made ready by
`sync.wiring.prepare_database`. Nothing here reads or writes business data.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading

import sqlalchemy as sa
import streamlit as st

from sync import auth, logins, wiring
from sync.errors import ConfigError, SyncError
from sync.settings import Settings, User, load_settings
from ui import browser, formats
from ui.errors import DB_ERROR
from ui import live

logger = logging.getLogger("console")

# Up to this width Streamlit starts with its sidebar closed and lays it over the page.
PHONE_MAX_WIDTH = browser.PHONE_MAX_WIDTH

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

def one_entrance(*, router: bool = False) -> None:
    """Every script run goes through the router (console.py). A fresh server process
    still treats a `pages/` folder as Streamlit's old multipage mode until some session
    runs st.navigation: a first visit straight to /vista_previa would run that page
    alone, without the login or the sidebar. Here that run turns the old mode off and
    starts again through the router (the address, and so the page asked for, is kept)."""
    from streamlit.runtime.pages_manager import PagesManager

    if not getattr(PagesManager, "uses_pages_directory", False):
        return
    PagesManager.uses_pages_directory = False
    if router:
        return   # the router itself is running: it goes on and routes
    if not getattr(_ROUTER, "on", False):
        st.rerun()   # a page run alone: start again, through the router


class _Router(threading.local):
    on = False


_ROUTER = _Router()


@contextlib.contextmanager
def routed():
    """The router runs the chosen page inside this: pages know they were routed."""
    _ROUTER.on = True
    try:
        yield
    finally:
        _ROUTER.on = False


def current_user(settings: Settings) -> User | None:
    """The session's user as the configuration says now (None: not logged in). A new
    browser session (a reload, another tab) picks up a live signed session from its
    cookie, or a single sign-on identity that has a role in [users]."""
    user = st.session_state.get("user")
    if not isinstance(user, User):
        user = _resume(settings)
    fresh = auth.refresh(settings, user) if isinstance(user, User) else None
    if fresh != user:
        if fresh is None:
            st.session_state.pop("user", None)
        else:
            st.session_state["user"] = fresh
    return fresh


def _resume(settings: Settings) -> User | None:
    if st.session_state.get("logged_out"):
        return None
    token = browser.session_cookie()
    if token and not st.session_state.get("cookie_refused"):
        resumed = logins.resume(engine(settings), settings, token)
        if resumed is not None:
            st.session_state.update(user=resumed[0], token=token, login_method=resumed[1])
            logger.info("Sesión retomada de %s", resumed[0].username)
            return resumed[0]
        st.session_state["cookie_refused"] = True   # old, ended or forged: delete it
    return _sso_user(settings)


def _sso_identity() -> str | None:
    try:
        if st.user.is_logged_in:
            return st.user.get("email")
    except Exception:  # noqa: BLE001 - [auth] not configured: no single sign-on
        return None
    return None


def _sso_user(settings: Settings) -> User | None:
    if not settings.sso_providers:
        return None
    email = _sso_identity()
    if not email:
        return None
    user = logins.sso_user(settings, email)
    client = browser.client_address()
    if user is None:
        if not st.session_state.get("sso_refused_logged"):
            logins.record(engine(settings), email, client, logins.FAILED, method=logins.SSO,
                          detail="email sin usuario en [users]")
            st.session_state["sso_refused_logged"] = True
        st.session_state["sso_refused"] = email
        return None
    logins.record(engine(settings), user.username, client, logins.OK, method=logins.SSO)
    token = logins.open_session(engine(settings), settings, user, client, method=logins.SSO)
    st.session_state.update(user=user, token=token, login_method=logins.SSO)
    return user


def keep_in_browser(settings: Settings) -> None:
    """Every run: Spanish widgets, and the session cookie written (logged in) or
    deleted (after logging out, or when the browser held a token that is no good)."""
    token = st.session_state.get("token")
    if token:
        browser.sync_browser(token, int(logins.lifetime(settings).total_seconds()), write=True)
    elif st.session_state.get("logged_out") or st.session_state.get("cookie_refused"):
        browser.sync_browser(None, 0, write=True)
    else:
        browser.sync_browser(None, 0, write=False)


def login_form(settings: Settings) -> None:
    st.title("Consola de facturas Oppen")
    env_badge(settings)
    try:
        auth.users_of(settings)
    except ConfigError as exc:
        st.error(f"Error de configuración: {exc.message}")
        return
    st.write("Iniciá sesión para continuar.")
    refused = st.session_state.get("sso_refused")
    if refused:
        st.error("La cuenta " + formats.md(refused) + " no tiene acceso a esta consola: pedile "
                 "a un administrador que la agregue (con su rol) en [users].")
    for provider in settings.sso_providers:
        label = SSO_LABELS.get(provider, provider.capitalize() if provider else "la cuenta de la empresa")
        if st.button(f"Ingresar con {label}", key=f"sso_{provider or 'default'}",
                     icon=":material/login:"):
            st.session_state.pop("logged_out", None)
            st.login(provider) if provider else st.login()
    if auth.demo_mode(settings):
        st.info("Modo demostración: usuarios **auditor** y **admin** (las contraseñas están "
                "en el README).")
    with st.form("login", clear_on_submit=True):
        username = st.text_input("Usuario")
        password = st.text_input("Contraseña", type="password")
        submitted = st.form_submit_button("Ingresar", type="primary")
    if submitted:
        db = engine(settings)
        client = browser.client_address()
        try:
            user = logins.log_in(db, settings, username, password, client)
            token = logins.open_session(db, settings, user, client)
        except SyncError as exc:
            st.error(exc.message)
            return
        except sa.exc.SQLAlchemyError:
            logger.exception("No se pudo registrar el ingreso")
            st.error(DB_ERROR)
            return
        for key in ("logged_out", "cookie_refused", "sso_refused"):
            st.session_state.pop(key, None)
        st.session_state.update(user=user, token=token, login_method=logins.PASSWORD)
        st.rerun()


SSO_LABELS = {"google": "Google", "microsoft": "Microsoft", "entra": "Microsoft"}


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
    one_entrance()
    settings = load()
    user = require_user(settings, role)
    engine_ = engine(settings)
    live.keep_worker(engine_, settings)   # queued runs need a worker: this console's, if none
    st.title(title)
    if caption:
        st.caption(caption)
    return settings, user, engine_


def logout(settings: Settings) -> None:
    """End the session for good: the server forgets its token (every tab, every copy),
    the browser's cookie is deleted, and a single sign-on identity is logged out too."""
    token = st.session_state.get("token")
    method = st.session_state.get("login_method")
    if token:
        try:
            logins.end_session(engine(settings), settings, token)
        except sa.exc.SQLAlchemyError:
            logger.exception("No se pudo cerrar la sesión en la base de datos")
    for key in list(st.session_state.keys()):
        del st.session_state[key]
    st.session_state["logged_out"] = True
    if method == logins.SSO:
        st.logout()


# --- the Oppen target ------------------------------------------------------------------------

def env_badge(settings: Settings, *, phone_only: bool = False) -> None:
    """The target in a colour that cannot be missed (sidebar and login). `phone_only`:
    the copy at the top of every page, shown whenever the sidebar is closed: on a phone
    or a tablet (Streamlit closes it up to 768 px wide) and when someone closes it on a
    wide screen. (Our own constant HTML: no text from the database goes in it.)"""
    color, text = BADGES[settings.oppen_env]
    label = settings.env_label
    css = ""
    klass = "oppen-target"
    if phone_only:
        klass = "oppen-target-phone"
        # The media query alone covers every narrow screen; :has() also covers a sidebar
        # closed by hand (Streamlit marks it data-collapsed).
        css = ("<style>.oppen-target-phone{display:none}"
               f"@media (max-width: {PHONE_MAX_WIDTH}px){{.oppen-target-phone{{display:block}}}}"
               '.stApp:has([data-testid="stSidebar"][data-collapsed="true"]) '
               ".oppen-target-phone{display:block}</style>")
    st.markdown(
        f'{css}<div class="{klass}" data-testid="{klass}" style="background:{color};color:#fff;'
        f'border-radius:10px;padding:0.6rem 0.8rem;text-align:center;margin-bottom:0.5rem">'
        f'<div style="font-size:1.35rem;font-weight:800;letter-spacing:0.06em">{label}</div>'
        f'<div style="font-size:0.85rem;font-weight:600">{text}</div></div>',
        unsafe_allow_html=True)


def target_text(settings: Settings) -> str:
    """'SANDBOX (las facturas NO llegan a Oppen)': where actions send, in a sentence."""
    color, text = BADGES[settings.oppen_env]
    return f"{settings.env_label} ({text})"


def page_link(where, page: str, label: str, query_params: dict | None = None,
              icon: str | None = None) -> None:
    """A link to another page of the console (with its URL parameters); a page run on
    its own (tests) has no router to link through, and shows the label alone."""
    from streamlit.errors import StreamlitAPIException

    try:
        where.page_link(page, label=label, query_params=query_params, icon=icon)
    except StreamlitAPIException:
        where.caption(label)
