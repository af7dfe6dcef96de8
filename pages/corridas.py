"""Corridas: the history of runs (audits, resends, links) with filters, and one run in
detail: what it came to in words, who, when, why, how long, each invoice's outcome and
its attempts one by one (request and answer, secrets redacted), and whether each one may
already be in Oppen. The run shown lives in the URL (?corrida=12), so a link opens it."""

import streamlit as st

from sync.state import read_models, run_details
from ui import errors, formats, session, tables

settings, user, engine = session.open_page(
    "auditor", "Corridas",
    "Cada sincronización, reenvío o vinculación: qué pasó con cada factura y por qué.")

OUTCOME_LEVEL = {"complete": st.success, "partial": st.warning, "failed": st.error,
                 "stopped": st.error, "interrupted": st.warning, "cancelled": st.info,
                 "running": st.info, "queued": st.info}
KINDS = {"Todas": None, "Auditoría": "audit", "Reenvío": "resend", "Vinculación": "link"}


def run_title(run: dict) -> str:
    where = (f" de {run['local']} · {formats.fmt_date(run['fecha'])}" if run["local"] else "")
    return f"{run['tipo']}{where}"


def show_run(run_id: int) -> None:
    run = run_details.detail(engine, settings, run_id)
    if run is None:
        st.error(f"No existe la corrida {run_id} para el destino {settings.env_label}.")
        return
    st.subheader(f"Corrida {run['id']} · " + formats.md(run_title(run)))
    sent, total = run["exitosas"], run["total"]
    OUTCOME_LEVEL[run["resultado_clave"]](
        f"Resultado: **{run['resultado']}** · {formats.integer(sent)} de "
        f"{formats.integer(total)} factura(s) enviada(s)."
        + (f"  \n{formats.md(run['mensaje'])}" if run["mensaje"] else ""))
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Facturas", formats.integer(total))
    c2.metric("Enviadas", formats.integer(sent))
    c3.metric("No enviadas", formats.integer(run["fallidas"]))
    c4.metric("Duración", formats.run_duration(run["duracion_s"]) or "—")
    facts = [f"**Quién:** {formats.md(run['usuario'] or '—')}",
             f"**Inicio:** {formats.fmt_datetime(run['inicio'])}",
             f"**Fin:** {formats.fmt_datetime(run['fin']) or '—'}"]
    if run["motivo"]:
        facts.append(f"**Motivo:** {formats.md(run['motivo'])}")
    st.markdown(" · ".join(facts))

    items = run["facturas"]
    if run["sin_intentos"]:
        st.markdown("**Facturas que no se intentaron en esta corrida**")
        tables.show(tables.frame(run["sin_intentos"], {"referencia": "Factura", "error": "Motivo"}),
                    key="corrida_sin_intentos",
                    column_config={"Motivo": tables.text_column("Motivo")})
    if not items:
        st.info("Esta corrida no habló con Oppen por ninguna factura.")
        return
    st.markdown("**Facturas de la corrida**")
    # The last error must be readable at 1400 px without scrolling sideways: local and
    # day only when the run spans more than one (the heading names them otherwise), the
    # HTTP status left to each attempt below, and the error wrapping in taller rows.
    columns = {"referencia": "Factura", "local": "Local", "fecha": "Día", "monto": "Monto",
               "en_esta_corrida": "En esta corrida", "estado": "Estado ahora",
               "intentos_texto": "Intentos", "ultimo_error": "Último error"}
    if {(i["local"], i["fecha"]) for i in items} == {(run["local"], run["fecha"])}:
        del columns["local"], columns["fecha"]
    tables.show(
        tables.frame([{**i, "monto": tables.money(i["monto"]),
                       "estado": formats.STATE_LABELS.get(i["state"], i["state"])} for i in items],
                     columns),
        key="corrida_facturas", row_height=tables.row_height(i["ultimo_error"] for i in items),
        column_config={**tables.widths({"Factura": 118, "Local": 88, "Día": 82, "Monto": 96,
                                        "En esta corrida": 105, "Estado ahora": 92,
                                        "Intentos": 90}),
                       "Último error": tables.text_column("Último error", 210)})

    by_ref = {i["referencia"]: i for i in items}
    first = next((i["referencia"] for i in items if i["state"] != "sent"), items[0]["referencia"])
    chosen = st.selectbox("Ver los intentos de la factura", list(by_ref),
                          index=list(by_ref).index(first), key="corrida_factura")
    invoice = by_ref[chosen]
    st.markdown(f"**{formats.md(invoice['referencia'])}** · intentos en esta corrida: "
                f"{invoice['intentos_texto']}")
    st.info("¿Está en Oppen? " + formats.md(invoice["puede_estar"]))
    for n, step in enumerate(invoice["timeline"], start=1):
        with st.container(border=True):
            head = [formats.fmt_time(step["at"]), step["tipo"], step["resultado"]]
            if step["http_status"]:
                head.append(f"HTTP {step['http_status']}")
            if step["duracion_ms"] is not None:
                head.append(formats.duration(step["duracion_ms"] / 1000))
            st.markdown(f"**{n}.** " + " · ".join(formats.md(h) for h in head))
            if step["error"]:
                st.text(step["error"])
            left, right = st.columns(2)
            left.caption("Pedido")
            left.code(step["request"] or "—", language="json" if step["request"].startswith(("{", "[")) else None,
                      wrap_lines=True)
            right.caption("Respuesta de Oppen")
            right.code(step["response"] or "—", language="json", wrap_lines=True)


with errors.guarded():
    wanted = st.query_params.get("corrida")
    if wanted:
        if st.button("← Volver al historial", key="corridas_volver"):
            del st.query_params["corrida"]
            st.session_state.pop("corridas_tabla", None)   # or the row would reopen it
            st.rerun()
        if not str(wanted).isdigit():
            st.error("El número de corrida de la dirección no es válido.")
        else:
            show_run(int(wanted))
        st.stop()

    c1, c2, c3, c4 = st.columns(4)
    local = c1.selectbox("Local", ["Todos"] + read_models.known_locals(engine), key="corridas_local")
    person = c2.selectbox("Usuario", ["Todos"] + run_details.run_users(engine, settings),
                          key="corridas_usuario")
    kind = c3.selectbox("Tipo", list(KINDS), key="corridas_tipo")
    labels = {label: key for key, label in run_details.OUTCOMES.items()}
    chosen = c4.multiselect("Resultado", list(labels), placeholder="Todos los resultados",
                            key="corridas_resultado")
    rows = run_details.runs(engine, settings, local=None if local == "Todos" else local,
                            user=None if person == "Todos" else person, kind=KINDS[kind],
                            outcomes=[labels[c] for c in chosen])
    if not rows:
        st.info("No hay corridas con estos filtros.")
        st.stop()
    # At 1400 px without scrolling sideways: the counts in one column ("2 de 3").
    event = tables.show(
        tables.frame([{**r, "inicio": tables.local_dt(r["inicio"]),
                       "enviadas": f"{formats.integer(r['exitosas'])} de "
                                   f"{formats.integer(r['total'])}",
                       "duracion": formats.run_duration(r["duracion_s"])} for r in rows],
                     {"id": "Corrida", "inicio": "Inicio", "tipo": "Tipo", "usuario": "Usuario",
                      "local": "Local", "fecha": "Día", "resultado": "Resultado",
                      "enviadas": "Enviadas", "duracion": "Duración", "motivo": "Motivo"}),
        key="corridas_tabla", on_select="rerun", selection_mode="single-row",
        column_config={**tables.widths({"Corrida": 62, "Inicio": 118, "Tipo": 78, "Usuario": 75,
                                        "Local": 85, "Día": 82, "Resultado": 85,
                                        "Enviadas": 72, "Duración": 90}),
                       "Motivo": tables.text_column("Motivo", 120)})
    st.caption(f"{formats.integer(len(rows))} corrida(s). Seleccioná una para ver su detalle.")
    picked = list(event.selection.rows) if event is not None else []
    if picked and picked[0] < len(rows):
        st.query_params["corrida"] = str(rows[picked[0]]["id"])
        st.rerun()
