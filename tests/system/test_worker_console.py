"""What the console shows of the worker (Streamlit's AppTest over a real demo database and
a real sandbox): Monitoreo's automatic sending (Oppen down, the open alerts, workers and
their heartbeat, the queue and cancelling from it, the next retry, why each invoice
waits), and the auditor's one sentence when an audit meets a stopped Oppen."""

from __future__ import annotations

import datetime as dt

import bcrypt
import pytest
import sqlalchemy as sa

from sync import actions, background, demo
from sync.state import queue, read_models, schema, workers

from ui_helpers import ANA, BETO, ENV_KEYS, ROOT, run_until, texts


@pytest.fixture
def console(monkeypatch, tmp_path, sandbox, password):
    url = f"sqlite:///{tmp_path / 'console.sqlite3'}"
    engine = schema.make_engine(url)
    schema.init_db(engine, source_tables=True)
    demo.load_demo(engine, today=read_models.local_today())
    for key in ENV_KEYS + ["OPPEN_RECONCILE_AT"]:
        monkeypatch.delenv(key, raising=False)
    users = tmp_path / "secrets.toml"
    lines = []
    for user in (ANA, BETO):
        digest = bcrypt.hashpw(b"clave-de-prueba", bcrypt.gensalt(4)).decode()
        lines += [f"[users.{user.username}]", f'name = "{user.name}"', f'role = "{user.role}"',
                  f'password_hash = "{digest}"', ""]
    users.write_text("\n".join(lines), encoding="utf-8")
    for key, value in {"DATABASE_URL": url, "OPPEN_ENV": "sandbox",
                       "OPPEN_BASE_URL": sandbox.url, "OPPEN_USERNAME": "API",
                       "OPPEN_PASSWORD": password, "OPPEN_SECRETS_FILE": str(users),
                       "OPPEN_TIMEOUT": "2", "OPPEN_BACKOFF_BASE": "0.001",
                       "OPPEN_BACKOFF_CAP": "0.01", "OPPEN_WORKER_POLL": "0.2",
                       "OPPEN_RETRY_DELAYS": "60", "OPPEN_MAX_ATTEMPTS": "2",
                       "OPPEN_RECONCILE_AT": "off"}.items():
        monkeypatch.setenv(key, value)
    yield engine
    background.stop_embedded_workers()
    engine.dispose()


def page(script: str, user):
    from streamlit.testing.v1 import AppTest
    at = AppTest.from_file(str(ROOT / script), default_timeout=30)
    at.session_state["user"] = user
    return at


def yesterday():
    return read_models.local_today() - dt.timedelta(days=1)


def test_an_audit_that_meets_a_stopped_oppen_reads_one_plain_sentence(console, sandbox):
    from sync.settings import load_settings
    sandbox.stop_instance()
    settings = load_settings()
    # What "Marcar auditado" does: the audit is committed and its sync queued...
    started = background.start_audit(console, settings, user=ANA, local="MATRIZ",
                                      fecha=yesterday())
    at = page("pages/auditoria.py", ANA)
    at.session_state["runs_auditoria"] = {started.run_id: ""}   # (live.track)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    # ...and the console's own worker (a process it started) runs it.
    run_until(at, lambda a: any("se reintenta automáticamente" in w.value for w in a.warning),
              what="the auditor's sentence")
    [message] = [w.value for w in at.warning if "Oppen no responde" in w.value]
    assert message.endswith("Oppen no responde; se reintenta automáticamente y el "
                            "administrador fue avisado.")
    assert message.startswith(f"Local MATRIZ marcado como auditado para "
                              f"{yesterday().isoformat()}")
    [alive] = workers.live(console, "sandbox/ApiNg", 120)
    assert alive["embedded"] is True


def test_monitoreo_shows_workers_queue_next_retry_and_why_each_invoice_waits(console, sandbox):
    from sync.settings import load_settings
    settings = load_settings()
    sandbox.stop_instance()
    actions.mark_audited(console, settings, "MATRIZ", yesterday(), "ana")   # Oppen down
    with console.begin() as conn:
        queued = queue.enqueue(conn, target=settings.target, kind="resend",
                               days=[("PALERMO", yesterday())], username="beto", reason="x")
    # A worker elsewhere, alive: the console does not start its own.
    workers.register(console, worker_id="srv-1", target=settings.target, host="srv",
                     pid=4242, embedded=False)
    at = page("pages/monitoreo.py", BETO).run()
    assert not at.exception, [e.value for e in at.exception]
    shown = texts(at)
    assert any(e.startswith("Oppen no responde desde ") and "Próxima prueba de conexión" in e
               for e in shown)
    assert any("no responde: la sincronización de MATRIZ" in w for w in shown)
    metrics = [m.value for m in at.metric][:4]
    assert metrics[:3] == ["1", "1", "5"]
    workers_table = next(d.value for d in at.dataframe if "Worker" in d.value.columns)
    assert list(workers_table["Worker"]) == ["srv-1"]
    assert list(workers_table["Tipo"]) == ["servicio"]
    queue_table = next(d.value for d in at.dataframe if "N.º" in d.value.columns)
    assert list(queue_table["N.º"]) == [queued]
    assert list(queue_table["Estado"]) == ["en cola"]
    waiting = next(d.value for d in at.dataframe if "Por qué espera" in d.value.columns)
    assert len(waiting) == 5
    assert all(w.startswith("Oppen no responde desde ") and "se envía sola cuando vuelva" in w
               for w in waiting["Por qué espera"])
    assert background.ensure_worker(console, settings)["embedded"] is False

    at.selectbox(key="monitoreo_cancelar_id").select(queued).run()
    at.button(key="monitoreo_cancelar").click().run()
    assert not at.exception
    assert any(f"Sincronización {queued} cancelada: no llegó a empezar." in s.value
               for s in at.success)
    with console.connect() as conn:
        assert conn.execute(sa.select(schema.oppen_runs.c.state).where(
            schema.oppen_runs.c.id == queued)).scalar() == "cancelled"
