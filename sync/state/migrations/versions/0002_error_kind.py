"""error_kind on invoices and attempts (backfilled); oppen_attempts.oppen_invoice_id.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24

`error_kind` says why an invoice (or one attempt) did not get into Oppen, in the fixed
vocabulary of schema.ERROR_KINDS, and is NULL exactly when there is no error. Rows
written before it are classified here the way the console classified them until now
(matching our own Spanish messages, which this package wrote, plus the HTTP status
and, for attempts, their `outcome`); from now on the writer stores the kind with the
error. The kinds are spelled out below rather than imported: a revision is frozen.

`oppen_attempts.invoice_id` becomes `oppen_invoice_id`: it holds an oppen_invoices.id,
and "invoice_id" elsewhere means a facturas_trns id. Its index keeps its name.
"""
from alembic import op
import sqlalchemy as sa

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

KIND_LENGTH = 20

invoices = sa.table("oppen_invoices", sa.column("state", sa.String),
                    sa.column("last_error", sa.Text), sa.column("last_http_status", sa.Integer),
                    sa.column("error_kind", sa.String))
attempts = sa.table("oppen_attempts", sa.column("outcome", sa.String),
                    sa.column("error", sa.Text), sa.column("http_status", sa.Integer),
                    sa.column("error_kind", sa.String))


def _by_message(error, status) -> list:
    """The kinds our own error messages and Oppen's status say (sync/oppen/client.py
    words them): the CASE branches shared by both tables."""
    return [
        (sa.or_(status == 409, sa.func.lower(error).like("%duplicate%")), "duplicate"),
        (error.like("%Error de autenticación%"), "auth"),
        (sa.or_(error.like("%Error de conexión%"), error.like("%Oppen no responde%"),
                error.like("%respuesta ilegible%")), "transport"),
        # A lookup Oppen answered without settling it (LookupRefused): a person decides.
        (error.like("No se pudo verificar en Oppen%"), "rejected"),
        (sa.or_(status.in_((408, 429)), status >= 500), "transport"),
        (status.is_not(None), "rejected"),
    ]


def _backfill() -> None:
    i = invoices.c
    op.execute(invoices.update().where(i.last_error.is_not(None)).values(error_kind=sa.case(
        (i.state == "invalid", "invalid"),
        (i.last_error.like("Datos inválidos%"), "invalid"),
        (i.state == "conflict", "conflict"),
        *_by_message(i.last_error, i.last_http_status),
        else_="unknown")))
    a = attempts.c
    op.execute(attempts.update().where(a.error.is_not(None)).values(error_kind=sa.case(
        (a.outcome == "duplicate", "duplicate"),
        (a.outcome == "rejected", "rejected"),
        (a.outcome == "auth", "auth"),
        (a.outcome == "refused", "transport"),     # surely not applied (refused, 429)
        (a.outcome == "conflict", "conflict"),
        *_by_message(a.error, a.http_status),
        # "unknown" is what a post records for a transport error that may have applied.
        (a.outcome == "unknown", "transport"),
        else_="unknown")))


def upgrade() -> None:
    with op.batch_alter_table("oppen_attempts") as batch:
        batch.alter_column("invoice_id", new_column_name="oppen_invoice_id",
                           existing_type=sa.BigInteger(), existing_nullable=False)
        batch.add_column(sa.Column("error_kind", sa.String(KIND_LENGTH), nullable=True))
    with op.batch_alter_table("oppen_invoices") as batch:
        batch.add_column(sa.Column("error_kind", sa.String(KIND_LENGTH), nullable=True))
    _backfill()
    # After the backfill: building the index once is cheaper than updating it per row.
    with op.batch_alter_table("oppen_invoices") as batch:
        batch.create_index("ix_oppen_invoices_error_kind", ["target", "error_kind", "fecha"])


def downgrade() -> None:
    with op.batch_alter_table("oppen_invoices") as batch:
        batch.drop_index("ix_oppen_invoices_error_kind")
        batch.drop_column("error_kind")
    with op.batch_alter_table("oppen_attempts") as batch:
        batch.drop_column("error_kind")
        batch.alter_column("oppen_invoice_id", new_column_name="invoice_id",
                           existing_type=sa.BigInteger(), existing_nullable=False)
