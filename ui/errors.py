"""The console's error boundary: whatever goes wrong in a page or in a person's action
becomes one Spanish message on screen, and the details go to the server's log. A
`SyncError` says its own message; the database and the unexpected say a fixed one.

Never a traceback on screen; st.stop() and st.rerun() pass through (they are not
Exceptions).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

import sqlalchemy as sa
import streamlit as st

from sync.errors import SyncError
from ui.formats import md

logger = logging.getLogger("console")

GENERIC_ERROR = ("Ocurrió un error inesperado. Quedó registrado en el log del servidor; "
                 "si se repite, avisá al equipo de sistemas.")
DB_ERROR = ("No se pudo usar la base de datos. Revisá DATABASE_URL y que el servidor de base "
            "de datos esté disponible.")


@contextlib.contextmanager
def guarded() -> Iterator[None]:
    """Wrap a page's body (or an action): an error becomes one message, and the page
    goes on after the `with` block."""
    try:
        yield
    except SyncError as exc:
        st.error(md(exc.message))
    except sa.exc.SQLAlchemyError:
        logger.exception("Error de base de datos en la consola")
        st.error(DB_ERROR)
    except Exception:  # noqa: BLE001 - never a traceback on screen
        logger.exception("Error inesperado en la consola")
        st.error(GENERIC_ERROR)


def action(fn: Callable[[], Any]) -> Any:
    """Run a person's action inside the boundary: its result, or None when it failed
    (the message is already on screen)."""
    with guarded():
        return fn()
    return None
