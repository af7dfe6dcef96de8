"""The CLI: what it prints and its exit codes.

Most tests call `sync.cli.main` in-process (parsing and printing need no process of
their own); a few run `python -m sync` as a real process: the entry point and its exit
codes through sys.exit, and a server that stops on SIGTERM.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass

import pytest

from helpers import DAY, add_factura, close_day
from faults import cli_env, run_cli, start_cli
from sync.cli import main

D = DAY.isoformat()
COMMANDS = ["init-db", "audit", "preview", "resend", "status", "reconcile", "sandbox",
            "hash-password", "bench"]
ENGLISH = ("Usage:", "Options:", "Commands:", "Positional arguments", "Show this message",
           "Try '", "Invalid value", "No such", "Missing", "Got unexpected", "Traceback")


@dataclass
class Result:
    """What a run left: the fields of subprocess.CompletedProcess that the tests read."""
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(monkeypatch, capsys):
    """`cli(args, env)`: main(args) in this process, with these environment variables."""
    def run(args, env=None) -> Result:
        for key, value in (env or {}).items():
            monkeypatch.setenv(key, value)
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return Result(code, out, err)
    return run


@pytest.fixture
def env(settings, engine):
    return cli_env(settings, OPPEN_TIMEOUT="2")


def one_spanish_line(result: Result) -> str:
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not any(word in result.stderr + result.stdout for word in ENGLISH), result.stderr
    return result.stderr.strip()


def test_audit_json_is_the_seed_dict_and_exit_codes(cli, env, engine, sandbox):
    close_day(engine, "MATRIZ")
    add_factura(engine, "MATRIZ", "A", "5", "1691", 15000)
    close_day(engine, "PALERMO")
    add_factura(engine, "PALERMO", "A", "5", "1692", 10)
    sandbox.add_invoice({"OfficialSerNr": "0005-00001692", "TransDate": D,
                         "Items": [{"ArtCode": "1", "Qty": 1, "Price": 1.0}]})

    ok = cli(["audit", "MATRIZ", D, "--user", "ana", "--json"], env)
    assert ok.returncode == 0, ok.stderr
    assert ok.stderr == ""  # no log lines without -v
    assert json.loads(ok.stdout) == {
        "success": True,
        "msg": f"Local MATRIZ marcado como auditado para {D}\n"
               "✅ 1 factura(s) enviada(s) a Oppen exitosamente",
        "oppen_sync": {"total": 1, "exitosas": 1, "fallidas": 0, "errores": [], "success": True}}

    partial = cli(["audit", "PALERMO", D], env)
    assert partial.returncode == 3
    assert "Primer error: Error HTTP 409: Duplicate invoice" in partial.stdout

    again = cli(["audit", "MATRIZ", D], env)
    assert again.returncode == 1
    assert again.stderr.strip() == f"Error: El local MATRIZ ya está auditado para {D}"

    status = cli(["status", "MATRIZ", D, "--json"], env)
    assert status.returncode == 0
    (row,) = json.loads(status.stdout)
    assert (row["referencia"], row["estado"], row["intentos"]) == ("A 0005-00001691", "sent", 1)
    held = {i["OfficialSerNr"]: i["SerNr"] for i in sandbox.invoices()}
    assert row["sernr"] == held["0005-00001691"]
    assert row["ultimo_error"] is None

    text = cli(["status", "MATRIZ", D], env)
    assert text.returncode == 0
    assert "A 0005-00001691" in text.stdout and f"SerNr {row['sernr']}" in text.stdout


@pytest.mark.parametrize("args, code, text", [
    (["audit", "MATRIZ", "05/01/2025"], 2, "Fecha inválida"),
    (["audit", "MATRIZ", "2025-02-30"], 2, "Fecha inválida"),
    (["audit", "NADIE", D], 1, "El local NADIE no existe"),
    (["resend", "--invoice", "424242"], 1, "No existe la factura 424242"),
    (["preview", "NADIE", D], 1, "El local NADIE no existe"),
    (["status", "MATRIZ", "9999-12-31"], 2, "Fecha fuera de rango"),
    (["resend", "--invoice", "99999999999999999999999"], 2, "Número de factura inválido"),
])
def test_bad_input_gets_one_spanish_line(cli, env, engine, args, code, text):
    result = cli(args, env)
    assert result.returncode == code
    assert text in one_spanish_line(result)


# Usage errors are refused before the configuration is read: no database needed.
@pytest.mark.parametrize("args, line", [
    ([], "Error: faltan argumentos: COMANDO. Ayuda: python -m sync --help"),
    (["-v"], "Error: faltan argumentos: COMANDO. Ayuda: python -m sync --help"),
    (["audit"], "Error: faltan argumentos: local, fecha. Ayuda: python -m sync audit --help"),
    (["audit", "MATRIZ"], "Error: faltan argumentos: fecha. Ayuda: python -m sync audit --help"),
    (["frobnicate"], "Error: argumento COMANDO: opción inválida: 'frobnicate' (opciones: "
                     "'init-db', 'audit', 'preview', 'resend', 'status', 'reconcile', 'worker', "
                     "'sandbox', 'new-sernr', 'hash-password', 'bench'). Ayuda: python -m sync "
                     "--help"),
    (["--foo", "status"], "Error: argumentos no reconocidos: --foo. Ayuda: python -m sync --help"),
    (["audit", "MATRIZ", D, "extra"],
     "Error: argumentos no reconocidos: extra. Ayuda: python -m sync audit --help"),
    (["status", "-v"], "Error: argumentos no reconocidos: -v. Ayuda: python -m sync status --help"),
    (["status", "--js"], "Error: argumentos no reconocidos: --js (¿quisiste decir --json?). "
                         "Ayuda: python -m sync status --help"),
    (["audit", "MATRIZ", "2025-13-01"],
     "Error: argumento fecha: Fecha inválida: '2025-13-01' (se espera AAAA-MM-DD, "
     "p. ej. 2025-01-05). Ayuda: python -m sync audit --help"),
    (["resend", "--invoice", "abc"],
     "Error: argumento --invoice: no es un entero: 'abc'. Ayuda: python -m sync resend --help"),
    (["resend", "--invoice"],
     "Error: argumento --invoice: falta el valor. Ayuda: python -m sync resend --help"),
    (["status", "--json=x"],
     "Error: argumento --json: no lleva valor. Ayuda: python -m sync status --help"),
    (["sandbox", "--latency-ms", "x"], "Error: argumento --latency-ms: no es un número: 'x'. "
                                       "Ayuda: python -m sync sandbox --help"),
    (["sandbox", "--error-rate", "2"], "Error: argumento --error-rate: debe estar entre 0 y 1 "
                                       "(se recibió 2). Ayuda: python -m sync sandbox --help"),
    (["sandbox", "--port", "70000"], "Error: argumento --port: debe estar entre 0 y 65535 "
                                     "(se recibió 70000). Ayuda: python -m sync sandbox --help"),
    (["sandbox", "--duplicate-style", "x"],
     "Error: argumento --duplicate-style: opción inválida: 'x' (opciones: '409', 'real'). "
     "Ayuda: python -m sync sandbox --help"),
    (["bench", "--n", "0"], "Error: --n debe ser mayor que 0"),
    (["bench", "--latency-ms", "-1"],
     "Error: --latency-ms, --rows y --memory-n no pueden ser negativos"),
])
def test_usage_errors_are_one_spanish_line_with_exit_code_2(cli, args, line):
    result = cli(args)
    assert result.returncode == 2
    assert one_spanish_line(result) == line
    assert result.stdout == ""


def test_help_is_spanish_for_the_cli_and_every_command(cli):
    top = cli(["--help"])
    assert top.returncode == 0 and top.stderr == ""
    assert top.stdout.startswith("Uso: python -m sync [OPCIONES] COMANDO [ARGS]...")
    assert "Comandos:" in top.stdout and "Opciones:" in top.stdout
    listed = [line.split()[0] for line in top.stdout.split("Comandos:")[1].splitlines()
              if line.startswith("  ") and line.split()[0] in COMMANDS]
    assert listed == COMMANDS  # in the order of a day's work
    assert cli(["-h"]).stdout == top.stdout
    for command in COMMANDS:
        page = cli([command, "--help"])
        assert page.returncode == 0, command
        assert page.stdout.startswith(f"Uso: python -m sync {command} [OPCIONES]"), command
        assert "Opciones:" in page.stdout and "mostrar esta ayuda y salir" in page.stdout
        assert not any(word in page.stdout for word in ENGLISH), page.stdout
    assert "Argumentos:" in cli(["audit", "--help"]).stdout
    assert "--error-rate P" in cli(["sandbox", "--help"]).stdout


@pytest.mark.parametrize("name, value, text", [
    ("OPPEN_TIMEOUT", "abc", "OPPEN_TIMEOUT"),
    ("OPPEN_ENV", "prod", "OPPEN_ENV"),
    ("DATABASE_URL", "nonsense", "DATABASE_URL"),
    ("OPPEN_BASE_URL", "http://oppen.example.com", "https"),
    ("OPPEN_BASE_URL", "https://ng.oppen.io", "OPPEN_ENV=sandbox"),
    ("DATABASE_URL", "mysql+pymysql://ventas:Pa@ss:W0rd99@db.local/ventas", "DATABASE_URL"),
    ("DATABASE_URL", "sqlite:////etc/passwd/x.db", "no se puede crear la carpeta"),
])
def test_bad_configuration_names_the_setting(cli, env, name, value, text):
    result = cli(["status"], dict(env, **{name: value}))
    assert result.returncode == 2
    assert result.stderr.startswith("Error de configuración:")
    assert text in one_spanish_line(result)
    assert "W0rd99" not in result.stderr  # never a piece of a database password


def test_missing_schema_and_unreachable_database(cli, settings, tmp_path):
    env = cli_env(settings, DATABASE_URL=f"sqlite:///{tmp_path / 'empty.sqlite3'}")
    result = cli(["status"], env)
    assert result.returncode == 2 and "init-db" in one_spanish_line(result)
    env = cli_env(settings, DATABASE_URL="mysql+pymysql://nobody:secret@127.0.0.1:1/x")
    result = cli(["status"], env)
    assert result.returncode == 2
    assert "no se pudo usar la base de datos" in one_spanish_line(result)
    assert "secret" not in result.stderr


def test_an_unexpected_error_is_one_line_and_a_hint(cli, env, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")
    monkeypatch.setattr("sync.actions.status", broken)
    result = cli(["status"], env)
    assert result.returncode == 2
    assert one_spanish_line(result) == ("Error inesperado (RuntimeError); ejecutá con -v "
                                        "para ver el detalle")


def test_verbose_shows_the_log_and_leaves_logging_as_it_was(cli, env, engine):
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    close_day(engine, "MATRIZ")
    add_factura(engine, "MATRIZ", "A", "5", "1691", 15000)
    result = cli(["-v", "audit", "MATRIZ", D], env)
    assert result.returncode == 0, result.stderr
    assert " INFO sync." in result.stderr
    assert (root.level, root.handlers) == (level, handlers)


def test_init_db_never_drops_data(cli, settings, tmp_path):
    env = cli_env(settings, DATABASE_URL=f"sqlite:///{tmp_path / 'd.sqlite3'}")
    first = cli(["init-db", "--demo"], env)
    assert first.returncode == 0 and "Demo:" in first.stdout
    second = cli(["init-db", "--demo"], env)
    assert "ninguna (ya existían)" in second.stdout
    assert "la base ya tiene facturas" in second.stdout


def test_preview_sends_nothing(cli, env, engine, sandbox):
    close_day(engine, "BELGRANO")
    add_factura(engine, "BELGRANO", "B", "7", "501", 2500)
    add_factura(engine, "BELGRANO", "B", "7", "5X", 10)
    result = cli(["preview", "BELGRANO", D, "--json"], env)
    assert result.returncode == 0
    data = json.loads(result.stdout)
    assert (data["validas"], data["invalidas"]) == (1, 1)
    bad = [i for i in data["items"] if not i["valid"]][0]
    assert bad["problems"][0]["field"] == "nro_factura"
    good = [i for i in data["items"] if i["valid"]][0]
    assert good["payload"]["OfficialSerNr"] == "0007-00000501"
    text = cli(["preview", "BELGRANO", D], env)
    assert text.returncode == 0
    assert "1 válida(s), 1 inválida(s)" in text.stdout
    assert '"OfficialSerNr": "0007-00000501"' in text.stdout
    assert sandbox.request_log() == []


def test_resend_and_status_with_nothing_to_do(cli, env):
    nothing = cli(["resend"], env)
    assert (nothing.returncode, nothing.stdout) == (0, "ℹ️ No hay facturas para reenviar\n")
    as_json = cli(["resend", "--json"], env)
    assert json.loads(as_json.stdout)["total"] == 0
    empty = cli(["status"], env)
    assert (empty.returncode, empty.stdout) == (0, "No hay facturas registradas para ese filtro\n")


def test_hash_password_reads_standard_input(cli, monkeypatch):
    import bcrypt
    monkeypatch.setattr("sys.stdin", io.StringIO("una-clave-larga\n"))
    result = cli(["hash-password"])
    assert result.returncode == 0, result.stderr
    assert bcrypt.checkpw(b"una-clave-larga", result.stdout.strip().encode())
    monkeypatch.setattr("sys.stdin", io.StringIO("corta\n"))
    short = cli(["hash-password"])
    assert short.returncode == 2
    assert one_spanish_line(short) == "Error: La contraseña debe tener al menos 8 caracteres"


def test_python_m_sync_runs_the_same_cli(env, engine):
    """The real entry point: exit codes through sys.exit, one line on stderr."""
    refused = run_cli(["audit", "NADIE", D], env)
    assert refused.returncode == 1
    assert refused.stderr.startswith("Error: El local NADIE no existe")
    assert len(refused.stderr.splitlines()) == 1
    usage = run_cli(["frobnicate"], env)
    assert usage.returncode == 2 and "opción inválida: 'frobnicate'" in usage.stderr
    assert "Traceback" not in usage.stderr
    assert run_cli(["--help"], env).stdout.startswith("Uso: python -m sync")


def test_sandbox_command_serves_until_terminated(settings, tmp_path):
    import signal
    import socket
    import time

    import requests

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = cli_env(settings, OPPEN_PASSWORD="sandbox-pass-123")
    log_file = tmp_path / "log.json"
    proc = start_cli(["sandbox", "--port", str(port), "--error-rate", "0",
                      "--store", str(tmp_path / "box.jsonl"), "--log-file", str(log_file)], env)
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
    assert proc.returncode == 0, err
    assert f"http://127.0.0.1:{port}" in out
    assert "sandbox-pass-123" not in out  # a configured password is never printed
    outcomes = [entry["outcome"] for entry in json.loads(log_file.read_text())]
    assert outcomes == ["authenticated", "auth_failed"]


def test_bench_runs_end_to_end_on_a_small_load(cli, monkeypatch, tmp_path):
    """Not a timing test (speed targets live in the benchmark): the command works and
    reports every figure, with both runs delivering every invoice."""
    monkeypatch.setenv("OPPEN_SECRETS_FILE", str(tmp_path / "none.toml"))
    for key in ("DATABASE_URL", "OPPEN_BASE_URL", "OPPEN_ENV"):
        monkeypatch.delenv(key, raising=False)
    result = cli(["bench", "--n", "40", "--latency-ms", "1", "--concurrency", "4",
                  "--json", str(tmp_path / "b.json")])
    assert result.returncode == 0, result.stderr
    for text in ("secuencial", "aceleración", "ventana/ideal", "(c) worker", "Latencia 0"):
        assert text in result.stdout
    report = json.loads((tmp_path / "b.json").read_text())
    assert report["sending"]["n"] == 40 and report["sending"]["project_s"] > 0
    assert report["worker"]["n"] == 40 and report["worker"]["worker_s"] > 0


def test_bench_database_must_be_mysql(cli):
    result = cli(["bench", "--database", "sqlite:///x.sqlite3"])
    assert result.returncode == 2
    assert "--database debe ser una URL de MySQL/MariaDB" in result.stderr
