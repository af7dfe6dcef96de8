"""Schema migrations of our own tables, run by Alembic from code (no alembic.ini).

The revisions live in `migrations/versions/`. Alembic records the applied one in
`oppen_alembic_version`, not in its default `alembic_version`, so a host application
that uses Alembic itself never sees ours, nor we its. Only our four tables are ever
migrated; the host application's tables are read, never altered.

`upgrade` is what `python -m sync init-db` runs (through `schema.init_db`); the console
asks `needs_upgrade` and shows UPGRADE_NEEDED_MESSAGE instead of failing on a missing
column. Writing a new revision: see `migrations/README.md`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine

from ..errors import ConfigError
from . import schema

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "oppen_alembic_version"
# The tables the migrations own; everything else in the database is someone else's.
OWN_TABLE_NAMES = frozenset(t.name for t in schema.OWN_TABLES)

UPGRADE_NEEDED_MESSAGE = ("La base de datos necesita actualizarse: ejecutá "
                          "`python -m sync init-db`")
NEWER_SCHEMA_MESSAGE = ("La base de datos fue actualizada por una versión más nueva de este "
                        "programa (revisión {revision}): instalá esa versión")

# MySQL DDL commits on its own, so two init-db at once would interleave their ALTERs;
# a named lock (held per session) makes the second one wait and then find nothing to do.
# SQLite needs none: the upgrade is one BEGIN IMMEDIATE transaction.
_LOCK_NAME = "oppen_alembic_upgrade"
_LOCK_TIMEOUT_S = 600


def include_name(name: str | None, type_: str, parent_names) -> bool:
    """Alembic's filter of what it reflects: our tables only (autogenerate must never
    touch the host's, nor Alembic's own version tables)."""
    if type_ == "table":
        return name in OWN_TABLE_NAMES
    return True


def include_object(obj, name: str | None, type_: str, reflected: bool, compare_to) -> bool:
    """Alembic's filter of what schema.metadata declares: our tables only."""
    if type_ == "table":
        return name in OWN_TABLE_NAMES
    return True


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration, built in code; migrations run on `connection`."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    """The latest revision this program knows."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _context(conn: Connection) -> MigrationContext:
    return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})


def _known(revision: str) -> bool:
    return revision in {s.revision for s in
                        ScriptDirectory.from_config(alembic_config()).walk_revisions()}


def current(engine: Engine) -> str | None:
    """The revision the database is at; None before the first `upgrade` (an empty
    database, or one made before migrations existed)."""
    with schema.reading(engine) as conn:
        return _context(conn).get_current_revision()


def needs_upgrade(engine: Engine) -> bool:
    """True when `upgrade` has something to do (including on an empty database)."""
    revision = current(engine)
    return revision != head() and (revision is None or _known(revision))


def check(engine: Engine) -> str | None:
    """The one line a person must read before using this database, or None if it is
    ready: UPGRADE_NEEDED_MESSAGE, or that the database is newer than this program."""
    revision = current(engine)
    if revision == head():
        return None
    if revision is not None and not _known(revision):
        return NEWER_SCHEMA_MESSAGE.format(revision=revision)
    return UPGRADE_NEEDED_MESSAGE


@contextlib.contextmanager
def _exclusive(conn: Connection) -> Iterator[None]:
    if conn.dialect.name not in ("mysql", "mariadb"):
        yield
        return
    got = conn.exec_driver_sql("SELECT GET_LOCK(%s, %s)", (_LOCK_NAME, _LOCK_TIMEOUT_S)).scalar()
    conn.commit()
    if got != 1:
        raise ConfigError("Otra actualización de la base de datos está en curso: "
                          "esperá a que termine y volvé a intentar")
    try:
        yield
    finally:
        conn.exec_driver_sql("SELECT RELEASE_LOCK(%s)", (_LOCK_NAME,))
        conn.commit()


def upgrade(engine: Engine) -> list[str]:
    """Apply the revisions the database is missing; returns them, oldest first.

    A database whose tables were made before migrations existed is adopted by the
    baseline revision (it creates only what is missing) with every row in place.
    """
    applied: list[str] = []
    with engine.connect() as conn, _exclusive(conn):
        with conn.begin():
            revision = _context(conn).get_current_revision()
            if revision is not None and not _known(revision):
                raise ConfigError(NEWER_SCHEMA_MESSAGE.format(revision=revision))
            cfg = alembic_config(conn)
            cfg.attributes["applied"] = applied
            command.upgrade(cfg, "head")
    return applied


def differences(engine: Engine) -> list:
    """What Alembic's autogenerate sees between the database and `schema.metadata`
    (our tables only); empty when the migrations and the declared schema agree."""
    with schema.reading(engine) as conn:
        ctx = MigrationContext.configure(conn, opts={
            "version_table": VERSION_TABLE, "include_name": include_name,
            "include_object": include_object,
            "compare_type": True, "compare_server_default": True})
        return compare_metadata(ctx, schema.metadata)
