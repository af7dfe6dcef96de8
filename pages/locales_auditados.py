"""Locales auditados: the audited locals over a period, who audited them and how their
invoices went to Oppen; select one to see each invoice and its state."""

import datetime as dt

import streamlit as st

import ui
from sync import actions
from sync.state import read_models

settings, user, engine = ui.open_page(
    "auditor", "Locales auditados",
    "Quién auditó cada local y día, y cómo llegaron sus facturas a Oppen. "
    "Seleccioná una fila para ver sus facturas.")

today = read_models.local_today()
with ui.guarded():
    c1, c2 = st.columns([2, 1])
    period = c1.date_input("Período", value=(today - dt.timedelta(days=7), today),
                           max_value=today, format="DD/MM/YYYY", key="auditados_periodo")
    if not isinstance(period, (tuple, list)) or len(period) != 2:
        st.info("Elegí el día de inicio y el de fin del período.")
        st.stop()
    desde, hasta = period
    options = ["Todos"] + read_models.known_locals(engine)
    choice = c2.selectbox("Local", options, key="auditados_local")
    local = None if choice == "Todos" else choice

    rows = read_models.audited_days(engine, settings, desde, hasta, local=local)
    if not rows:
        st.info(f"No hay locales auditados entre el {read_models.fmt_date(desde)} y el "
                f"{read_models.fmt_date(hasta)}" + (f" para {local}." if local else "."))
        st.stop()

    table = ui.frame(
        [{**r, "auditado_en": ui.local_dt(r["auditado_en"]), "monto": ui.money(r["monto"]),
          "monto_enviado": ui.money(r["monto_enviado"])} for r in rows],
        {"fecha": "Día", "local": "Local", "auditor": "Auditado por",
         "auditado_en": "Auditado el", "facturas": "Facturas", "enviadas": "Enviadas",
         "fallidas": "Fallidas", "invalidas": "Inválidas", "pendientes": "Sin enviar",
         "conflictos": "Conflictos", "monto": "Monto ($)", "monto_enviado": "Enviado ($)"})
    event = st.dataframe(
        table, hide_index=True, width="stretch", key="auditados_tabla", on_select="rerun",
        selection_mode="single-row",
        column_config={"Día": ui.date_column("Día"),
                       "Auditado el": ui.datetime_column("Auditado el"),
                       "Monto ($)": ui.money_column("Monto ($)"),
                       "Enviado ($)": ui.money_column("Enviado ($)"),
                       **ui.count_columns("Facturas", "Enviadas", "Fallidas", "Inválidas",
                                          "Sin enviar", "Conflictos")})
    total = sum(r["facturas"] for r in rows)
    sent = sum(r["enviadas"] for r in rows)
    st.caption(f"{len(rows)} local(es)/día(s) auditado(s) · {sent} de {total} factura(s) "
               "enviadas a Oppen.")

    selected = list(event.selection.rows) if event is not None else []
    if selected and selected[0] < len(rows):
        row = rows[selected[0]]
        st.subheader(f"Facturas de {ui.md(row['local'])} del {read_models.fmt_date(row['fecha'])}")
        invoices = actions.status(engine, settings, row["local"], row["fecha"])
        if not invoices:
            st.info("Este local no tenía facturas ese día.")
        else:
            st.dataframe(
                ui.frame([{**i, "estado": ui.STATE_LABELS.get(i["estado"], i["estado"]),
                           "monto": ui.money(i["monto"]),
                           "actualizado": ui.local_dt(i["actualizado"]),
                           "ultimo_error": None if i["estado"] == "sent" else i["ultimo_error"]}
                          for i in invoices],
                         {"referencia": "Factura", "monto": "Monto ($)", "estado": "Estado",
                          "intentos": "Intentos", "sernr": "SerNr en Oppen",
                          "ultimo_error": "Último error", "actualizado": "Actualizada"}),
                hide_index=True, width="stretch", key="auditados_facturas",
                column_config={"Monto ($)": ui.money_column("Monto ($)"),
                               "SerNr en Oppen": st.column_config.NumberColumn(
                                   "SerNr en Oppen", format="plain"),
                               "Actualizada": ui.datetime_column("Actualizada"),
                               **ui.count_columns("Intentos")})
    else:
        st.info("Seleccioná una fila (casilla a la izquierda de la tabla) para ver sus facturas.")
