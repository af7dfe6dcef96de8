"""The webhook: posts an alert to `settings.webhook_url`, as Slack-compatible text
(`{"text": ...}`, the default) or, with OPPEN_WEBHOOK_FORMAT=json, as a plain JSON object
(the alert's fields, for a system that routes alerts itself).

The seed's improvement 3 is one such alert: a run that ends with failures, with the
local, the day and the first five errors (`failure_text`). Which alerts exist and when
they are raised is `sync/alerts.py`'s business; this module only words the seed's
message and delivers. It imports `requests` on purpose: it is a notification channel,
not Oppen (only `client.py` speaks to Oppen).

A notification must never fail a run: every problem is logged (naming only the
webhook's host, never its secret path) and turns into a False return, never an
exception.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

import requests

from .deadline import request_within
from .settings import Settings

logger = logging.getLogger(__name__)

TIMEOUT = 5.0            # seconds for the whole exchange
MAX_ERRORS = 5
MAX_LINE = 300


def webhook_host(url: str) -> str:
    """What may appear in a log line about the webhook: scheme and host, no path."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        if parts.port:
            host = f"{host}:{parts.port}"
        return f"{parts.scheme}://{host}"
    except ValueError:
        return "(URL inválida)"


def failure_text(local: str, fecha: dt.date | str, errores: Sequence[Mapping]) -> str:
    """The message, in the seed's words: a title line and one bullet per error (max 5)."""
    day = fecha.isoformat() if isinstance(fecha, dt.date) else str(fecha)
    lines = [f"⚠️ Errores sincronizando {local} ({day}):"]
    for error in list(errores)[:MAX_ERRORS]:
        line = f"• {error.get('factura', '?')}: {error.get('error', '?')}"
        lines.append(line if len(line) <= MAX_LINE else line[:MAX_LINE] + "…")
    if len(errores) > MAX_ERRORS:
        lines.append(f"… y {len(errores) - MAX_ERRORS} error(es) más")
    return "\n".join(lines)


def notify_failures(settings: Settings, *, local: str, fecha: dt.date | str,
                    errores: Sequence[Mapping], timeout: float = TIMEOUT) -> bool:
    """Post the failures to the webhook. True when it answered 2xx; never raises."""
    if not settings.webhook_url or not errores:
        return False
    try:
        text = failure_text(local, fecha, errores)
        day = fecha.isoformat() if isinstance(fecha, dt.date) else str(fecha)
        fields = {"alert": "run_failed", "state": "event", "local": local, "fecha": day,
                  "errores": [dict(e) for e in list(errores)[:MAX_ERRORS]],
                  "total_errores": len(errores)}
    except Exception:  # noqa: BLE001 - hostile text: a notification must never break a run
        logger.warning("No se pudo armar el aviso de errores", exc_info=False)
        return False
    return post(settings, text, fields, timeout=timeout)


def body(settings: Settings, text: str, fields: Mapping | None = None) -> dict:
    """What the webhook receives: Slack's `{"text": …}`, or with the json format the
    alert's fields with its text."""
    if settings.webhook_format == "json":
        return {**dict(fields or {}), "text": text}
    return {"text": text}


def post(settings: Settings, text: str, fields: Mapping | None = None, *,
         timeout: float = TIMEOUT) -> bool:
    """Post one alert. True when the webhook answered 2xx; never raises."""
    url = settings.webhook_url
    if not url:
        return False
    try:
        # Bounded as a whole: a slow webhook must never hold anyone for long.
        resp = request_within(None, "POST", url, timeout, json=body(settings, text, fields))
    except requests.RequestException as exc:
        logger.warning("No se pudo notificar al webhook %s: %s", webhook_host(url),
                       type(exc).__name__)
        return False
    except Exception:  # noqa: BLE001 - a notification must never break a run
        logger.warning("No se pudo notificar al webhook %s: error inesperado",
                       webhook_host(url), exc_info=False)
        return False
    if not 200 <= resp.status_code < 300:
        logger.warning("El webhook %s respondió HTTP %s", webhook_host(url), resp.status_code)
        return False
    return True
