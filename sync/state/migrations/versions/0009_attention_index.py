"""An index for the invoices that ran out of automatic tries.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-25

Monitoreo lists the invoices waiting to reach Oppen on their own, those that "requieren
atención" first. Nothing indexed `attention_at`, so on a chain's history MariaDB read
every unsent invoice to find the few that need a person (1.7–2 s on a million). With
(target, attention_at) they are a short index range; the rest come in due order from
ix_oppen_invoices_due. No row changes. Frozen: the columns are spelled out here.
"""
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_oppen_invoices_attention", "oppen_invoices", ["target", "attention_at"])


def downgrade() -> None:
    op.drop_index("ix_oppen_invoices_attention", table_name="oppen_invoices")
