"""Monitoreo (admin): the automatic sending (workers, queue, next retry, why each invoice
waits, open alerts), how the sync is going per day, which errors happen, the history of
runs, and a connectivity check against the configured Oppen target."""

import datetime as dt

import altair as alt
import pandas as pd
import streamlit as st

from sync import alerts, background
from sync.state import alerts as alert_rows
from sync.state import queue, read_models, run_details, workers
from ui import errors, formats, session, tables

SERIES = {"Enviadas": "enviadas", "Fallidas": "fallidas", "Inválidas": "invalidas",
          "Pendientes": "pendientes"}
COLORS = ("#16a34a", "#dc2626", "#a855f7", "#f59e0b")
# Monitoreo's cards: one per state of an invoice, as messages.STATE_LABELS names them.
CARDS = (("Enviadas", "enviadas", "Oppen las tiene registradas."),
         ("Pendientes", "pendientes", "Todavía no se enviaron, o se están enviando."),
         ("Fallidas", "fallidas", "Oppen no las aceptó o no respondió; se pueden reenviar."),
         ("Inválidas", "invalidas", "Los datos del sistema de ventas no alcanzan para "
                                    "armarlas; hay que corregirlos allí."),
         ("Conflictos", "conflictos", "Oppen tiene ese número con otros datos; las revisa "
                                      "un administrador."),
         ("Excluidas", "excluidas", "No se envían a Oppen (por ejemplo, anuladas)."))
PERIODS = {"Últimos 7 días": 7, "Últimos 30 días": 30, "Últimos 90 días": 90}

settings, user, engine = session.open_page("admin", "Monitoreo")


def worker_section(engine, settings, user) -> None:
    """The automatic sending (sync/worker.py): is Oppen answering, the open alerts, the
    workers and their heartbeat, the queue (an admin can cancel), when the next automatic
    retry is due, and why each invoice waits."""
    st.subheader("Envío automático")
    health = workers.health(engine, settings.target)
    if health["down_since"] is not None:
        probe = health["next_probe_at"]
        st.error(f"🔴 Oppen no responde desde {formats.fmt_datetime(health['down_since'])}: "
                 f"{formats.md(health['down_error'] or 'sin detalle')}. "
                 + (f"Próxima prueba de conexión: {formats.fmt_datetime(probe)}. " if probe
                    else "")
                 + (f"{alerts.TEST_INSTANCE_HINT} " if settings.oppen_env == "test" else "")
                 + "Las facturas pendientes salen solas cuando vuelva.")
    for alert in alert_rows.active(engine, settings.target):
        st.warning(f"**{alerts.KIND_LABELS.get(alert['kind'], alert['kind'])}** · desde "
                   f"{formats.fmt_datetime(alert['opened_at'])}  \n{formats.md(alert['text'])}")
    listing = workers.listing(engine, settings.target, workers.alive_within(settings))
    alive = [w for w in listing if w["alive"]]
    runs_now = queue.queued_or_running(engine, settings.target)
    next_due = queue.next_due(engine, settings.target)
    waiting = queue.waiting(engine, settings.target)
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Workers activos", len(alive))
    m2.metric("En cola", sum(1 for r in runs_now if r["state"] == "queued"))
    m3.metric("Facturas en espera", len(waiting))
    m4.metric("Próximo reintento", formats.fmt_datetime(next_due) or "—")
    if not alive:
        st.warning("No hay ningún worker activo: lo pedido queda en cola. La consola inicia "
                   "uno propio en unos segundos; en un servidor, revisá el servicio "
                   "oppen-sync-worker (systemctl status oppen-sync-worker).")
    if listing:
        st.markdown("**Workers**")
        tables.show(tables.frame(
            [{"id": w["id"], "host": w["host"], "pid": w["pid"],
              "tipo": "de la consola" if w["embedded"] else "servicio",
              "estado": (workers.WORKER_STATE_LABELS.get(w["state"], w["state"]) if w["alive"]
                         or w["state"] not in ("running", "stopping") else "sin señal"),
              "latido": tables.local_dt(w["heartbeat_at"]), "corrida": w["run_id"],
              "hechas": w["runs_done"]} for w in listing[:20]],
            {"id": "Worker", "host": "Equipo", "pid": "PID", "tipo": "Tipo", "estado": "Estado",
             "latido": "Último latido", "corrida": "Corrida actual", "hechas": "Corridas"},
            ids=("PID", "Corrida actual")),
            key="monitoreo_workers",
            column_config={"Último latido": tables.datetime_column("Último latido"),
                           **tables.count_columns("PID", "Corrida actual", "Corridas")})
    if runs_now:
        st.markdown("**Cola**")
        tables.show(tables.frame(
            [{"id": r["id"], "tipo": read_models.RUN_KIND_LABELS.get(r["kind"], r["kind"]),
              "local": r["local"] or "varios", "fecha": r["fecha"],
              "usuario": r["username"] or "automático",
              "estado": read_models.RUN_STATE_LABELS.get(r["state"], r["state"]),
              "avance": f"{r['processed']} de {r['total']}" if r["total"] else "",
              "desde": tables.local_dt(r["queued_at"] or r["started_at"]),
              "cancelar": (f"pedida por {r['cancel_requested_by']}"
                           if r["cancel_requested_by"] else "")} for r in runs_now],
            {"id": "N.º", "tipo": "Tipo", "local": "Local", "fecha": "Día", "usuario": "Pedida por",
             "estado": "Estado", "avance": "Avance", "desde": "En cola desde",
             "cancelar": "Cancelación"}),
            key="monitoreo_cola",
            column_config={"Día": tables.date_column("Día"),
                           "En cola desde": tables.datetime_column("En cola desde"),
                           **tables.count_columns("N.º")})
        c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
        chosen = c1.selectbox(
            "Cancelar una sincronización (lo que no se envió queda pendiente con el motivo)",
            [r["id"] for r in runs_now], index=None, placeholder="Elegí el número",
            key="monitoreo_cancelar_id")
        if c2.button("Cancelar", disabled=chosen is None, key="monitoreo_cancelar"):
            text = errors.action(lambda: background.cancel_run(engine, settings, user=user,
                                                                run_id=chosen))
            if text is not None:
                st.success(text)
    if waiting:
        st.markdown("**Facturas en espera** (salen solas, salvo las que requieren atención)")
        tables.show(tables.frame(
            [{"referencia": w["reference"], "local": w["local"], "fecha": w["fecha"],
              "estado": formats.STATE_LABELS.get(w["state"], w["state"]),
              "reintentos": w["retry_count"] or 0,
              "proximo": tables.local_dt(w["next_attempt_at"]),
              "por_que": background.why_waiting(w, health, settings)} for w in waiting],
            {"referencia": "Factura", "local": "Local", "fecha": "Día", "estado": "Estado",
             "reintentos": "Reintentos automáticos", "proximo": "Próximo reintento",
             "por_que": "Por qué espera"}),
            key="monitoreo_espera",
            column_config={"Día": tables.date_column("Día"),
                           "Próximo reintento": tables.datetime_column("Próximo reintento"),
                           **tables.count_columns("Reintentos automáticos")})

with errors.guarded():
    with st.container(border=True):
        c1, c2 = st.columns([3, 1], vertical_alignment="center")
        c1.markdown(f"**Conexión con Oppen** · destino {session.target_text(settings)}")
        if c2.button("Probar conexión", key="probar_conexion"):
            timing = errors.action(lambda: background.ping(session.client(settings)))
            if timing is not None:
                st.success(f"Conexión correcta con Oppen ({settings.env_label}): autenticación "
                           f"{timing['auth_ms']:.0f} ms, consulta {timing['query_ms']:.0f} ms.")

    worker_section(engine, settings, user)

    period = st.selectbox("Período (día de las facturas)", list(PERIODS), index=1,
                          key="monitoreo_periodo")
    hasta = read_models.local_today()
    desde = hasta - dt.timedelta(days=PERIODS[period])
    stats = read_models.daily_stats(engine, settings, desde, hasta)

    if not stats:
        st.info("Todavía no se sincronizó ninguna factura en este período.")
    else:
        totals = read_models.state_totals(engine, settings, desde, hasta)
        cards = st.columns(len(CARDS))
        for card, (label, key, help_text) in zip(cards, CARDS):
            card.metric(label, formats.integer(totals[key]), help=help_text)
        r1, r2 = st.columns([1, 3], vertical_alignment="center")
        r1.metric("Tasa de éxito", formats.percent(totals["enviadas"], totals["base"]))
        r2.caption(
            f"Tasa de éxito = enviadas / (todas menos excluidas) = "
            f"{formats.integer(totals['enviadas'])} / {formats.integer(totals['base'])}. "
            "Cuentan las facturas de los locales auditados del período, cualquiera sea su "
            "estado; las excluidas no se envían a Oppen y no cuentan.")

        long = pd.DataFrame(
            [{"Día": formats.fmt_date(s["fecha"])[:5], "orden": s["fecha"].isoformat(),
              "Estado": state, "Facturas": s[key]}
             for s in stats for state, key in SERIES.items()])
        g1, g2 = st.columns(2)
        with g1:
            st.markdown("**Facturas por día**")
            st.altair_chart(
                alt.Chart(long).mark_bar().encode(
                    x=alt.X("Día:N", sort=alt.SortField("orden"), axis=alt.Axis(labelAngle=0)),
                    y=alt.Y("sum(Facturas):Q", title="Facturas"),
                    color=alt.Color("Estado:N", scale=alt.Scale(domain=list(SERIES),
                                                               range=list(COLORS)),
                                    legend=alt.Legend(orient="bottom", title=None)),
                    order=alt.Order("Estado:N"), tooltip=["Día", "Estado", "Facturas"]),
                width="stretch")
        with g2:
            st.markdown("**Tasa de éxito por día (%)**")
            rate = pd.DataFrame([{"Día": formats.fmt_date(s["fecha"])[:5],
                                  "orden": s["fecha"].isoformat(),
                                  "Tasa de éxito (%)": s["tasa_exito"]} for s in stats])
            st.altair_chart(
                alt.Chart(rate)
                .mark_line(point=alt.OverlayMarkDef(size=80, color=COLORS[0]), color=COLORS[0])
                .encode(x=alt.X("Día:N", sort=alt.SortField("orden"), axis=alt.Axis(labelAngle=0)),
                        y=alt.Y("Tasa de éxito (%):Q", scale=alt.Scale(domain=[0, 100])),
                        tooltip=["Día", "Tasa de éxito (%)"]),
                width="stretch")

        kinds = read_models.errors_by_kind(engine, settings, desde, hasta)
        st.markdown("**Errores por tipo** (facturas que todavía no llegaron a Oppen)")
        if kinds:
            st.altair_chart(
                # One band of 36 px per kind and a bar of 22 px inside it: bars never
                # touch, whatever the number of kinds; the count written beside each bar.
                (alt.Chart(pd.DataFrame(kinds)).mark_bar(color="#dc2626", size=22).encode(
                    y=alt.Y("tipo_error:N", title=None, sort="-x",
                            axis=alt.Axis(labelLimit=320, labelFontSize=13)),
                    x=alt.X("cantidad:Q", title="Facturas",
                            axis=alt.Axis(tickMinStep=1, format="d")),
                    tooltip=[alt.Tooltip("tipo_error", title="Tipo de error"),
                             alt.Tooltip("cantidad", title="Facturas")])
                 + alt.Chart(pd.DataFrame(kinds)).mark_text(align="left", dx=4).encode(
                    y=alt.Y("tipo_error:N", sort="-x"), x="cantidad:Q",
                    text=alt.Text("cantidad:Q", format="d")))
                .properties(height=alt.Step(36)),
                width="stretch")
        else:
            st.caption("Sin errores en este período.")

    st.subheader("Conciliación con Oppen")
    reconciled = read_models.reconciliation_by_day(engine, settings, desde, hasta)
    if not reconciled:
        st.info("Todavía no se concilió ningún día de este período (página Conciliación, o "
                "cada mañana el proceso de envío).")
    else:
        st.caption("La última conciliación de cada local/día, por día; el detalle está en "
                   "la página Conciliación.")
        tables.show(
            tables.frame([{**r, "conciliado_en": tables.local_dt(r["conciliado_en"])}
                          for r in reconciled],
                         {"fecha": "Día", "locales": "Locales", "cuadran": "Cuadran",
                          "no_cuadran": "No cuadran", "excluidos": "Excluidos",
                          "conciliado_en": "Última conciliación"}),
            key="monitoreo_conciliacion",
            column_config={"Día": tables.date_column("Día"),
                           "Última conciliación": tables.datetime_column("Última conciliación"),
                           **tables.count_columns("Locales", "Cuadran", "No cuadran",
                                                  "Excluidos")})

    st.subheader("Historial de sincronizaciones")
    # Each run's outcome in words (completa, parcial, fallida…), as Corridas says it. The
    # message (the error) must show at 1400 px without scrolling sideways: who and why
    # are in Corridas, one click away.
    runs = run_details.runs(engine, settings, limit=200)
    if not runs:
        st.info("Todavía no hubo sincronizaciones.")
    else:
        tables.show(
            tables.frame(
                [{**r, "inicio": tables.local_dt(r["inicio"]),
                  "enviadas": f"{formats.integer(r['exitosas'])} de {formats.integer(r['total'])}",
                  "duracion": formats.run_duration(r["duracion_s"]),
                  "detalle": f"corridas?corrida={r['id']}"}
                 for r in runs],
                {"detalle": "Corrida", "inicio": "Inicio", "tipo": "Tipo", "local": "Local",
                 "fecha": "Día", "resultado": "Resultado", "enviadas": "Enviadas",
                 "duracion": "Duración", "mensaje": "Mensaje"}),
            key="monitoreo_historial",
            column_config={
                # A link to the run's detail (Corridas, ?corrida=N), written 'N.º 12'.
                "Corrida": st.column_config.LinkColumn(
                    "Corrida", display_text=r"corrida=(\d+)$", width=62,
                    help="Abre el detalle de la corrida: cada factura y cada intento."),
                **tables.widths({"Inicio": 120, "Tipo": 80, "Local": 90, "Día": 82,
                                 "Resultado": 85, "Enviadas": 72, "Duración": 90}),
                "Mensaje": tables.text_column("Mensaje", 200)})
        session.page_link(st, "pages/corridas.py",
                          "Todas las corridas, con filtros por local, usuario, tipo y resultado",
                          icon=":material/history:")
