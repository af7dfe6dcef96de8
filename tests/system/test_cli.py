"""The CLI, invoked as a real process: what it prints and its exit codes."""

from __future__ import annotations

import json

import pytest

from helpers import DAY, add_factura, close_day
from faults import ROOT, cli_env, run_cli

D = DAY.isoformat()


@pytest.fixture
def env(settings, engine):
    return cli_env(settings, OPPEN_TIMEOUT="2")


def test_audit_json_is_the_seed_dict_and_exit_codes(env, engine, sandbox):
    close_day(engine, "MATRIZ")
    add_factura(engine, "MATRIZ", "A", "5", "1691", 15000)
    close_day(engine, "PALERMO")
    add_factura(engine, "PALERMO", "A", "5", "1692", 10)
    sandbox.add_invoice({"OfficialSerNr": "0005-00001692", "TransDate": D,
                         "Items": [{"ArtCode": "1", "Qty": 1, "Price": 1.0}]})

    ok = run_cli(["audit", "MATRIZ", D, "--user", "ana", "--json"], env)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout) == {
        "success": True,
        "msg": f"Local MATRIZ marcado como auditado para {D}\n"
               "✅ 1 factura(s) enviada(s) a Oppen exitosamente",
        "oppen_sync": {"total": 1, "exitosas": 1, "fallidas": 0, "errores": [], "success": True}}

    partial = run_cli(["audit", "PALERMO", D], env)
    assert partial.returncode == 3
    assert "Primer error: Error HTTP 409: Duplicate invoice" in partial.stdout

    again = run_cli(["audit", "MATRIZ", D], env)
    assert again.returncode == 1
    assert again.stderr.strip() == f"Error: El local MATRIZ ya está auditado para {D}"

    status = run_cli(["status", "MATRIZ", D, "--json"], env)
    assert status.returncode == 0
    (row,) = json.loads(status.stdout)
    assert (row["referencia"], row["estado"], row["intentos"]) == ("A 0005-00001691", "sent", 1)
    held = {i["OfficialSerNr"]: i["SerNr"] for i in sandbox.invoices()}
    assert row["sernr"] == held["0005-00001691"]
    assert row["ultimo_error"] is None


@pytest.mark.parametrize("args, code, text", [
    (["audit", "MATRIZ", "05/01/2025"], 2, "Fecha inválida"),
    (["audit", "MATRIZ", "2025-02-30"], 2, "Fecha inválida"),
    (["audit", "NADIE", D], 1, "El local NADIE no existe"),
    (["audit"], 2, "faltan argumentos"),
    (["frobnicate"], 2, "opción inválida"),
    (["resend", "--invoice", "abc"], 2, "no es un entero"),
    (["resend", "--invoice", "424242"], 1, "No existe la factura 424242"),
    (["preview", "NADIE", D], 1, "El local NADIE no existe"),
    (["status", "MATRIZ", "9999-12-31"], 2, "Fecha fuera de rango"),
    (["resend", "--invoice", "99999999999999999999999"], 2, "Número de factura inválido"),
])
def test_bad_input_gets_one_spanish_line(env, engine, args, code, text):
    result = run_cli(args, env)
    assert result.returncode == code
    assert text in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("name, value, text", [
    ("OPPEN_TIMEOUT", "abc", "OPPEN_TIMEOUT"),
    ("OPPEN_ENV", "prod", "OPPEN_ENV"),
    ("DATABASE_URL", "nonsense", "DATABASE_URL"),
    ("OPPEN_BASE_URL", "http://oppen.example.com", "https"),
    ("OPPEN_BASE_URL", "https://ng.oppen.io", "OPPEN_ENV=sandbox"),
    ("DATABASE_URL", "mysql+pymysql://ventas:Pa@ss:W0rd99@db.local/ventas", "DATABASE_URL"),
    ("DATABASE_URL", "sqlite:////etc/passwd/x.db", "no se puede crear la carpeta"),
])
def test_bad_configuration_names_the_setting(env, name, value, text):
    result = run_cli(["status"], dict(env, **{name: value}))
    assert result.returncode == 2
    assert result.stderr.startswith("Error de configuración:")
    assert text in result.stderr
    assert "Traceback" not in result.stderr
    assert "W0rd99" not in result.stderr  # never a piece of a database password


def test_missing_schema_and_unreachable_database(settings, tmp_path):
    env = cli_env(settings, DATABASE_URL=f"sqlite:///{tmp_path / 'empty.sqlite3'}")
    result = run_cli(["status"], env)
    assert result.returncode == 2 and "init-db" in result.stderr
    env = cli_env(settings, DATABASE_URL="mysql+pymysql://nobody:secret@127.0.0.1:1/x")
    result = run_cli(["status"], env)
    assert result.returncode == 2
    assert "no se pudo usar la base de datos" in result.stderr
    assert "secret" not in result.stderr and "Traceback" not in result.stderr


def test_init_db_never_drops_data(settings, tmp_path):
    env = cli_env(settings, DATABASE_URL=f"sqlite:///{tmp_path / 'd.sqlite3'}")
    first = run_cli(["init-db", "--demo"], env)
    assert first.returncode == 0 and "Demo:" in first.stdout
    second = run_cli(["init-db", "--demo"], env)
    assert "ninguna (ya existían)" in second.stdout
    assert "la base ya tiene facturas" in second.stdout


def test_preview_sends_nothing(env, engine, sandbox):
    close_day(engine, "BELGRANO")
    add_factura(engine, "BELGRANO", "B", "7", "501", 2500)
    add_factura(engine, "BELGRANO", "B", "7", "5X", 10)
    result = run_cli(["preview", "BELGRANO", D, "--json"], env)
    assert result.returncode == 0
    data = json.loads(result.stdout)
    assert (data["validas"], data["invalidas"]) == (1, 1)
    bad = [i for i in data["items"] if not i["valid"]][0]
    assert bad["problems"][0]["field"] == "nro_factura"
    good = [i for i in data["items"] if i["valid"]][0]
    assert good["payload"]["OfficialSerNr"] == "0007-00000501"
    assert sandbox.request_log() == []


def test_sandbox_command_serves_until_terminated(settings, tmp_path):
    import signal
    import socket
    import time

    import requests

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = cli_env(settings, OPPEN_PASSWORD="sandbox-pass-123")
    from faults import start_cli
    proc = start_cli(["sandbox", "--port", str(port), "--error-rate", "0",
                      "--store", str(tmp_path / "box.jsonl")], env)
    try:
        url = f"http://127.0.0.1:{port}/genericapi/ApiNg/authenticate"
        for _ in range(100):
            try:
                resp = requests.post(url, json={"username": "API", "password": "sandbox-pass-123"},
                                     timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.05)
        assert resp.status_code == 200 and resp.json()["ok"] is True
        bad = requests.post(url, json={"username": "API", "password": "nope"}, timeout=1)
        assert bad.status_code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert f"http://127.0.0.1:{port}" in out
    assert "sandbox-pass-123" not in out  # a configured password is never printed


def test_bench_runs_end_to_end_on_a_small_load(tmp_path):
    """Not a timing test (speed targets live in the benchmark): the command works and
    reports every figure, with both runs delivering every invoice."""
    import os
    import subprocess
    import sys
    env = dict(os.environ, OPPEN_SECRETS_FILE=str(tmp_path / "none.toml"))
    for key in ("DATABASE_URL", "OPPEN_BASE_URL", "OPPEN_ENV"):
        env.pop(key, None)
    result = subprocess.run([sys.executable, "-m", "sync", "bench", "--n", "40", "--latency-ms",
                             "1", "--concurrency", "4", "--json", str(tmp_path / "b.json")],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for text in ("secuencial", "aceleración", "ventana/ideal", "Latencia 0"):
        assert text in result.stdout
    report = json.loads((tmp_path / "b.json").read_text())
    assert report["sending"]["n"] == 40 and report["sending"]["project_s"] > 0
