"""Alembic's environment for our own tables (never the host application's).

`sync.state.migrate` runs it with a connection already open (in
`config.attributes["connection"]`) and commits when every revision has run. Nothing
here reads alembic.ini or configures logging: the program that calls us owns both.
"""

from alembic import context

from sync.state import migrate, schema

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("Las migraciones se ejecutan con `python -m sync init-db` "
                       "(sync.state.migrate), no con el comando alembic")
applied = config.attributes.get("applied")


def _record(*, ctx, step, heads, run_args) -> None:
    if applied is not None and step.is_upgrade:
        applied.append(step.up_revision_id)


context.configure(
    connection=connection,
    target_metadata=schema.metadata,
    version_table=migrate.VERSION_TABLE,
    include_name=migrate.include_name,
    include_object=migrate.include_object,
    compare_type=True,
    compare_server_default=True,
    # SQLite alters a table by copying it; autogenerate writes batch operations so a
    # new revision works there as on MySQL.
    render_as_batch=True,
    on_version_apply=_record,
)
with context.begin_transaction():
    context.run_migrations()
