"""What every page of the console shares: settings, the cached engine and Oppen client,
the login gate, the Oppen target badge, messages, error handling and the live progress
of runs. Not a page: run on its own it only says so.

Business logic never lives here: it is in `sync` (queries, jobs, auth, service).
Streamlit calls happen only in the script's own thread; background runs report
through their row in `oppen_runs`, which the progress fragment reads.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any

import pandas as pd
import sqlalchemy as sa
import streamlit as st

from sync import auth, background, demo, wiring

from sync.state import read_models, schema
from sync.settings import DEFAULT_DATABASE_URL, Settings, User, load_settings
from sync.errors import ConfigError, SyncError

logger = logging.getLogger("console")

GENERIC_ERROR = ("Ocurrió un error inesperado. Quedó registrado en el log del servidor; "
                 "si se repite, avisá al equipo de sistemas.")
DB_ERROR = ("No se pudo usar la base de datos. Revisá DATABASE_URL y que el servidor de base "
            "de datos esté disponible.")
STATE_LABELS = {"pending": "Pendiente", "sending": "Enviando", "sent": "Enviada",
                "failed": "Fallida", "invalid": "Inválida", "conflict": "Conflicto"}
BADGES = {
    "sandbox": ("#1d4ed8", "SANDBOX", "las facturas NO llegan a Oppen"),
    "test": ("#c2410c", "PRUEBAS", "las facturas llegan al Oppen de pruebas"),
    "production": ("#b91c1c", "PRODUCCIÓN", "las facturas llegan al Oppen real"),
}
POLL_SECONDS = 0.5


# --- settings, engine, client ------------------------------------------------------------

def load() -> Settings:
    """The settings; a configuration problem is shown in Spanish and stops the page."""
    try:
        return load_settings()
    except ConfigError as exc:
        st.error(f"Error de configuración: {exc.message}")
        st.stop()


def demo_wanted(settings: Settings) -> bool:
    """Demo data goes into an empty database only for the project's default file, or
    when OPPEN_DEMO_DATA=1 asks for it (used by the newcomer test on a temp file)."""
    return (settings.database_url == DEFAULT_DATABASE_URL
            or os.environ.get("OPPEN_DEMO_DATA", "").strip() == "1")


@st.cache_resource(show_spinner="Preparando la base de datos…")
def _engine(database_url: str, demo_data: bool, _settings: Settings) -> sa.engine.Engine:
    engine = wiring.open_engine(_settings)
    schema.init_db(engine, source_tables=True if demo_data else None)
    missing = schema.check_schema(engine)
    if missing:
        raise ConfigError(f"Faltan tablas en la base ({', '.join(missing)}): revisá DATABASE_URL "
                          "o ejecutá python -m sync init-db")
    if demo_data and demo.is_empty(engine):
        result = demo.load_demo(engine, today=read_models.local_today())
        logger.info("Datos de demostración cargados: %s", result)
    return engine


def engine(settings: Settings) -> sa.engine.Engine:
    """One engine per database per server process (tables created on first use)."""
    try:
        return _engine(settings.database_url, demo_wanted(settings), settings)
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


# --- login ---------------------------------------------------------------------------------

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


def open_page(role: str, title: str, caption: str | None = None
              ) -> tuple[Settings, User, sa.engine.Engine]:
    """What every page starts with: settings, the logged-in user of at least `role`
    (or the login prompt and a stop), the engine, and the page's heading."""
    settings = load()
    user = require_user(settings, role)
    engine_ = engine(settings)
    st.title(title)
    if caption:
        st.caption(caption)
    return settings, user, engine_


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


def logout() -> None:
    for key in list(st.session_state.keys()):
        del st.session_state[key]


# --- chrome ----------------------------------------------------------------------------------

def env_badge(settings: Settings) -> None:
    color, label, text = BADGES[settings.oppen_env]
    st.markdown(
        f'<div data-testid="oppen-target" style="background:{color};color:#fff;'
        f'border-radius:10px;padding:0.6rem 0.8rem;text-align:center;margin-bottom:0.5rem">'
        f'<div style="font-size:1.35rem;font-weight:800;letter-spacing:0.06em">{label}</div>'
        f'<div style="font-size:0.85rem;font-weight:600">{text}</div></div>',
        unsafe_allow_html=True)


_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>~|$#])")


def md(text: str | None) -> str:
    """Text shown literally in markdown (Oppen's words may contain * _ $ …), newlines kept."""
    escaped = _MD_SPECIAL.sub(r"\\\1", text or "")
    return escaped.replace("\n", "  \n")


def show_response(response: Mapping, level: str | None = None, label: str = "") -> None:
    """A run's answer as the seed words it, in the colour of its case (under `label`)."""
    level = level or background.message_level(response)
    body = (f"**{md(label)}**  \n" if label else "") + md(response.get("msg"))
    {"success": st.success, "warning": st.warning, "info": st.info, "error": st.error}[level](body)
    summary = response.get("oppen_sync") or {}
    errores = summary.get("errores") or []
    if errores:
        with st.expander(f"Ver las {len(errores)} factura(s) que no se enviaron"):
            st.dataframe(pd.DataFrame(errores).rename(columns={"factura": "Factura",
                                                               "error": "Error"}),
                         hide_index=True, width="stretch")


def action(fn: Callable[[], Any]) -> Any:
    """Run a person's action: a SyncError shows its message, anything else a generic one."""
    try:
        return fn()
    except SyncError as exc:
        st.error(md(exc.message))
    except sa.exc.SQLAlchemyError:
        logger.exception("Error de base de datos en una acción de la consola")
        st.error(DB_ERROR)
    except Exception:  # noqa: BLE001 - never a traceback on screen
        logger.exception("Error inesperado en una acción de la consola")
        st.error(GENERIC_ERROR)
    return None


@contextlib.contextmanager
def guarded() -> Iterator[None]:
    """Wrap a page's body: errors become one Spanish message (st.stop/rerun pass through)."""
    try:
        yield
    except SyncError as exc:
        st.error(md(exc.message))
    except sa.exc.SQLAlchemyError:
        logger.exception("Error de base de datos en la consola")
        st.error(DB_ERROR)
    except Exception:  # noqa: BLE001
        logger.exception("Error inesperado en la consola")
        st.error(GENERIC_ERROR)


# --- tables -----------------------------------------------------------------------------------

def pesos(value) -> str:
    """'$ 98.000,00': an amount as people in Argentina write it."""
    amount = Decimal(0) if value is None else Decimal(str(value))
    text = f"{amount:,.2f}".replace(",", "·").replace(".", ",").replace("·", ".")
    return f"$ {text}"


def pesos_or_text(value) -> str:
    """An amount as pesos, or the raw value when it is not a number (invalid rows)."""
    try:
        return pesos(value)
    except (ArithmeticError, ValueError, TypeError):
        return "" if value is None else str(value)


def money(value) -> float | None:
    return None if value is None else float(Decimal(str(value)))


def local_dt(value: dt.datetime | None) -> dt.datetime | None:
    """For a DatetimeColumn: the Argentina wall-clock time, naive."""
    local = read_models.to_local(value)
    return local.replace(tzinfo=None) if local else None


def frame(rows: Sequence[Mapping], columns: Mapping[str, str]) -> pd.DataFrame:
    """Rows as a DataFrame with only `columns` (key → Spanish title), in that order."""
    # An empty text cell reads better than "None" to the people using the console.
    text_keys = [key for key in columns
                 if all(row.get(key) is None or isinstance(row.get(key), str) for row in rows)]
    data = [{title: ("" if key in text_keys and row.get(key) is None else row.get(key))
             for key, title in columns.items()} for row in rows]
    return pd.DataFrame(data, columns=list(columns.values()))


def count_columns(*titles: str) -> dict:
    """Narrow integer columns, so a table of counts fits without scrolling sideways."""
    return {t: st.column_config.NumberColumn(t, format="plain", width="small") for t in titles}


def money_column(title: str):
    return st.column_config.NumberColumn(title, format="localized")


def date_column(title: str):
    return st.column_config.DateColumn(title, format="DD/MM/YYYY")


def datetime_column(title: str):
    return st.column_config.DatetimeColumn(title, format="DD/MM/YYYY HH:mm")


# --- runs in progress ---------------------------------------------------------------------------

def track(page: str, started: background.Started, label: str = "") -> None:
    """Remember a run this session started, to show its progress and then its answer
    (under `label`, when the answer does not say what it is about)."""
    if started.finished:
        _results(page).insert(0, {"label": label, "response": started.response})
    elif started.run_id is not None:
        _runs(page)[started.run_id] = label
    else:
        st.session_state.setdefault(f"starting_{page}", []).append(label)


def note(page: str, text: str, level: str = "success") -> None:
    """A message that stays on the page across the rerun that refreshes its tables."""
    _results(page).insert(0, {"label": "", "response": {"success": True, "msg": text},
                              "level": level})


def _runs(page: str) -> dict:
    return st.session_state.setdefault(f"runs_{page}", {})


def _results(page: str) -> list:
    return st.session_state.setdefault(f"results_{page}", [])


def run_label(kind: str, local: str | None = None, fecha: dt.date | None = None,
              count: int | None = None) -> str:
    """'Reenvío de PALERMO · 23/11/2026' (audits say it in their own message: no label)."""
    if kind != "resend":
        return ""
    if local and fecha:
        return f"Reenvío de {local} · {read_models.fmt_date(fecha)}"
    return f"Reenvío de {count} factura(s)" if count else "Reenvío de facturas elegidas"


def progress_text(p: Mapping) -> str:
    where = (f"{p['local']} {read_models.fmt_date(p['fecha'])}" if p.get("local")
             else "facturas elegidas")
    what = "Reenvío" if p.get("kind") == "resend" else "Sincronización"
    if not p["total"]:
        return f"{what} de {where}: preparando el envío…"
    current = f" · enviando {p['current_ref']}" if p.get("current_ref") else ""
    return f"{what} de {where}: {p['processed']} de {p['total']} factura(s){current}"


@st.fragment(run_every=POLL_SECONDS)
def _progress(engine: sa.engine.Engine, settings: Settings, run_ids: tuple[int, ...]) -> None:
    finished = False
    for run_id in run_ids:
        try:
            p = background.progress_of(engine, run_id)
            done = p is None or background.result_of(engine, settings, run_id) is not None
        except sa.exc.SQLAlchemyError:
            # A hiccup of the database: the next tick tries again.
            logger.warning("No se pudo leer el avance de la sincronización %s", run_id)
            st.caption("Leyendo el avance…")
            continue
        if done:
            finished = True
            continue
        st.progress(p["fraction"], text=progress_text(p))
    if finished:
        st.rerun()  # the whole page: tables refresh and the answer shows


def live_section(engine: sa.engine.Engine, settings: Settings, page: str, *,
                 kind: str | None = None, fecha: dt.date | None = None) -> int:
    """This session's finished answers, then a live progress bar for every run going on
    (started here or by anyone, even before a reload: they are read from the database).

    Returns how many of this session's runs ended since the last run of the page."""
    mine = _runs(page)
    ended = 0
    for run_id, label in list(mine.items()):
        response = background.result_of(engine, settings, run_id)
        if response is not None:
            del mine[run_id]
            ended += 1
            _results(page).insert(0, {"label": label, "response": response})
    results = _results(page)
    del results[5:]
    for item in results:
        show_response(item["response"], item.get("level"), item.get("label", ""))
    if results and st.button("Ocultar mensajes", key=f"clear_{page}"):
        results.clear()
        st.rerun()
    for run in read_models.live_runs(engine, settings, kind=kind, fecha=fecha):
        # Watched from now on: when it ends, its answer shows here too (e.g. after a reload).
        mine.setdefault(run["id"], run_label(run["kind"], run["local"], run["fecha"]))
    run_ids = tuple(mine)
    if run_ids:
        _progress(engine, settings, run_ids)
    elif st.session_state.pop(f"starting_{page}", None):
        st.info("La sincronización se está iniciando; actualizá la página en unos segundos.")
    return ended


if __name__ == "__main__":
    st.info("Este archivo no es una página de la consola: abrila con "
            "`streamlit run console.py`.")
