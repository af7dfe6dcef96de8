"""Auditoría: pick a day, see its locals, mark one audited and watch its invoices reach
Oppen (the run goes on in the background; the progress bar reads its saved state)."""

import datetime as dt

import streamlit as st

import ui
from sync import background
from sync.state import read_models

PAGE = "auditoria"

settings, user, engine = ui.open_page(
    "auditor", "Auditoría",
    "Elegí el día y el local. Al marcarlo como auditado, sus facturas se envían a "
    "Oppen y acá ves el avance y el resultado.")

today = read_models.local_today()
fecha = st.date_input("Día", value=today - dt.timedelta(days=1), max_value=today,
                      format="DD/MM/YYYY", key="auditoria_fecha")

with ui.guarded():
    ui.live_section(engine, settings, PAGE, fecha=fecha)
    rows = read_models.day_table(engine, settings, fecha)
    if not rows:
        st.info(f"No hay locales con cierres ni facturas el {read_models.fmt_date(fecha)}.")
        st.stop()

    table = ui.frame(
        [{**r, "cerrado": "Sí" if r["cerrado"] else "No", "monto": ui.money(r["monto"]),
          "con_error": r["fallidas"] + r["invalidas"] + r["conflictos"],
          "auditado_por": (f"{r['auditor'] or '—'} · {read_models.fmt_datetime(r['auditado_en'])}"
                           if r["auditado"] else "")}
         for r in rows],
        {"local": "Local", "estado": "Estado", "cerrado": "Cerrado",
         "anticipos_pendientes": "Anticipos pendientes", "facturas": "Facturas",
         "monto": "Monto ($)", "enviadas": "Enviadas", "con_error": "Con error",
         "pendientes": "Sin enviar", "auditado_por": "Auditado por"})
    st.subheader(f"Locales del {read_models.fmt_date(fecha)}")
    st.dataframe(table, hide_index=True, width="stretch", key="auditoria_tabla",
                 column_config={"Monto ($)": ui.money_column("Monto ($)"),
                                "Auditado por": st.column_config.TextColumn(
                                    "Auditado por", width="medium"),
                                **ui.count_columns("Facturas", "Enviadas", "Con error",
                                                   "Sin enviar")})

    by_local = {r["local"]: r for r in rows}
    local = st.selectbox("Local", list(by_local), index=None, placeholder="Elegí un local",
                         key="auditoria_local")
    if local:
        row = by_local[local]
        with st.container(border=True):
            st.markdown(f"### {ui.md(local)} · {read_models.fmt_date(fecha)}")
            st.markdown(f"**Estado:** {row['estado']}")
            c1, c2, c3 = st.columns(3)
            c1.metric("Facturas", row["facturas"])
            c2.metric("Monto", ui.pesos(row["monto"]))
            c3.metric("Anticipos pendientes", row["anticipos_pendientes"])
            if row["auditado"]:
                st.caption(f"Auditado por {row['auditor'] or '—'} el "
                           f"{read_models.fmt_datetime(row['auditado_en'])}.")
            else:
                color, label, text = ui.BADGES[settings.oppen_env]
                st.caption(f"Al marcarlo auditado se envían sus facturas a Oppen · destino "
                           f"{label} ({text}).")
            if st.button("Marcar auditado", type="primary", key="marcar_auditado"):
                started = ui.action(lambda: background.start_audit(
                    engine, settings, user=user, local=local, fecha=fecha,
                    client=ui.client(settings)))
                if started is not None:
                    ui.track(PAGE, started)
                    st.rerun()
