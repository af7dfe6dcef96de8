"""Every sentence a person reads about a run, in one place: the seed's messages, the
state labels, and the summaries of runs. Pure functions of plain data; no I/O.
"""

from __future__ import annotations

import datetime as dt

# An invoice's state for one target, as a person reads it.
STATE_LABELS = {"pending": "pendiente", "sending": "enviando", "sent": "enviada",
                "failed": "fallida", "invalid": "inválida", "conflict": "conflicto",
                "excluded": "excluida"}


def audited(local: str, fecha: dt.date) -> str:
    return f"Local {local} marcado como auditado para {fecha.isoformat()}"


def result_lines(summary: dict, *, resend: bool = False) -> str:
    """What a finished sync (or resend) says, in the seed's words."""
    if summary["total"] == 0:
        if resend or summary.get("ya_enviadas"):
            return f"ℹ️ {summary.get('message') or 'No hay facturas para reenviar'}"
        return "ℹ️ No había facturas para sincronizar con Oppen"
    if summary["fallidas"] == 0:
        verb = "reenviada(s)" if resend else "enviada(s)"
        return f"✅ {summary['exitosas']} factura(s) {verb} a Oppen exitosamente"
    errores = summary.get("errores") or [{"error": "sin detalle"}]
    text = (f"⚠️ Algunas facturas no pudieron enviarse a Oppen: "
            f"{summary['fallidas']}/{summary['total']}\nPrimer error: {errores[0]['error']}")
    if summary.get("message"):
        text += f"\n{summary['message']}"
    return text


def sync(head: str, summary: dict) -> str:
    """The seed's message for an audit: its first line, then the sync's result."""
    return f"{head}\n{result_lines(summary)}"


def run_summary(*, total: int, exitosas: int, errores: list[dict], pendientes: int = 0,
                invalidas: int = 0, conflictos: int = 0, ya_enviadas: int = 0,
                excluidas: int = 0, stop_reason: str | None = None) -> dict:
    """The seed's summary dict of a sync or resend: `total`, `exitosas`, `fallidas` (every
    invoice of the run not sent, whatever the reason), `errores` and `success`, plus the
    counts by reason and a message when there is something to say."""
    summary = {"total": total, "exitosas": exitosas, "fallidas": total - exitosas,
               "errores": errores, "success": total == exitosas}
    for key, count in (("pendientes", pendientes), ("invalidas", invalidas),
                       ("conflictos", conflictos)):
        if count:
            summary[key] = count
    if ya_enviadas:
        summary["ya_enviadas"] = ya_enviadas
    if excluidas:
        # Not part of the run: never sent by design (an excluded local or type).
        summary["excluidas"] = excluidas
    if total == 0:
        if ya_enviadas:
            summary["message"] = f"Las {ya_enviadas} factura(s) ya estaban enviadas a Oppen"
        elif excluidas:
            summary["message"] = (f"Las {excluidas} factura(s) no se envían a Oppen: están "
                                  "excluidas de la sincronización por configuración")
        else:
            summary["message"] = "No hay facturas para sincronizar"
    if stop_reason:
        summary["message"] = (f"{stop_reason}. {pendientes} factura(s) quedaron pendientes "
                              "para reenviar.")
    return summary


def public_summary(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k != "run_id"}


# Why an invoice did not get into Oppen (schema.ERROR_KINDS), as a person reads it.
ERROR_KIND_LABELS = {"duplicate": "Duplicada en Oppen", "rejected": "Rechazada por Oppen",
                     "auth": "Error de autenticación", "transport": "Error de conexión",
                     "invalid": "Datos inválidos", "conflict": "Conflicto con Oppen",
                     "unknown": "Otro", "sernr_taken": "SerNr ocupado en Oppen"}
