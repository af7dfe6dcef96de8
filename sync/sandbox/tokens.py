"""The sandbox's bearer tokens: issued by authenticate, checked on every API call, with
the expiry and use limits the faults set. Tokens live in memory only and are never
logged or written anywhere.
"""

from __future__ import annotations

import secrets
import threading
import time

# Past this many live tokens, expired ones are swept when a new one is issued.
_SWEEP_ABOVE = 1000


class TokenBook:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[str, list] = {}  # token -> [issued_at (monotonic), uses]

    def issue(self, ttl: float) -> str:
        token = secrets.token_urlsafe(32)
        now = time.monotonic()
        with self._lock:
            if len(self._tokens) > _SWEEP_ABOVE:
                for old in [t for t, (issued, _) in self._tokens.items() if now - issued >= ttl]:
                    del self._tokens[old]
            self._tokens[token] = [now, 0]
        return token

    def use(self, authorization: str, *, ttl: float, max_uses: int) -> bool:
        """Whether the Authorization header carries a live token (and count the use)."""
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return False
        now = time.monotonic()
        with self._lock:
            entry = self._tokens.get(token)
            if entry is None:
                return False
            # Measured against the ttl in force now, so shortening it expires old tokens.
            if now - entry[0] >= ttl:
                del self._tokens[token]
                return False
            if max_uses and entry[1] >= max_uses:
                return False
            entry[1] += 1
        return True

    def issued(self) -> list[str]:
        with self._lock:
            return list(self._tokens)

    def clear(self) -> None:
        with self._lock:
            self._tokens.clear()
