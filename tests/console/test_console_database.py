"""The console's database: the embedded default is prepared once per process (tables,
demo data), any other database is only checked, and one whose schema is behind says so
in one Spanish line with the command to run. `wiring.prepare_database` is tested
without Streamlit; the pages in AppTest against real SQLite files."""

from __future__ import annotations

import importlib.util

import sqlalchemy as sa

from sync import demo, wiring
from sync.settings import load_settings
from sync.state import migrate, read_models, schema

from ui_helpers import ANA, BETO, PAGES, ROOT, run_until, texts


def schema_before_migrations():
    """tests/db's frozen copy of the tables as main made them before migrations."""
    path = ROOT / "tests" / "db" / "fixtures" / "schema_before_migrations.py"
    spec = importlib.util.spec_from_file_location("schema_before_migrations", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def facturas(url: str) -> int:
    engine = schema.make_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count())
                                .select_from(schema.facturas_trns)).scalar()
    finally:
        engine.dispose()


def tables_of(url: str) -> set[str]:
    engine = schema.make_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def fresh_database(monkeypatch, tmp_path, *, demo: bool) -> str:
    url = f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
    monkeypatch.setenv("DATABASE_URL", url)
    if demo:
        monkeypatch.setenv("OPPEN_DEMO_DATA", "1")
    else:
        monkeypatch.delenv("OPPEN_DEMO_DATA", raising=False)
    return url


# --- without Streamlit ---------------------------------------------------------------------------

def test_the_embedded_default_gets_tables_and_demo_once(console_env, monkeypatch, tmp_path):
    url = fresh_database(monkeypatch, tmp_path, demo=True)
    settings = load_settings()
    engine = wiring.open_engine(settings)
    try:
        assert wiring.prepare_database(engine, settings) is None
        loaded = facturas(url)
        assert loaded > 0
        assert wiring.prepare_database(engine, settings) is None   # never loaded twice
        assert facturas(url) == loaded
    finally:
        engine.dispose()


def test_any_other_database_is_checked_never_changed(console_env, monkeypatch, tmp_path):
    url = fresh_database(monkeypatch, tmp_path, demo=False)
    settings = load_settings()
    engine = wiring.open_engine(settings)
    try:
        assert wiring.prepare_database(engine, settings) == migrate.UPGRADE_NEEDED_MESSAGE
        assert not {t.name for t in schema.OWN_TABLES} & tables_of(url)
        schema.init_db(engine)                  # what `python -m sync init-db` does
        assert wiring.prepare_database(engine, settings) is None
        assert facturas(url) == 0               # no demo data outside the default
    finally:
        engine.dispose()


# --- in the console --------------------------------------------------------------------------------

def test_a_database_to_upgrade_is_one_spanish_line_on_every_page(console_env, app,
                                                                 monkeypatch, tmp_path):
    """A database as the previous version made it: its tables predate migrations."""
    url = fresh_database(monkeypatch, tmp_path, demo=False)
    engine = schema.make_engine(url)
    schema_before_migrations().create(engine)
    demo.load_demo(engine, today=read_models.local_today())
    loaded = facturas(url)
    for page in PAGES:
        at = app(f"pages/{page}", BETO).run()
        assert not at.exception, [e.value for e in at.exception]
        assert [e.value for e in at.error] == [migrate.UPGRADE_NEEDED_MESSAGE], page
        assert "python -m sync init-db" in at.error[0].value
        assert len(at.dataframe) == 0 and len(at.metric) == 0 and len(at.button) == 0
    assert migrate.current(engine) is None   # the console upgraded nothing

    # Once upgraded, the next page view works: the refusal was not cached.
    schema.init_db(engine)
    engine.dispose()
    at = app("pages/auditoria.py", ANA).run()
    assert not at.exception and not at.error, texts(at)
    assert "MATRIZ" in list(at.dataframe[0].value["Local"])
    assert facturas(url) == loaded


def test_a_database_newer_than_the_program_says_so(console_env, app, monkeypatch, tmp_path):
    url = fresh_database(monkeypatch, tmp_path, demo=False)
    engine = schema.make_engine(url)
    schema.init_db(engine, source_tables=True)
    with engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {migrate.VERSION_TABLE} SET version_num = '9999'"))
    engine.dispose()
    at = app("pages/auditoria.py", ANA).run()
    assert not at.exception, [e.value for e in at.exception]
    assert [e.value for e in at.error] == [
        migrate.NEWER_SCHEMA_MESSAGE.format(revision="9999")]


def test_the_database_is_prepared_once_per_process_not_per_view(console_env, app,
                                                                monkeypatch, tmp_path):
    fresh_database(monkeypatch, tmp_path, demo=True)
    calls = []
    prepare = wiring.prepare_database

    def counting(engine, settings):
        calls.append(settings.database_url)
        return prepare(engine, settings)
    monkeypatch.setattr(wiring, "prepare_database", counting)
    for page in ("pages/auditoria.py", "pages/vista_previa.py", "pages/auditoria.py"):
        at = app(page, ANA).run()
        assert not at.exception and not at.error, texts(at)
    assert len(calls) == 1


def test_a_console_started_by_hand_audits_against_its_embedded_sandbox(console_env, app,
                                                                       monkeypatch, tmp_path):
    """No OPPEN_BASE_URL: the console starts its own sandbox, beside the database."""
    for key in ("OPPEN_BASE_URL", "OPPEN_USERNAME", "OPPEN_PASSWORD"):
        monkeypatch.delenv(key, raising=False)
    fresh_database(monkeypatch, tmp_path, demo=True)
    at = app("pages/auditoria.py", ANA).run()
    assert not at.exception, [e.value for e in at.exception]
    at.selectbox(key="local").select("MATRIZ").run()
    at.button(key="marcar_auditado").click().run()
    at.button(key="confirmar_auditado").click().run()
    assert not at.exception and not at.error, texts(at)
    run_until(at, lambda a: any("5 factura(s) enviada(s) a Oppen exitosamente" in s.value
                                for s in a.success), what="the seed's result message")
