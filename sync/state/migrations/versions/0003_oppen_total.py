"""Oppen's Total kept per invoice; a client SerNr that an admin can reassign.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25

`total_oppen` is the Total Oppen holds for the invoice (VAT included, read from the
answer to our POST or from a lookup): later documents must balance with it, and it
differs from our amount by a cent at times. Rows sent before this revision have none
(NULL) until reconciliation reads it back.

`client_sernr` is the SerNr we send when the profile assigns it, when an admin gave the
invoice a new one (Oppen held our SerNr under another number: a restored backup, two
databases with one base). NULL means the usual one, sernr_base + our row id.
"""
from alembic import op
import sqlalchemy as sa

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("oppen_invoices") as batch:
        batch.add_column(sa.Column("total_oppen", sa.Numeric(15, 2), nullable=True))
        batch.add_column(sa.Column("client_sernr", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("oppen_invoices") as batch:
        batch.drop_column("client_sernr")
        batch.drop_column("total_oppen")
