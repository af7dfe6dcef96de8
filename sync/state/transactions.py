"""Short write transactions that survive the database's own refusals: a MariaDB
deadlock (1213) or lock wait timeout (1205) rolls the whole transaction back, and
trying it again is the documented answer. Only for functions that are one
transaction each (all of the binder's and runs' writers): a retry then repeats
nothing that was kept.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import OperationalError

logger = logging.getLogger(__name__)

RETRYABLE_MYSQL = (1205, 1213)   # lock wait timeout, deadlock
ATTEMPTS = 4

F = TypeVar("F", bound=Callable)


def _retryable(exc: OperationalError) -> bool:
    code = getattr(exc.orig, "args", (None,))[0] if exc.orig is not None else None
    return code in RETRYABLE_MYSQL


def retry_deadlocks(fn: F) -> F:
    """Run `fn` again (up to ATTEMPTS times, with a short random pause) when the
    database rolled its transaction back to break a deadlock."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return fn(*args, **kwargs)
            except OperationalError as exc:
                if attempt == ATTEMPTS or not _retryable(exc):
                    raise
                logger.info("La base de datos deshizo una transacción (%s); se reintenta",
                            exc.orig.args[0])
                time.sleep(random.uniform(0.01, 0.05) * attempt)
    return wrapper  # type: ignore[return-value]
