"""Oppen sync: the plain-Python core of the operations console (never imports Streamlit).

Modules, one role each: `config` (settings), `mapping` (pure row → payload),
`client` (the only HTTP), `db` and `store` (tables and state), `exporter` (a run),
`service` and `audit` (what the console and CLI call), `sandbox` (a fake Oppen),
`demo` (demo data), `cli` (python -m sync).
"""

from .errors import (AuditRefused, ConfigError, NotFound, OppenAPIError, OppenAuthError,
                     OppenDuplicate, OppenError, OppenRejected, OppenTransportError,
                     RunInProgress, SyncError)

__all__ = ["AuditRefused", "ConfigError", "NotFound", "OppenAPIError", "OppenAuthError",
           "OppenDuplicate", "OppenError", "OppenRejected", "OppenTransportError",
           "RunInProgress", "SyncError"]
