"""The console's database: the embedded default is prepared once per process (tables,
demo data), and a console started by hand audits against its embedded sandbox.
`wiring.prepare_database` is tested without Streamlit; the pages in AppTest against
real SQLite files."""

from __future__ import annotations

import sqlalchemy as sa

from sync import wiring
from sync.settings import load_settings
from sync.state import schema

from ui_helpers import ANA, run_until, texts


def facturas(url: str) -> int:
    engine = schema.make_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count())
                                .select_from(schema.facturas_trns)).scalar()
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
        wiring.prepare_database(engine, settings)
        loaded = facturas(url)
        assert loaded > 0
        wiring.prepare_database(engine, settings)   # never loaded twice
        assert facturas(url) == loaded
    finally:
        engine.dispose()


# --- in the console --------------------------------------------------------------------------------

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
    at.selectbox(key="auditoria_local").select("MATRIZ").run()
    at.button(key="marcar_auditado").click().run()
    assert not at.exception and not at.error, texts(at)
    run_until(at, lambda a: any("5 factura(s) enviada(s) a Oppen exitosamente" in s.value
                                for s in a.success), what="the seed's result message")
