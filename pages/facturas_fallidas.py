"""Facturas fallidas (admin): every invoice that did not reach Oppen, with its error;
resend the selection (or all of a local/day) with a reason, or link a duplicate to the
invoice Oppen already holds. Roles are checked again inside each action."""

import datetime as dt

import streamlit as st

from sync import actions, auth, background, messages
from sync.state import read_models, run_details
from ui import errors, formats, live, session, tables

PAGE = "fallidas"
STATE_FILTERS = {"Fallida": "failed", "Inválida": "invalid", "Conflicto": "conflict",
                 "Pendiente con error": "pending"}

settings, user, engine = session.open_page(
    "admin", "Facturas fallidas",
    "Facturas que no llegaron a Oppen. Seleccioná filas y reenvialas indicando el "
    "motivo; queda registrado quién, cuándo y por qué.")

today = read_models.local_today()
# Bumped after each action: a new key clears the table's selection and the reason, so
# nothing stays selected (invisibly) for the next click.
version = st.session_state.setdefault("fallidas_version", 0)


def started_here(started, label: str) -> None:
    live.track(PAGE, started, label)
    st.session_state["fallidas_version"] = version + 1
    st.rerun()


with errors.guarded():
    if live.live_section(engine, settings, PAGE, kind="resend"):
        # A run of ours just ended and the table changes under the selection: clear it.
        version = st.session_state["fallidas_version"] = version + 1

    c1, c2, c3 = st.columns([1, 1, 2])
    choice = c1.selectbox("Local", ["Todos"] + read_models.known_locals(engine), key="fallidas_local")
    period = c2.date_input("Período", value=(today - dt.timedelta(days=30), today),
                           max_value=today, format="DD/MM/YYYY", key="fallidas_periodo")
    estados = c3.multiselect("Estado", list(STATE_FILTERS), placeholder="Todos los estados",
                             key="fallidas_estados")
    if not isinstance(period, (tuple, list)) or len(period) != 2:
        st.info("Elegí el día de inicio y el de fin del período.")
        st.stop()
    rows = read_models.failed_invoices(
        engine, settings, local=None if choice == "Todos" else choice, desde=period[0],
        hasta=period[1], estados=[STATE_FILTERS[e] for e in estados] or None)
    # Keep what is chosen among the options even if no row has it right now.
    kinds = sorted({r["tipo_error"] for r in rows}
                   | set(st.session_state.get("fallidas_tipos", [])))
    chosen_kinds = st.multiselect("Tipo de error", kinds, placeholder="Todos los tipos de error",
                                  key="fallidas_tipos")
    if chosen_kinds:
        rows = [r for r in rows if r["tipo_error"] in chosen_kinds]
    filters = (choice, tuple(period), tuple(estados), tuple(chosen_kinds))
    if st.session_state.setdefault("fallidas_filtros", filters) != filters:
        # Other rows now: a selection made on the old table must not carry over.
        st.session_state["fallidas_filtros"] = filters
        version = st.session_state["fallidas_version"] = version + 1
    if not rows:
        st.success("No hay facturas con problemas para este filtro.")
        st.stop()

    # Attempts as the timeline counts them: POSTs and lookups apart.
    counts = run_details.attempt_counts(engine, [r["id"] for r in rows])
    display = [{**r, "estado": formats.STATE_LABELS.get(r["estado"], r["estado"]),
                "monto": tables.money(r["monto"]),
                "envios": counts[r["id"]].get("post", 0),
                "consultas": counts[r["id"]].get("lookup", 0),
                "ultimo_intento": tables.local_dt(r["ultimo_intento"]),
                "puede_estar": "Puede que sí" if r["requiere_verificacion"] else "No",
                "auditado": "Sí" if r["auditado"] else "No"} for r in rows]
    columns = {"referencia": "Factura", "local": "Local", "fecha": "Día", "monto": "Monto",
               "estado": "Estado", "envios": "Envíos", "consultas": "Consultas",
               "ultimo_intento": "Último intento", "http_status": "HTTP",
               "tipo_error": "Tipo de error", "error": "Error",
               "puede_estar": "¿Ya en Oppen?"}
    # On screen the error must be readable without scrolling sideways at 1400 px: the
    # attempts in one short column, the HTTP status and the last attempt's time left to
    # the exports and to each run's detail, and the error wrapping in taller rows.
    # The last attempt's time is hidden on screen: left out of the table, not formatted
    # for nothing on every run (a Styler formats each cell; 3,000 rows cost a second).
    on_screen = {k: v for k, v in columns.items() if k != "ultimo_intento"}
    event = tables.show(
        tables.frame([{**d, "intentos": run_details.counts_text(counts[d["id"]])}
                      for d in display], {**on_screen, "intentos": "Intentos"}),
        key=f"fallidas_tabla_{version}", on_select="rerun", selection_mode="multi-row",
        column_order=("Factura", "Local", "Día", "Monto", "Estado", "Intentos",
                      "Tipo de error", "Error", "¿Ya en Oppen?"),
        row_height=tables.row_height(r["error"] for r in rows),
        column_config={**tables.widths({"Día": 80, "Factura": 115, "Local": 85, "Estado": 70,
                                        "Monto": 92, "Intentos": 70,
                                        "Tipo de error": 100}),
                       "¿Ya en Oppen?": st.column_config.TextColumn(
                           "¿En Oppen?", width=72,
                           help="«Puede que sí»: un envío no tuvo respuesta clara; antes de "
                                "reenviarla se la busca en Oppen, así que no se duplica."),
                       "Error": tables.text_column("Error", 200)})
    # The selection's row numbers refer to the table the person saw (the previous run's):
    # resolve them against that, by invoice id, not against rows just re-read.
    shown = st.session_state.get(f"fallidas_shown_{version}", [])
    picked = {shown[i] for i in (event.selection.rows if event is not None else [])
              if i < len(shown)}
    selected = [r for r in rows if r["id"] in picked]
    st.session_state[f"fallidas_shown_{version}"] = [r["id"] for r in rows]
    exported = [{**d, "monto": r["monto"]} for d, r in zip(display, rows)]
    st.caption(f"{len(rows)} factura(s) · {len(selected)} seleccionada(s). El CSV y el Excel "
               "traen también los envíos y las consultas por separado, el estado HTTP y el "
               "último intento.")
    e1, e2, _ = st.columns([1, 1, 3])
    # The files are made when clicked (a callable), not on every run of the page: the
    # Excel of 5,000 rows took seconds, on each rerun, for a file rarely downloaded.
    e1.download_button("Descargar CSV", lambda: tables.csv_bytes(exported, columns),
                       file_name=f"facturas-fallidas-{today.isoformat()}.csv",
                       mime="text/csv", key="fallidas_csv")
    e2.download_button("Descargar Excel",
                       lambda: tables.xlsx_bytes(exported, columns, "Facturas fallidas"),
                       file_name=f"facturas-fallidas-{today.isoformat()}.xlsx",
                       mime="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                       key="fallidas_xlsx")
    if len(selected) == 1:
        one = selected[0]
        run_ids = run_details.runs_of_invoice(engine, one["id"])
        if run_ids:
            st.markdown(f"**Corridas de {formats.md(one['referencia'])}:**")
            links = st.columns(min(len(run_ids), 6))
            for column, run_id in zip(links, run_ids[:6]):
                session.page_link(column, "pages/corridas.py", f"Corrida {run_id}",
                                  {"corrida": str(run_id)}, ":material/history:")

    st.subheader("Reenviar a Oppen")
    reason = st.text_input("Motivo (obligatorio)", key=f"fallidas_motivo_{version}",
                           placeholder="p. ej. Oppen estuvo caído el martes")
    r1, r2 = st.columns(2)
    with r1:
        st.markdown("**Las facturas seleccionadas**")
        blocked = [r for r in selected if st.session_state.get(f"fallidas_duena_{r['id']}")]
        if blocked:
            st.caption("No se ofrece reenviar " + formats.md(", ".join(r["referencia"] for r in blocked))
                       + ": Oppen ya la tiene como la de otra fila nuestra (ver abajo).")
        if st.button(f"Reenviar selección ({len(selected)})", type="primary",
                     disabled=not selected or bool(blocked), key="reenviar_seleccion"):
            started = errors.action(lambda: background.start_resend(
                engine, settings, user=user, reason=reason,
                invoice_ids=[r["factura_id"] for r in selected],
                client=session.client(settings)))
            if started is not None:
                started_here(started, live.run_label("resend", count=len(selected)))
    with r2:
        st.markdown("**Todo lo fallido de un local y día**")
        days = sorted({(r["local"], r["fecha"]) for r in rows}, key=lambda d: (d[1], d[0]),
                      reverse=True)
        day = st.selectbox("Local y día", days, index=None, placeholder="Elegí local y día",
                           format_func=lambda d: f"{d[0]} · {formats.fmt_date(d[1])}",
                           key=f"fallidas_dia_{version}")
        if st.button("Reenviar todo lo fallido", disabled=day is None, key="reenviar_dia"):
            started = errors.action(lambda: background.start_resend(
                engine, settings, user=user, reason=reason, local=day[0], fecha=day[1],
                client=session.client(settings)))
            if started is not None:
                started_here(started, live.run_label("resend", day[0], day[1]))

    taken = messages.ERROR_KIND_LABELS.get("sernr_taken")
    if len(selected) == 1 and selected[0]["estado"] == "conflict" and taken \
            and selected[0]["tipo_error"] == taken and hasattr(actions, "reassign_sernr"):
        one = selected[0]
        st.subheader("SerNr ocupado en Oppen: " + formats.md(one["referencia"]))
        st.caption("Oppen ya usa el SerNr de esta factura para otra factura. Se le puede asignar "
                   "un SerNr nuevo; queda pendiente y se envía en el próximo reenvío (usa el "
                   "motivo de arriba).")
        if st.button("Asignar un SerNr nuevo", key="nuevo_sernr"):
            def reassign():
                auth.require_role(user, "admin", "asignar un SerNr nuevo")
                return actions.reassign_sernr(engine, settings, one["id"], user=user.username,
                                              reason=reason)
            if errors.action(reassign) is not None:
                live.note(PAGE, f"{one['referencia']} tiene un SerNr nuevo y quedó pendiente "
                                "de envío.")
                st.session_state["fallidas_version"] = version + 1
                st.rerun()

    duplicates = [r for r in selected if r["duplicada"]]
    if len(selected) == 1 and duplicates:
        dup = duplicates[0]
        st.subheader(f"Duplicada: {formats.md(dup['referencia'])}")
        st.caption("Oppen ya tiene una factura con este número. Compará los datos: si son "
                   "iguales, vinculala en vez de reenviarla (usa el motivo de arriba).")
        d1, d2 = st.columns(2)
        if d1.button("Comparar con Oppen", key="comparar"):
            comparison = errors.action(lambda: background.compare_duplicate(
                engine, settings, user=user, state_id=dup["id"],
                client=session.client(settings)))
            if comparison is not None:
                owner = comparison.get("linked_to")
                if owner:
                    st.error(
                        "La factura que tiene Oppen con este número ya corresponde a otra fila "
                        f"nuestra: {formats.md(owner['referencia'])} de {formats.md(owner['local'])} del "
                        f"{formats.fmt_date(owner['fecha'])} (id {owner['factura_id']}). Esta fila "
                        "está duplicada en el sistema de ventas: no se puede vincular ni "
                        "reenviar (Oppen la rechazaría otra vez); hay que corregirla en el origen.")
                    st.session_state[f"fallidas_duena_{dup['id']}"] = owner
                if comparison["remote"] is None:
                    st.info("Oppen no tiene ninguna factura con ese número: se puede reenviar.")
                else:
                    if comparison["differences"]:
                        st.warning("Los datos no coinciden: " + formats.md(
                            "; ".join(comparison["differences"])))
                    elif not owner:
                        st.success("Los datos coinciden con la factura que ya está en Oppen.")
                    a, b = st.columns(2)
                    a.markdown("**Lo que enviaríamos**")
                    a.json(comparison["payload"])
                    b.markdown("**Lo que tiene Oppen**")
                    b.json(comparison["remote"])
        if d2.button("Vincular", key="vincular",
                     disabled=bool(st.session_state.get(f"fallidas_duena_{dup['id']}")),
                     help="Oppen ya tiene esta factura como la de otra fila nuestra"
                     if st.session_state.get(f"fallidas_duena_{dup['id']}") else None):
            result = errors.action(lambda: background.link_duplicate(
                engine, settings, user=user, state_id=dup["id"], reason=reason,
                client=session.client(settings)))
            if result is not None:
                if result["linked"]:
                    live.note(PAGE, f"{dup['referencia']} quedó vinculada a la factura que ya "
                                    f"estaba en Oppen (SerNr {result['remote'].get('SerNr')}).")
                    st.session_state["fallidas_version"] = version + 1
                    st.rerun()
                else:
                    st.warning("No se vinculó: los datos no coinciden (" + formats.md(
                        "; ".join(result["differences"] or [])) + ").")
