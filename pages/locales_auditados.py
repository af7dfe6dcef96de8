"""Locales auditados: the audited locals over a period, who audited them and how their
invoices went to Oppen; select one to see each invoice and its state."""

import datetime as dt

import streamlit as st

from sync import actions
from sync.state import read_models, run_details
from ui import errors, formats, session, tables

settings, user, engine = session.open_page(
    "auditor", "Locales auditados",
    "Quién auditó cada local y día, y cómo llegaron sus facturas a Oppen. "
    "Seleccioná una fila para ver sus facturas.")

today = read_models.local_today()


def _url_date(name: str) -> dt.date | None:
    try:
        value = dt.date.fromisoformat(str(st.query_params.get(name, "")))
    except ValueError:
        return None
    return min(value, today)


def view_from_url() -> None:
    """The view lives in the URL (?local=MATRIZ&desde=2026-11-24&hasta=2026-11-24): a link
    from Auditoría, a reload or a shared address opens the same local and period. Applied
    when the URL says something the widgets do not show yet."""
    desde, hasta = _url_date("desde"), _url_date("hasta")
    wanted = (st.query_params.get("local"), desde, hasta)
    if st.session_state.get("_auditados_url") == wanted:
        return
    st.session_state["_auditados_url"] = wanted
    if desde and hasta and desde <= hasta:
        st.session_state["auditados_periodo"] = (desde, hasta)
    if wanted[0]:
        st.session_state["auditados_local"] = wanted[0]


def view_to_url(local: str | None, desde: dt.date, hasta: dt.date) -> None:
    params = {"desde": desde.isoformat(), "hasta": hasta.isoformat()}
    if local:
        params["local"] = local
    if dict(st.query_params) != params:
        st.query_params.from_dict(params)
    st.session_state["_auditados_url"] = (local, desde, hasta)


with errors.guarded():
    view_from_url()
    c1, c2 = st.columns([2, 1])
    # The default through the session (not value=): the URL may have set it already.
    st.session_state.setdefault("auditados_periodo", (today - dt.timedelta(days=7), today))
    period = c1.date_input("Período", max_value=today, format="DD/MM/YYYY",
                           key="auditados_periodo")
    if not isinstance(period, (tuple, list)) or len(period) != 2:
        st.info("Elegí el día de inicio y el de fin del período.")
        st.stop()
    desde, hasta = period
    options = ["Todos"] + read_models.known_locals(engine)
    if st.session_state.get("auditados_local") not in options:
        st.session_state["auditados_local"] = "Todos"   # a name in the URL we do not know
    choice = c2.selectbox("Local", options, key="auditados_local")
    local = None if choice == "Todos" else choice
    view_to_url(local, desde, hasta)

    rows = read_models.audited_days(engine, settings, desde, hasta, local=local)
    if not rows:
        st.info(f"No hay locales auditados entre el {formats.fmt_date(desde)} y el "
                f"{formats.fmt_date(hasta)}" + (f" para {formats.md(local)}." if local else "."))
        st.stop()

    table = tables.frame(
        [{**r, "auditado_en": tables.local_dt(r["auditado_en"]),
          "monto": tables.money(r["monto"]), "monto_enviado": tables.money(r["monto_enviado"])}
         for r in rows],
        {"fecha": "Día", "local": "Local", "auditor": "Auditado por",
         "auditado_en": "Auditado el", "facturas": "Facturas", "enviadas": "Enviadas",
         "fallidas": "Fallidas", "invalidas": "Inválidas", "pendientes": "Sin enviar",
         "conflictos": "Conflictos", "monto": "Monto ($)", "monto_enviado": "Enviado ($)"})
    event = st.dataframe(
        table, hide_index=True, width="stretch", key="auditados_tabla", on_select="rerun",
        selection_mode="single-row",
        column_config={"Día": tables.date_column("Día"),
                       "Auditado el": tables.datetime_column("Auditado el"),
                       "Monto ($)": tables.money_column("Monto ($)"),
                       "Enviado ($)": tables.money_column("Enviado ($)"),
                       **tables.count_columns("Facturas", "Enviadas", "Fallidas", "Inválidas",
                                              "Sin enviar", "Conflictos")})
    total = sum(r["facturas"] for r in rows)
    sent = sum(r["enviadas"] for r in rows)
    st.caption(f"{len(rows)} local(es)/día(s) auditado(s) · {sent} de {total} factura(s) "
               "enviadas a Oppen.")

    selected = list(event.selection.rows) if event is not None else []
    if not selected and len(rows) == 1:
        selected = [0]   # one local/day (a link from Auditoría): its invoices at once
    if selected and selected[0] < len(rows):
        row = rows[selected[0]]
        st.subheader(f"Facturas de {formats.md(row['local'])} del {formats.fmt_date(row['fecha'])}")
        day_runs = run_details.runs_of_day(engine, settings, row["local"], row["fecha"])
        if day_runs:
            st.markdown("**Sus corridas** (cada una con sus facturas e intentos):")
            links = st.columns(min(len(day_runs[:8]), 4))
            for n, run in enumerate(day_runs[:8]):
                session.page_link(
                    links[n % len(links)], "pages/corridas.py",
                    f"Corrida {run['id']} · {run['tipo']} · {run['resultado']} · "
                    f"{formats.fmt_datetime(run['inicio'])}",
                    {"corrida": str(run["id"])}, ":material/history:")
        invoices = actions.status(engine, settings, row["local"], row["fecha"])
        if not invoices:
            st.info("Este local no tenía facturas ese día.")
        else:
            st.dataframe(
                tables.frame(
                    [{**i, "estado": formats.STATE_LABELS.get(i["estado"], i["estado"]),
                      "monto": tables.money(i["monto"]),
                      "total_oppen": tables.money(i["total_oppen"]),
                      "actualizado": tables.local_dt(i["actualizado"]),
                      "ultimo_error": None if i["estado"] == "sent" else i["ultimo_error"]}
                     for i in invoices],
                    {"referencia": "Factura", "monto": "Monto ($)", "estado": "Estado",
                     "total_oppen": "Total en Oppen ($)",
                     "intentos": "Intentos", "sernr": "SerNr en Oppen",
                     "ultimo_error": "Último error", "actualizado": "Actualizada"}),
                hide_index=True, width="stretch", key="auditados_facturas",
                column_config={"Monto ($)": tables.money_column("Monto ($)"),
                               "Total en Oppen ($)": tables.money_column("Total en Oppen ($)"),
                               "SerNr en Oppen": tables.id_column("SerNr en Oppen"),
                               "Actualizada": tables.datetime_column("Actualizada"),
                               **tables.count_columns("Intentos")})
    else:
        st.info("Seleccioná una fila (casilla a la izquierda de la tabla) para ver sus facturas.")
