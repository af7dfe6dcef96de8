"""Vista previa: the exact payloads a sync of a local/day would send to Oppen, with the
rows that cannot be sent and why. Nothing is sent or written from this page."""

import datetime as dt
import json

import pandas as pd
import streamlit as st

from sync import actions
from sync.state import read_models
from ui import errors, formats, session

JSON_PAGE = 50   # invoices whose JSON is shown at once

settings, user, engine = session.open_page(
    "auditor", "Vista previa",
    "Lo que se enviaría a Oppen para un local y un día, factura por factura. "
    "Esta página no envía nada.")

today = read_models.local_today()
with errors.guarded():
    c1, c2 = st.columns(2)
    fecha = c1.date_input("Día", value=today - dt.timedelta(days=1), max_value=today,
                          format="DD/MM/YYYY", key="preview_fecha")
    locales = [r["local"] for r in read_models.day_table(engine, settings, fecha)]
    if not locales:
        st.info(f"No hay locales con cierres ni facturas el {formats.fmt_date(fecha)}.")
        st.stop()
    local = c2.selectbox("Local", locales, index=None, placeholder="Elegí un local",
                         key="preview_local")
    if not local:
        st.info("Elegí un local para ver lo que se enviaría a Oppen.")
        st.stop()

    result = actions.preview(engine, settings, local, fecha)
    items = result["items"]
    if not items:
        st.info(f"{formats.md(local)} no tiene facturas para sincronizar el {formats.fmt_date(fecha)}.")
        st.stop()

    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Facturas", result["total"])
    m2.metric("Se enviarían", result["validas"])
    m3.metric("Con datos inválidos", result["invalidas"])
    m4.metric("Monto a enviar", formats.pesos(result["monto_valido"]))
    if result["ya_enviadas"]:
        st.info(f"{result['ya_enviadas']} factura(s) ya están en Oppen (o esperan revisión) "
                "y no se volverían a enviar.")
    if result["invalidas"]:
        st.warning(f"{result['invalidas']} factura(s) no se pueden enviar hasta corregir sus "
                   "datos en el sistema de facturación (ver columna «Problema»).")

    # Every cell is text already (the amount in pesos): a plain DataFrame shows what a
    # tables.frame Styler would, without formatting 70,000 cells again on each run.
    table = pd.DataFrame({
        "Factura": [i["reference"] for i in items],
        "Monto": [formats.pesos_or_text(i["monto"]) for i in items],
        "Se puede enviar": ["Sí" if i["valid"] else "No" for i in items],
        "Problema": ["; ".join(f"{p['field']}: {p['reason']}" for p in i["problems"])
                     for i in items],
        "OfficialSerNr": [(i["payload"] or {}).get("OfficialSerNr") or "" for i in items],
        "Vencimiento": [(i["payload"] or {}).get("DueDate") or "" for i in items],
        "Estado actual": [formats.STATE_LABELS.get(i["state"], "Sin sincronizar")
                          if i["state"] else "Sin sincronizar" for i in items]})
    st.dataframe(table, hide_index=True, width="stretch", key="preview_tabla")

    st.subheader("JSON de cada factura")
    # A day of thousands of invoices, each in its own expander, took seconds to draw on
    # every run: the JSON is shown a page of invoices at a time (the table above has
    # them all, and "Descargar JSON" every payload).
    shown = items
    if len(items) > JSON_PAGE:
        pages = (len(items) + JSON_PAGE - 1) // JSON_PAGE
        page = st.number_input(f"Página (de {pages}, {JSON_PAGE} facturas cada una)",
                               min_value=1, max_value=pages, value=1, step=1,
                               key="preview_pagina")
        first = (int(page) - 1) * JSON_PAGE
        shown = items[first:first + JSON_PAGE]
        st.caption(f"Facturas {first + 1} a {first + len(shown)} de {len(items)}, en el "
                   "orden de la tabla.")
    for item in shown:
        title = f"{formats.md(item['reference'])} · " + (
            "se envía" if item["to_send"] else
            "ya está en Oppen" if item["valid"] else "NO se envía")
        with st.expander(title):
            if item["valid"]:
                st.json(item["payload"])
            else:
                for p in item["problems"]:
                    st.error(formats.md(f"{p['field']}: {p['reason']}"))

    st.download_button(
        "Descargar JSON", key="preview_descargar",
        # Made when clicked, not on every run (10,000 payloads are megabytes of JSON).
        data=lambda: json.dumps(result, ensure_ascii=False, indent=2, default=str),
        file_name=f"vista-previa-{local}-{fecha.isoformat()}.json", mime="application/json")
