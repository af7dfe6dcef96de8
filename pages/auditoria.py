"""Auditoría: pick a day, see its locals, mark one audited and watch its invoices reach
Oppen (the run goes on in the background; the progress bar reads its saved state)."""

import datetime as dt

import streamlit as st

from sync import background
from sync.state import read_models
from ui import errors, formats, live, session, tables

PAGE = "auditoria"

settings, user, engine = session.open_page(
    "auditor", "Auditoría",
    "Elegí el día y el local. Al marcarlo como auditado, sus facturas se envían a "
    "Oppen y acá ves el avance y el resultado.")

today = read_models.local_today()
fecha = st.date_input("Día", value=today - dt.timedelta(days=1), max_value=today,
                      format="DD/MM/YYYY", key="auditoria_fecha")

with errors.guarded():
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
         "monto": "Monto ($)", "enviadas": "Enviadas", "con_error": "Con error",
         "pendientes": "Sin enviar", "auditado_por": "Auditado por"})
    st.subheader(f"Locales del {formats.fmt_date(fecha)}")
    st.dataframe(table, hide_index=True, width="stretch", key="auditoria_tabla",
                 column_config={"Monto ($)": tables.money_column("Monto ($)"),
                                "Auditado por": st.column_config.TextColumn(
                                    "Auditado por", width="medium"),
                                **tables.count_columns("Facturas", "Enviadas", "Con error",
                                                       "Sin enviar")})

    by_local = {r["local"]: r for r in rows}
    local = st.selectbox("Local", list(by_local), index=None, placeholder="Elegí un local",
                         key="auditoria_local")
    if local:
        row = by_local[local]
        with st.container(border=True):
            st.markdown(f"### {formats.md(local)} · {formats.fmt_date(fecha)}")
            st.markdown(f"**Estado:** {row['estado']}")
            c1, c2, c3 = st.columns(3)
            c1.metric("Facturas", row["facturas"])
            c2.metric("Monto", formats.pesos(row["monto"]))
            c3.metric("Anticipos pendientes", row["anticipos_pendientes"])
            if row["auditado"]:
                st.caption(f"Auditado por {row['auditor'] or '—'} el "
                           f"{formats.fmt_datetime(row['auditado_en'])}.")
            else:
                st.caption(f"Al marcarlo auditado se envían sus facturas a Oppen · destino "
                           f"{session.target_text(settings)}.")
            if st.button("Marcar auditado", type="primary", key="marcar_auditado"):
                started = errors.action(lambda: background.start_audit(
                    engine, settings, user=user, local=local, fecha=fecha,
                    client=session.client(settings)))
                if started is not None:
                    live.track(PAGE, started)
                    st.rerun()
