"""`python -m sync`: parses arguments, calls one function, prints its result.

Exit codes: 0 done, 1 refused (a validation, an unknown local, a run in progress),
2 bad usage or configuration, 3 done but some invoices were not sent.
Every error is one Spanish line on stderr; never a traceback.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import logging
import os
import signal
import sys
import threading
from decimal import Decimal

import sqlalchemy as sa

from .state import schema
from .settings import Settings, load_settings
from .errors import (AuditRefused, ConfigError, NotFound, OppenError, RunInProgress,
                     SyncError)

OK, REFUSED, USAGE, NOT_SENT = 0, 1, 2, 3

_ARGPARSE_ES = (
    ("the following arguments are required: ", "faltan argumentos: "),
    ("unrecognized arguments: ", "argumentos no reconocidos: "),
    ("invalid choice: ", "opción inválida: "),
    ("expected one argument", "falta el valor"),
    ("invalid int value: ", "no es un entero: "),
    ("invalid float value: ", "no es un número: "),
    ("argument ", "argumento "),
    ("choose from ", "opciones: "),
)


class _Parser(argparse.ArgumentParser):
    """argparse with its errors in Spanish and exit code 2."""

    def error(self, message: str):
        for en, es in _ARGPARSE_ES:
            message = message.replace(en, es)
        self.exit(USAGE, f"Error: {message}. Ayuda: {self.prog} --help\n")


def _json_default(value):
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return str(value)


def _print_json(data) -> None:
    print(json.dumps(data, ensure_ascii=False, indent=2, default=_json_default))


def _fecha(text: str) -> dt.date:
    from .actions import parse_fecha
    try:
        return parse_fecha(text)
    except SyncError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def _progress_printer():
    if not sys.stderr.isatty():
        return None

    def show(done: int, total: int, ref: str | None) -> None:
        sys.stderr.write(f"\r{done}/{total} {ref or ''}".ljust(60))
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()
    return show


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m sync",
                     description="Sincronización de facturas auditadas con Oppen.")
    parser.add_argument("-v", "--verbose", action="store_true", help="mostrar el log (INFO)")
    sub = parser.add_subparsers(dest="command", metavar="COMANDO", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("init-db", help="crear las tablas que falten (nunca borra datos)")
    p.add_argument("--demo", action="store_true", help="cargar datos de demostración si la base está vacía")

    for name, text in (("audit", "marcar un local auditado y sincronizar sus facturas"),
                       ("preview", "mostrar lo que se enviaría a Oppen, sin enviar nada")):
        p = sub.add_parser(name, help=text)
        p.add_argument("local")
        p.add_argument("fecha", type=_fecha, help="AAAA-MM-DD")
        p.add_argument("--json", action="store_true", help="salida JSON")
        if name == "audit":
            p.add_argument("--user", default=os.environ.get("USER") or "cli", help="auditor")

    p = sub.add_parser("resend", help="reenviar lo que no llegó a Oppen")
    p.add_argument("local", nargs="?")
    p.add_argument("fecha", nargs="?", type=_fecha, help="AAAA-MM-DD")
    p.add_argument("--invoice", type=int, action="append", metavar="ID",
                   help="id de facturas_trns (se puede repetir)")
    p.add_argument("--user", default=os.environ.get("USER") or "cli")
    p.add_argument("--reason", default="reenvío desde la línea de comandos")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("status", help="estado de envío de cada factura")
    p.add_argument("local", nargs="?")
    p.add_argument("fecha", nargs="?", type=_fecha, help="AAAA-MM-DD")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("sandbox", help="levantar el sandbox de Oppen (servidor HTTP local)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--api", default=None, help="proyecto de API (por defecto OPPEN_API o ApiNg)")
    p.add_argument("--username", default=None)
    p.add_argument("--store", default=None, help="archivo JSONL donde persistir las facturas")
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--error-rate", type=float, default=0.0)
    p.add_argument("--timeout-rate", type=float, default=0.0)
    p.add_argument("--drop-rate", type=float, default=0.0)
    p.add_argument("--rate-limit-rate", type=float, default=0.0)
    p.add_argument("--hang-seconds", type=float, default=2.0)
    p.add_argument("--token-max-uses", type=int, default=0)
    p.add_argument("--token-ttl", type=float, default=3600.0)
    p.add_argument("--down", action="store_true", help="responder 502 HTML a todo")
    p.add_argument("--duplicate-style", choices=("409", "real"), default="409")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--log-file", default=None,
                   help="al detenerse, guardar aquí el registro de pedidos (JSON)")

    sub.add_parser("hash-password", help="generar el hash bcrypt de una contraseña de la consola")

    p = sub.add_parser("bench", help="medir la velocidad contra el sandbox (bases temporales)")
    p.add_argument("--n", type=int, default=1000, help="facturas por corrida (1000)")
    p.add_argument("--latency-ms", type=float, default=20.0, help="latencia del sandbox (20)")
    p.add_argument("--concurrency", type=int, default=8, help="envíos simultáneos (8)")
    p.add_argument("--rows", type=int, default=0,
                   help="medir las consultas de la consola sobre esta cantidad de facturas "
                        "(p. ej. 1000000)")
    p.add_argument("--preview-n", type=int, default=10000,
                   help="facturas del local/día de la vista previa medida (10000)")
    p.add_argument("--memory-n", type=int, default=0,
                   help="medir la memoria de una corrida de esta cantidad (p. ej. 100000)")
    p.add_argument("--json", default=None, help="guardar los resultados en este archivo")
    return parser


def _engine(settings: Settings, *, need_schema: bool = True):
    from .wiring import open_engine
    engine = open_engine(settings)
    if need_schema:
        missing = schema.check_schema(engine)
        if missing:
            raise ConfigError(f"Faltan tablas en la base ({', '.join(missing)}): "
                              "ejecutá python -m sync init-db")
    return engine


def cmd_init_db(args, settings: Settings) -> int:
    from .demo import load_demo
    engine = _engine(settings, need_schema=False)
    created = schema.init_db(engine, source_tables=True if args.demo else None)
    print("Tablas creadas: " + (", ".join(created) if created else "ninguna (ya existían)"))
    missing = schema.check_schema(engine)
    if missing:
        raise ConfigError(f"Faltan tablas de la aplicación de ventas ({', '.join(missing)}): "
                          "DATABASE_URL apunta a una base que no es la de los locales")
    if args.demo:
        result = load_demo(engine)
        if result.get("omitido"):
            print(f"Demo: {result['omitido']}")
        else:
            print(f"Demo: {result['facturas']} facturas, {result['cierres']} cierres, "
                  f"{result['anticipos']} anticipos (día principal {result['dia_principal']})")
    return OK


def _finish_run_output(args, result: dict, text: str) -> int:
    if args.json:
        _print_json(result)
    else:
        print(text)
    summary = result.get("oppen_sync", result)
    if result.get("oppen_error") or not summary.get("success", True):
        return NOT_SENT
    return OK


def cmd_audit(args, settings: Settings) -> int:
    from .actions import mark_audited
    from .actions import clean_local
    engine = _engine(settings)
    local = clean_local(args.local)
    result = mark_audited(engine, settings, local, args.fecha, args.user,
                          progress=_progress_printer())
    if not result["success"]:
        if args.json:
            _print_json(result)
        else:
            print(f"Error: {result['msg']}", file=sys.stderr)
        return REFUSED
    return _finish_run_output(args, result, result["msg"])


def _summary_text(summary: dict) -> str:
    if summary["total"] == 0:
        return f"ℹ️ {summary.get('message', 'No hay facturas para reenviar')}"
    lines = [f"{summary['exitosas']}/{summary['total']} factura(s) enviada(s) a Oppen"]
    lines += [f"  ✗ {e['factura']}: {e['error']}" for e in summary["errores"][:20]]
    if len(summary["errores"]) > 20:
        lines.append(f"  … y {len(summary['errores']) - 20} más (ver status)")
    if summary.get("message"):
        lines.append(summary["message"])
    return "\n".join(lines)


def cmd_resend(args, settings: Settings) -> int:
    from .actions import clean_local, resend
    engine = _engine(settings)
    local = clean_local(args.local) if args.local else None
    result = resend(engine, settings, user=args.user, local=local, fecha=args.fecha,
                    invoice_ids=args.invoice, reason=args.reason, progress=_progress_printer())
    result.pop("run_id", None)
    return _finish_run_output(args, result, _summary_text(result))


def cmd_preview(args, settings: Settings) -> int:
    from .actions import clean_local, preview, require_local
    engine = _engine(settings)
    local = clean_local(args.local)
    require_local(engine, local)
    result = preview(engine, settings, local, args.fecha)
    if args.json:
        _print_json(result)
        return OK
    print(f"{local} {args.fecha.isoformat()} → {settings.env_label} ({settings.target}): "
          f"{result['validas']} válida(s), {result['invalidas']} inválida(s), "
          f"monto válido ${result['monto_valido']}")
    for item in result["items"]:
        if item["valid"]:
            print(f"  ✓ {item['reference']}  ${item['monto']}  "
                  + json.dumps(item["payload"], ensure_ascii=False, default=_json_default))
        else:
            reasons = "; ".join(f"{p['field']}: {p['reason']}" for p in item["problems"])
            print(f"  ✗ {item['reference']}  {reasons}")
    return OK


def cmd_status(args, settings: Settings) -> int:
    from .state.schema import STATE_LABELS
    from .actions import clean_local, require_local, status
    engine = _engine(settings)
    local = clean_local(args.local) if args.local else None
    if local:
        require_local(engine, local)
    rows = status(engine, settings, local, args.fecha)
    if args.json:
        _print_json(rows)
        return OK
    if not rows:
        print("No hay facturas registradas para ese filtro")
        return OK
    for r in rows:
        err = f"  {r['ultimo_error']}" if r["ultimo_error"] and r["estado"] != "sent" else ""
        sernr = f"  SerNr {r['sernr']}" if r["sernr"] else ""
        print(f"{r['fecha']} {r['local']:<12} {r['referencia']:<22} "
              f"{STATE_LABELS.get(r['estado'], r['estado']):<10} intentos {r['intentos']}"
              f"{sernr}{err}")
    return OK


def cmd_sandbox(args, settings: Settings) -> int:
    import secrets as _secrets

    from .sandbox import Faults, OppenSandbox
    password = settings.password or os.environ.get("OPPEN_PASSWORD") or _secrets.token_urlsafe(12)
    username = args.username or settings.username or "API"
    faults = Faults(latency_ms=args.latency_ms, error_rate=args.error_rate,
                    timeout_rate=args.timeout_rate, drop_rate=args.drop_rate,
                    rate_limit_rate=args.rate_limit_rate, hang_seconds=args.hang_seconds,
                    token_max_uses=args.token_max_uses, token_ttl=args.token_ttl,
                    down=args.down, duplicate_style=args.duplicate_style, seed=args.seed)
    try:
        sandbox = OppenSandbox(host=args.host, port=args.port, api=args.api or settings.api,
                               username=username, password=password, faults=faults,
                               store_path=args.store)
    except OSError as exc:
        raise ConfigError(f"No se pudo abrir el puerto {args.port}: {exc.strerror}") from None
    sandbox.start()
    print(f"Sandbox de Oppen escuchando en {sandbox.url} (API {args.api or settings.api})")
    print(f"  OPPEN_BASE_URL={sandbox.url} OPPEN_USERNAME={username}")
    if not (settings.password or os.environ.get("OPPEN_PASSWORD")):
        print(f"  contraseña generada para esta sesión: {password}")
    print("Ctrl+C para detenerlo.", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    sandbox.stop()
    if args.log_file:
        with open(args.log_file, "w", encoding="utf-8") as fh:
            json.dump(sandbox.request_log(), fh)
    return OK


def cmd_hash_password(args, settings: Settings) -> int:
    import bcrypt
    if sys.stdin.isatty():
        password = getpass.getpass("Contraseña: ")
        if password != getpass.getpass("Repetila: "):
            raise SyncError("Las contraseñas no coinciden")
    else:
        password = sys.stdin.readline().rstrip("\n")
    if len(password) < 8:
        raise SyncError("La contraseña debe tener al menos 8 caracteres")
    print(bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode())
    return OK


def cmd_bench(args, settings: Settings) -> int:
    from benchmarks.bench import main as bench_main
    for name in ("n", "concurrency"):
        if getattr(args, name) < 1:
            raise SyncError(f"--{name} debe ser mayor que 0")
    if args.latency_ms < 0 or args.rows < 0 or args.memory_n < 0:
        raise SyncError("--latency-ms, --rows y --memory-n no pueden ser negativos")
    return bench_main(args)


COMMANDS = {"init-db": cmd_init_db, "bench": cmd_bench, "audit": cmd_audit, "preview": cmd_preview,
            "resend": cmd_resend, "status": cmd_status, "sandbox": cmd_sandbox,
            "hash-password": cmd_hash_password}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # The seed's log lines are for operators (-v); the result is what a person reads.
    logging.basicConfig(level=logging.INFO if args.verbose else logging.CRITICAL + 1,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings()
        return COMMANDS[args.command](args, settings)
    except ConfigError as exc:
        print(f"Error de configuración: {exc.message}", file=sys.stderr)
        return USAGE
    except (AuditRefused, NotFound, RunInProgress) as exc:
        print(f"Error: {exc.message}", file=sys.stderr)
        return REFUSED
    except OppenError as exc:
        print(f"Error sincronizando con Oppen: {exc.message}", file=sys.stderr)
        return NOT_SENT
    except SyncError as exc:
        print(f"Error: {exc.message}", file=sys.stderr)
        return USAGE
    except sa.exc.OperationalError as exc:
        print(f"Error: no se pudo usar la base de datos ({_db_reason(exc)})", file=sys.stderr)
        return USAGE
    except sa.exc.SQLAlchemyError as exc:
        print(f"Error de base de datos: {type(exc).__name__}", file=sys.stderr)
        return USAGE
    except KeyboardInterrupt:
        print("Interrumpido", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: one line for the person, the detail in the log
        logging.getLogger(__name__).exception("Error inesperado")
        print(f"Error inesperado ({type(exc).__name__}); ejecutá con -v para ver el detalle",
              file=sys.stderr)
        return USAGE


def _db_reason(exc: Exception) -> str:
    orig = getattr(exc, "orig", None)
    text = str(orig.args[-1] if orig is not None and orig.args else exc).splitlines()[0]
    return text[:200]
