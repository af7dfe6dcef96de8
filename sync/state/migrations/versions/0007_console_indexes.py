"""The console's indexes on a chain's history: three indexes get trailing columns.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25

With a million invoices the console's pages were slow on MariaDB because each of these
queries found its rows through an index and then read every row for one or two more
columns. Each index keeps its name and its leading columns (every query that used it
still can) and gains the columns those queries read, so they read the index alone:

- ix_oppen_invoices_state (target, state, fecha) + local, reference: "Facturas fallidas"
  sorts its page of problem rows from the index alone;
- ix_oppen_invoices_fecha (target, fecha) + local, state, monto: the per-day, per-local
  and per-state counts and amounts of a period (Locales auditados, Monitoreo, Auditoría);
- ix_oppen_attempts_invoice (oppen_invoice_id) + kind, at: each invoice's last attempt
  and its attempts by kind (Facturas fallidas).

No row changes; CREATE INDEX reads the table as it is. Downgrading puts the narrower
indexes back. Frozen: the columns are spelled out here, not imported from schema.py.
"""
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# name: (table, columns before, columns after)
INDEXES = {
    "ix_oppen_invoices_state": ("oppen_invoices", ["target", "state", "fecha"],
                                ["target", "state", "fecha", "local", "reference"]),
    "ix_oppen_invoices_fecha": ("oppen_invoices", ["target", "fecha"],
                                ["target", "fecha", "local", "state", "monto"]),
    "ix_oppen_attempts_invoice": ("oppen_attempts", ["oppen_invoice_id"],
                                  ["oppen_invoice_id", "kind", "at"]),
}


def _replace(which: int) -> None:
    for name, (table, *columns) in INDEXES.items():
        # Dropped first, then built again under the same name: MariaDB's ALTER builds an
        # index in place, without copying the table or blocking its writes.
        op.drop_index(name, table_name=table)
        op.create_index(name, table, columns[which])


def upgrade() -> None:
    _replace(1)


def downgrade() -> None:
    _replace(0)
