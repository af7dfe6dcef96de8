"""Runs in progress, as a page shows them: each run's live progress bar (n of N, the
invoice being sent), then its answer in the seed's words.

Runs are queued by `sync.background` and run by a worker process (sync/worker.py); they
report through their row in `oppen_runs`, which a fragment polls from the script's own
thread (Streamlit does not support st.* calls from other threads). What this session started
is remembered in st.session_state, per page.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping

import sqlalchemy as sa
import streamlit as st

from sync import background
from sync.settings import Settings
from sync.state import read_models
from ui.formats import fmt_date, md
from ui.tables import frame

logger = logging.getLogger("console")

POLL_SECONDS = 0.5


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


def run_label(kind: str, local: str | None = None, fecha: dt.date | None = None,
              count: int | None = None) -> str:
    """'Reenvío de PALERMO · 23/11/2026' (audits say it in their own message: no label)."""
    if kind != "resend":
        return ""
    if local and fecha:
        return f"Reenvío de {local} · {fmt_date(fecha)}"
    return f"Reenvío de {count} factura(s)" if count else "Reenvío de facturas elegidas"


def progress_text(p: Mapping) -> str:
    """'Sincronización de MATRIZ 23/11/2026: 3 de 5 factura(s) · enviando A 0005-00001693'."""
    where = f"{p['local']} {fmt_date(p['fecha'])}" if p.get("local") else "facturas elegidas"
    what = "Reenvío" if p.get("kind") == "resend" else "Sincronización"
    if p.get("queued"):
        return f"{what} de {where}: en cola, esperando al worker…"
    if not p["total"]:
        return f"{what} de {where}: preparando el envío…"
    current = f" · enviando {p['current_ref']}" if p.get("current_ref") else ""
    return f"{what} de {where}: {p['processed']} de {p['total']} factura(s){current}"


def show_response(response: Mapping, level: str | None = None, label: str = "") -> None:
    """A run's answer as the seed words it, in the colour of its case (under `label`)."""
    level = level or background.message_level(response)
    body = (f"**{md(label)}**  \n" if label else "") + md(response.get("msg"))
    {"success": st.success, "warning": st.warning, "info": st.info, "error": st.error}[level](body)
    summary = response.get("oppen_sync") or {}
    errores = summary.get("errores") or []
    if errores:
        with st.expander(f"Ver las {len(errores)} factura(s) que no se enviaron"):
            st.dataframe(frame(errores, {"factura": "Factura", "error": "Error"}),
                         hide_index=True, width="stretch")


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


def keep_worker(engine: sa.engine.Engine, settings: Settings) -> None:
    """Queued runs need a worker: this console starts its own when no other is alive
    (`sync.background.ensure_worker`). A problem here never stops a page."""
    try:
        background.ensure_worker(engine, settings)
    except Exception:  # noqa: BLE001 - the next page view tries again
        logger.warning("No se pudo revisar el worker", exc_info=True)


def _runs(page: str) -> dict:
    return st.session_state.setdefault(f"runs_{page}", {})


def _results(page: str) -> list:
    return st.session_state.setdefault(f"results_{page}", [])
