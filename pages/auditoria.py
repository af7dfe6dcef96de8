"""Auditoría: pick a day, see its locals, mark one audited and watch its invoices reach
Oppen (the run goes on in the background; the progress bar reads its saved state).

The day and the local live in the URL (?fecha=2026-11-24&local=MATRIZ), so a reload or a
shared link opens the same view; a run in progress for any day is announced at the top.
"Marcar auditado" is disabled, with the reason, when a validation would refuse it, and
asks for confirmation showing what will be sent where."""

import datetime as dt

import streamlit as st

from sync import actions, background
from sync.errors import SyncError
from sync.state import read_models
from ui import errors, formats, live, session, tables

PAGE = "auditoria"

settings, user, engine = session.open_page(
    "auditor", "Auditoría",
    "Elegí el día y el local. Al marcarlo como auditado, sus facturas se envían a "
    "Oppen y acá ves el avance y el resultado.")

today = read_models.local_today()
fecha = st.date_input("Día", value=today - dt.timedelta(days=1), max_value=today,
                      format="DD/MM/YYYY", key="fecha", bind="query-params")


@st.dialog("Confirmar: marcar auditado")
def confirm(local: str, fecha: dt.date, row: dict) -> None:
    st.markdown(f"**Local:** {formats.md(local)}  \n**Día:** {formats.fmt_date(fecha)}  \n"
                f"**Facturas:** {formats.integer(row['facturas'])} · "
                f"**Monto total:** {formats.pesos(row['monto'])}  \n"
                f"**Destino:** {session.target_text(settings)}")
    st.warning("Marcar auditado no se puede deshacer: el local queda auditado y sus facturas "
               "se envían a Oppen.")
    c1, c2 = st.columns(2)
    if c1.button("Sí, marcar auditado y enviar", type="primary", key="confirmar_auditado"):
        started = errors.action(lambda: background.start_audit(
            engine, settings, user=user, local=local, fecha=fecha,
            client=session.client(settings)))
        if started is not None:
            live.track(PAGE, started)
        st.session_state.pop("confirmar", None)
        st.rerun()
    if c2.button("Cancelar", key="cancelar_auditado"):
        st.session_state.pop("confirmar", None)
        st.rerun()


with errors.guarded():
    others = [r for r in read_models.live_runs(engine, settings) if r["fecha"] != fecha]
    for run in others:
        where = f"{run['local']} del {formats.fmt_date(run['fecha'])}" if run["local"] else \
            "facturas elegidas"
        st.info(f"Hay una sincronización en curso de {formats.md(where)} (iniciada por "
                f"{formats.md(run['usuario'] or '—')}); no hace falta volver a marcarlo: "
                "elegí ese día para ver el avance.")
    live.live_section(engine, settings, PAGE, fecha=fecha)
    rows = read_models.day_table(engine, settings, fecha)
    if not rows:
        st.info(f"No hay locales con cierres ni facturas el {formats.fmt_date(fecha)}.")
        st.stop()

    table = tables.frame(
        [{**r, "cerrado": "Sí" if r["cerrado"] else "No", "monto": tables.money(r["monto"]),
          "con_error": r["fallidas"] + r["invalidas"] + r["conflictos"],
          "auditado_por": (f"{r['auditor'] or '—'} · {formats.fmt_datetime(r['auditado_en'])}"
                           if r["auditado"] else "")}
         for r in rows],
        {"local": "Local", "estado": "Estado", "cerrado": "Cerrado",
         "anticipos_pendientes": "Anticipos pendientes", "facturas": "Facturas",
         "monto": "Monto", "enviadas": "Enviadas", "con_error": "Con error",
         "pendientes": "Sin enviar", "auditado_por": "Auditado por"})
    st.subheader(f"Locales del {formats.fmt_date(fecha)}")
    tables.show(table, key="auditoria_tabla",
                column_config={"Auditado por": tables.text_column("Auditado por", "medium"),
                               **tables.count_columns("Facturas", "Enviadas", "Con error",
                                                      "Sin enviar")})

    by_local = {r["local"]: r for r in rows}
    if st.session_state.get("local") not in by_local:
        st.session_state.pop("local", None)   # a local of another day, from the URL
    local = st.selectbox("Local", list(by_local), index=None, placeholder="Elegí un local",
                         key="local", bind="query-params")
    if local:
        row = by_local[local]
        with st.container(border=True):
            st.markdown(f"### {formats.md(local)} · {formats.fmt_date(fecha)}")
            st.markdown(f"**Estado:** {formats.md(row['estado'])}")
            c1, c2, c3 = st.columns(3)
            c1.metric("Facturas", formats.integer(row["facturas"]))
            c2.metric("Monto", formats.pesos(row["monto"]))
            c3.metric("Anticipos pendientes", formats.integer(row["anticipos_pendientes"]))
            refusal = None
            try:
                actions.check_auditable(engine, local, fecha)
            except SyncError as exc:
                refusal = exc.message
            if row["auditado"]:
                st.caption(f"Auditado por {formats.md(row['auditor'] or '—')} el "
                           f"{formats.fmt_datetime(row['auditado_en'])}.")
            else:
                st.caption(f"Al marcarlo auditado se envían sus facturas a Oppen · destino "
                           f"{session.target_text(settings)}.")
            if refusal and not row["auditado"]:
                st.caption("No se puede marcar auditado: " + formats.md(refusal) + ".")
            if st.button("Marcar auditado", type="primary", key="marcar_auditado",
                         disabled=refusal is not None,
                         help=formats.md(refusal) if refusal else None):
                st.session_state["confirmar"] = (local, fecha)
            # Open until confirmed or cancelled (kept in the session, so the dialog's own
            # buttons find it on the next run).
            if refusal is None and st.session_state.get("confirmar") == (local, fecha):
                confirm(local, fecha, row)
            if row["auditado"]:
                session.page_link(st, "pages/locales_auditados.py", "Ver sus facturas y corridas",
                                  {"local": local, "desde": fecha.isoformat(),
                                   "hasta": fecha.isoformat()}, ":material/history:")
