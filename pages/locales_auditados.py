"""Locales auditados: the audited locals over a period, who audited them and how their
invoices went to Oppen; select one to see each invoice and its state."""

import datetime as dt

import streamlit as st

from sync import actions
from sync.state import read_models
from ui import errors, formats, session, tables

settings, user, engine = session.open_page(
    "auditor", "Locales auditados",
    "Quién auditó cada local y día, y cómo llegaron sus facturas a Oppen. "
    "Seleccioná una fila para ver sus facturas.")

today = read_models.local_today()
with errors.guarded():
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
        st.info(f"No hay locales auditados entre el {formats.fmt_date(desde)} y el "
                f"{formats.fmt_date(hasta)}" + (f" para {local}." if local else "."))
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
    if selected and selected[0] < len(rows):
        row = rows[selected[0]]
        st.subheader(f"Facturas de {formats.md(row['local'])} del {formats.fmt_date(row['fecha'])}")
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
