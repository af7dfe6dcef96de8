"""Every error the sync package raises, grouped by what the caller should do next.

    SyncError                      anything this package refuses or cannot do
    ├── ConfigError                a setting is missing or wrong: fix the configuration
    ├── AuditRefused               a validation of "marcar auditado" said no
    ├── RunInProgress              another run holds this local/day: wait for it
    ├── NotFound                   the local, day or invoice asked for does not exist
    ├── LoginFailed                wrong user name or password (never says which)
    ├── PermissionDenied           the user's role does not allow the action
    └── OppenError (OppenAPIError) Oppen did not do what was asked
        ├── OppenAuthError         credentials refused: nothing was sent
        ├── OppenTransportError    no usable answer (timeout, dropped connection, 5xx,
        │                          HTML 502, 429): the request may or may not have
        │                          been applied, so it is retryable but ambiguous
        └── OppenRejected          Oppen answered "no" on purpose: retrying won't help
            ├── OppenDuplicate     Oppen already holds that invoice number
            └── LookupRefused      Oppen answered a lookup, but not in a way that says
                                   whether it holds the invoice: a person decides

Every message is Spanish (or Oppen's own words), and none ever carries a password or
a token: the client builds them from status codes and response bodies only.
"""

from __future__ import annotations


class SyncError(Exception):
    """Root of the package's errors; `str(exc)` is a message a person can read."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class ConfigError(SyncError):
    """A setting is missing or wrong; the message names the setting."""


class AuditRefused(SyncError):
    """One of the seed's validations refused to mark a local/day audited."""


class RunInProgress(SyncError):
    """Another sync or resend holds the local/day."""


class NotFound(SyncError):
    """A local, day or invoice that does not exist."""


class LoginFailed(SyncError):
    """Wrong user name or password (the message never says which)."""


class PermissionDenied(SyncError):
    """The user's role does not allow the action."""


class OppenError(SyncError):
    """Oppen answered badly or not at all. Carries what we know of the exchange."""

    def __init__(self, message: str, *, status: int | None = None, body: str | None = None,
                 retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.body = body
        self.retry_after = retry_after


# The seed names its exception OppenAPIError; keep that name working.
OppenAPIError = OppenError


class OppenAuthError(OppenError):
    """Authentication refused (or answered with no token)."""


class OppenTransportError(OppenError):
    """No trustworthy answer. `maybe_applied` is False only when Oppen surely did
    nothing (connection refused, 429): otherwise look the invoice up before resending."""

    def __init__(self, message: str, *, maybe_applied: bool = True, **kwargs):
        super().__init__(message, **kwargs)
        self.maybe_applied = maybe_applied


class OppenRejected(OppenError):
    """A permanent rejection (validation, unknown linked record, bad number)."""


class OppenDuplicate(OppenRejected):
    """Oppen already holds an invoice with this OfficialSerNr (or SerNr)."""


class LookupRefused(OppenRejected):
    """Oppen answered a lookup, but not in a way that says whether it holds the invoice."""


class SendWithheld(SyncError):
    """The caller withdrew a request right before it left (its `proceed` check said no):
    nothing reached Oppen. The connection held a request begun and is closed."""

    def __init__(self) -> None:
        super().__init__("No se envió: la sincronización ya no tiene este local/día")
