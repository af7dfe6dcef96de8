"""Conciliación (admin): each audited local/day against what Oppen holds, as the last
reconciliation left it (stored: Oppen is asked only by "Conciliar ahora"); a day opens
into its lists; exports; "Reenviar faltantes" through the normal resend, with a reason.
Roles are checked again inside each action."""

import datetime as dt

import streamlit as st

from sync import reconcile
from sync.auth import require_role
from sync.state import read_models
from ui import errors, formats, live, session, tables

PAGE = "conciliacion"
MARKS = {True: "✅ Cuadra", False: "❌ No cuadra"}
COLUMNS = {"local": "Local", "fecha": "Día", "resultado": "Resultado", "facturas": "Facturas",
           "monto": "Monto ($)", "oppen_facturas": "En Oppen",
           "oppen_total": "Total Oppen ($)", "diferencia": "Diferencia ($)",
           "faltan": "Faltan", "sobran": "Sobran", "difieren": "Difieren",
           "anuladas": "Anuladas", "corregidas": "Corregidas",
           "conciliado_en": "Conciliado"}

settings, user, engine = session.open_page(
    "admin", "Conciliación",
    "Cada local/día auditado comparado con lo que Oppen tiene: facturas que faltan, que "
    "sobran, que difieren o que están anuladas, y los totales de los dos lados. Muestra la "
    "última conciliación guardada; «Conciliar ahora» vuelve a consultar Oppen.")

today = read_models.local_today()
version = st.session_state.setdefault("conciliacion_version", 0)


def result_label(row) -> str:
    if row["excluido"]:
        return "Excluido (no se sincroniza)"
    if row["conciliado_en"] is None:
        return "Sin conciliar"
    return MARKS[bool(row["cuadra"])]


def run_now(desde: dt.date, hasta: dt.date, local: str | None) -> dict:
    require_role(user, "admin", "conciliar con Oppen")
    # Its own HTTP session (a Session is not shared between threads), the process's token.
    probe = session.client(settings).clone()
    try:
        return reconcile.reconcile(engine, settings, desde, hasta, local=local, client=probe,
                                   user=user.username, origin="console")
    finally:
        probe.close()


with errors.guarded():
    if live.live_section(engine, settings, PAGE, kind="resend"):
        version = st.session_state["conciliacion_version"] = version + 1

    c1, c2, c3 = st.columns([1, 2, 1], vertical_alignment="bottom")
    choice = c1.selectbox("Local", ["Todos"] + read_models.known_locals(engine),
                          key="conciliacion_local")
    period = c2.date_input("Período (día auditado)", value=(today - dt.timedelta(days=30), today),
                           max_value=today, format="DD/MM/YYYY", key="conciliacion_periodo")
    if not isinstance(period, (tuple, list)) or len(period) != 2:
        st.info("Elegí el día de inicio y el de fin del período.")
        st.stop()
    desde, hasta = period
    local = None if choice == "Todos" else choice
    if c3.button("Conciliar ahora", type="primary", key="conciliar",
                 help=f"Consulta Oppen ({settings.env_label}) para cada local/día auditado del "
                      "período y guarda el resultado"):
        with st.spinner("Consultando Oppen…"):
            result = errors.action(lambda: run_now(desde, hasta, local))
        if result is not None:
            r = result["resumen"]
            text = (f"Conciliación {reconcile.fmt_range(desde, hasta)}: {r['dias']} día(s), "
                    f"{r['cuadran']} cuadra(n), {r['no_cuadran']} no cuadra(n)")
            corrected = sum(len(d["estado_corregido"]) for d in result["dias"])
            if corrected:
                text += (f". {corrected} factura(s) que figuraban sin enviar y Oppen tiene, "
                         "idénticas, quedaron enviadas")
            live.note(PAGE, text, "success" if not r["no_cuadran"] else "warning")
            st.session_state["conciliacion_version"] = version + 1
            st.rerun()

    rows = read_models.last_reconciliations(engine, settings, desde, hasta, local=local)
    if not rows:
        st.info("No hay días auditados en este período.")
        st.stop()

    compared = [r for r in rows if r["conciliado_en"] is not None and not r["excluido"]]
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Días auditados", len(rows))
    m2.metric("Cuadran", sum(1 for r in compared if r["cuadra"]))
    m3.metric("No cuadran", sum(1 for r in compared if not r["cuadra"]))
    m4.metric("Sin conciliar", sum(1 for r in rows if r["conciliado_en"] is None))

    display = [{**r, "resultado": result_label(r), "monto": tables.money(r["monto"]),
                "oppen_total": tables.money(r["oppen_total"]),
                "diferencia": tables.money(r["diferencia"]),
                "conciliado_en": tables.local_dt(r["conciliado_en"])} for r in rows]
    event = tables.show(
        tables.frame(display, COLUMNS), key=f"conciliacion_tabla_{version}", on_select="rerun", selection_mode="single-row",
        column_config={"Día": tables.date_column("Día"),
                       "Monto ($)": tables.money_column("Monto ($)"),
                       "Total Oppen ($)": tables.money_column("Total Oppen ($)"),
                       "Diferencia ($)": tables.money_column("Diferencia ($)"),
                       "Conciliado": tables.datetime_column("Conciliado"),
                       **tables.count_columns("Facturas", "En Oppen", "Faltan",
                                              "Sobran", "Difieren", "Anuladas",
                                              "Corregidas")})
    # The selection's row number refers to the table the person saw: resolve it by key.
    shown = st.session_state.get(f"conciliacion_shown_{version}", [])
    picked = [shown[i] for i in (event.selection.rows if event is not None else [])
              if i < len(shown)]
    st.session_state[f"conciliacion_shown_{version}"] = [(r["local"], r["fecha"]) for r in rows]

    exported = [{**r, "resultado": result_label(r),
                 "conciliado_en": tables.local_dt(r["conciliado_en"])} for r in rows]
    d1, d2, _ = st.columns([1, 1, 3])
    name = f"conciliacion-{desde.isoformat()}-{hasta.isoformat()}"
    # Made when clicked (a callable), not on every run: see facturas_fallidas.py.
    d1.download_button("Descargar CSV", lambda: tables.csv_bytes(exported, COLUMNS),
                       file_name=f"{name}.csv", mime="text/csv", key="conciliacion_csv")
    d2.download_button("Descargar Excel (.xlsx)",
                       lambda: tables.xlsx_bytes(exported, COLUMNS, "Conciliación"),
                       file_name=f"{name}.xlsx", key="conciliacion_xlsx",
                       mime="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")

    if not picked:
        st.caption("Elegí un día de la tabla para ver sus facturas.")
        st.stop()
    day = next(r for r in rows if (r["local"], r["fecha"]) == picked[0])
    st.subheader(f"{formats.md(day['local'])} · {formats.fmt_date(day['fecha'])}")
    if day["excluido"]:
        st.info("Este local está excluido de la sincronización con Oppen: se audita a mano y "
                "no se concilia.")
        st.stop()
    if day["conciliado_en"] is None:
        st.info("Este día todavía no se concilió: usá «Conciliar ahora».")
        st.stop()
    when = formats.fmt_datetime(day["conciliado_en"])
    # Amounts carry "$": shown literally, never as Markdown's math.
    if day["cuadra"]:
        st.success(formats.md(f"Cuadra: Oppen tiene las {day['facturas']} factura(s), "
                              f"{formats.pesos(day['oppen_total'])} (conciliado el {when})."))
    else:
        st.warning(formats.md(
            f"No cuadra: {reconcile.problems_text(day['detalle'])}. Nosotros "
            f"{formats.pesos(day['monto'])}, Oppen {formats.pesos(day['oppen_total'])}, "
            f"diferencia {formats.pesos(day['diferencia'])} (conciliado el {when})."))

    detail = day["detalle"]
    lists = (
        ("Faltan en Oppen", "faltan_en_oppen",
         {"factura": "Factura", "monto": "Monto ($)", "estado": "Nuestro estado",
          "motivo": "Motivo"}),
        ("Sobran en Oppen", "sobran_en_oppen",
         {"factura": "OfficialSerNr", "tipo": "Tipo", "sernr": "SerNr", "total": "Total ($)"}),
        ("Difieren", "difieren",
         {"factura": "Factura", "sernr": "SerNr", "campos": "Campos", "detalle": "Detalle"}),
        ("Anuladas en Oppen", "anuladas_en_oppen",
         {"factura": "Factura", "sernr": "SerNr", "monto": "Monto ($)",
          "estado": "Nuestro estado"}),
        ("Corregidas (figuraban sin enviar y Oppen las tiene)", "estado_corregido",
         {"factura": "Factura", "estado_anterior": "Estado anterior", "sernr": "SerNr",
          "total": "Total ($)"}),
    )
    for title, key, columns in lists:
        items = detail.get(key) or []
        if not items:
            continue
        st.markdown(f"**{title}** ({len(items)})")
        shown_items = [{**i, "campos": ", ".join(i.get("campos") or []),
                        "estado": formats.STATE_LABELS.get(i.get("estado"), i.get("estado")),
                        "estado_anterior": formats.STATE_LABELS.get(i.get("estado_anterior"),
                                                                    i.get("estado_anterior")),
                        "monto": tables.money(i.get("monto")),
                        "total": tables.money(i.get("total"))} for i in items]
        tables.show(tables.frame(shown_items, columns), key=f"conciliacion_{key}_{version}",
                    column_config={"Monto ($)": tables.money_column("Monto ($)"),
                                   "Total ($)": tables.money_column("Total ($)"),
                                   "SerNr": tables.id_column("SerNr"),
                                   "Detalle": tables.text_column("Detalle"),
                                   "Motivo": tables.text_column("Motivo")})

    # Annulled ones are not offered: Oppen still holds their number, so it would refuse
    # them as duplicates; they are corrected by hand in Oppen.
    missing = [i for i in detail.get("faltan_en_oppen") or [] if i.get("factura_id")]
    if not missing:
        st.stop()
    st.subheader("Reenviar faltantes")
    sent_ones = [i for i in missing if i.get("estado") == "sent"]
    st.caption(
        f"Reenvía a Oppen ({session.target_text(settings)}) las {len(missing)} factura(s) que "
        "faltan allí, con el reenvío de siempre (las anuladas en Oppen se corrigen a mano "
        "allí). "
        + (f"{len(sent_ones)} figuran enviadas: vuelven a pendientes y se buscan en Oppen por "
           "número antes de enviarse, así nunca quedan dos veces. " if sent_ones else "")
        + "Queda registrado quién, cuándo y por qué.")
    reason = st.text_input("Motivo (obligatorio)", key=f"conciliacion_motivo_{version}",
                           placeholder="p. ej. anuladas por error en Oppen el martes")
    if st.button(f"Reenviar faltantes ({len(missing)})", type="primary",
                 key="reenviar_faltantes"):
        started = errors.action(lambda: reconcile.resend_missing(
            engine, settings, user=user, reason=reason, local=day["local"], fecha=day["fecha"],
            factura_ids=[i["factura_id"] for i in missing], client=session.client(settings)))
        if started is not None:
            live.track(PAGE, started, live.run_label("resend", day["local"], day["fecha"]))
            st.session_state["conciliacion_version"] = version + 1
            st.rerun()
