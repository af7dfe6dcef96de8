"""`python -m sync`: parses arguments, calls one function of `sync`, prints its result.

Exit codes: 0 done, 1 refused (a validation, an unknown local, a run in progress),
2 bad usage or configuration, 3 done but some invoices were not sent.
Every error is one Spanish line on stderr, never a traceback: click's own usage errors
are reworded here from their type and their parameter (never by matching click's
English text), and its help is drawn with Spanish headings. `main(argv)` returns the
exit code instead of exiting, so tests and other code can run it in-process.

Nothing here decides anything about invoices, Oppen or the database: that is `sync`'s.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import json
import logging
import os
import signal
import sys
import threading
import types
from decimal import Decimal

import click
import sqlalchemy as sa
from click.exceptions import NoSuchCommand

from .state import schema
from .settings import Settings, load_settings
from .errors import (AuditRefused, ConfigError, NotFound, OppenError, RunInProgress,
                     SyncError)

OK, REFUSED, USAGE, NOT_SENT = 0, 1, 2, 3
INTERRUPTED = 130
PROG = "python -m sync"


# ----- click, in Spanish ---------------------------------------------------------------

class _Formatter(click.HelpFormatter):
    """click's help layout with Spanish headings: click ships no translations, and these
    headings are the only English words it writes into a help page of ours."""

    _HEADINGS = {"Options": "Opciones", "Commands": "Comandos",
                 "Positional arguments": "Argumentos"}

    def write_usage(self, prog: str, args: str = "", prefix: str | None = None) -> None:
        super().write_usage(prog, args, "Uso: " if prefix is None else prefix)

    def section(self, name: str):
        return super().section(self._HEADINGS.get(name, name))


class _Context(click.Context):
    formatter_class = _Formatter


class _Usage(click.UsageError):
    """A usage error already worded in Spanish, here."""


class _Spanish:
    """What every command and group of this CLI shares: the Spanish help page."""

    context_class = _Context

    def get_help_option(self, ctx):
        option = super().get_help_option(ctx)
        if option is not None:
            option.help = "mostrar esta ayuda y salir"
        return option

    def parse_args(self, ctx, args):
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            # click's parser raises some of them without their context: attach it, so
            # the message can point at this command's help and look up the option.
            if exc.ctx is None:
                exc.ctx = ctx
            raise


class _Command(_Spanish, click.Command):
    # click refuses leftover arguments with an English sentence: let them through
    # and refuse them here instead.
    allow_extra_args = True

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("options_metavar", "[OPCIONES]")
        super().__init__(*args, **kwargs)

    def parse_args(self, ctx, args):
        rest = super().parse_args(ctx, args)
        if rest:
            raise _Usage("argumentos no reconocidos: " + " ".join(rest), ctx)
        return rest


class _Group(_Spanish, click.Group):
    command_class = _Command
    group_class = type  # a subgroup (sandbox) is a _Group too

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("options_metavar", "[OPCIONES]")
        kwargs.setdefault("subcommand_metavar", "[COMANDO] [ARGS]..."
                          if kwargs.get("invoke_without_command") else "COMANDO [ARGS]...")
        super().__init__(*args, **kwargs)

    def list_commands(self, ctx):
        return list(self.commands)  # in the order of a day's work, not alphabetical

    def collect_usage_pieces(self, ctx):
        pieces = super().collect_usage_pieces(ctx)
        if not self.commands:  # a group with no subcommand yet reads as a plain command
            pieces.remove(self.subcommand_metavar)
        return pieces


class _Number(click.ParamType):
    """An int or a float, refused in Spanish, optionally within bounds."""

    def __init__(self, kind: type, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False):
        self.kind, self.low, self.high, self.low_open = kind, low, high, low_open
        self.name = kind.__name__

    def convert(self, value, param, ctx):
        try:
            number = value if isinstance(value, self.kind) else self.kind(value)
        except (TypeError, ValueError):
            label = "no es un entero" if self.kind is int else "no es un número"
            self.fail(f"{label}: {value!r}", param, ctx)
        bounded = self.low is not None or self.high is not None
        too_low = self.low is not None and (number <= self.low if self.low_open
                                            else number < self.low)
        too_high = self.high is not None and number > self.high
        if too_low or too_high or (bounded and number != number):  # NaN: within no bounds
            self.fail(f"{self._range()} (se recibió {value})", param, ctx)
        return number

    def _range(self) -> str:
        if self.high is not None:
            return f"debe estar entre {self.low:g} y {self.high:g}"
        return f"debe ser mayor que {self.low:g}" if self.low_open else "no puede ser negativo"


class _Fecha(click.ParamType):
    """A day typed by a person: `sync.actions.parse_fecha` says what is wrong with it."""

    name = "fecha"

    def convert(self, value, param, ctx):
        from .actions import parse_fecha
        if isinstance(value, dt.date):
            return value
        try:
            return parse_fecha(value)
        except SyncError as exc:
            self.fail(exc.message, param, ctx)


class _Choice(click.Choice):
    def get_invalid_choice_message(self, value, ctx) -> str:
        return (f"opción inválida: {value!r} "
                f"(opciones: {', '.join(repr(c) for c in self.choices)})")


INT, FLOAT, FECHA = _Number(int), _Number(float), _Fecha()
COUNT, NOT_NEGATIVE_INT = _Number(int, low=0, low_open=True), _Number(int, low=0)
NOT_NEGATIVE, RATE = _Number(float, low=0), _Number(float, low=0, high=1)
PORT = _Number(int, low=0, high=65535)


def _param_name(param) -> str | None:
    if isinstance(param, click.Option):
        return max(param.opts, key=len)
    return param.name if param is not None else None


def _usage_text(exc: click.UsageError) -> str:
    """click's usage error as one Spanish line, worded from its type and parameter."""
    ctx = exc.ctx
    if isinstance(exc, _Usage):
        text = exc.message
    elif isinstance(exc, click.MissingParameter):
        text = "faltan argumentos: " + ", ".join(_missing(exc))
    elif isinstance(exc, click.BadParameter):  # after MissingParameter, its subclass
        name = _param_name(exc.param)
        text = f"argumento {name}: {exc.message}" if name else exc.message
    elif isinstance(exc, NoSuchCommand):
        names = list(ctx.command.commands) if ctx is not None else []
        text = (f"argumento COMANDO: opción inválida: {exc.command_name!r} "
                f"(opciones: {', '.join(repr(n) for n in names)})" if names
                else f"argumentos no reconocidos: {exc.command_name}")
    elif isinstance(exc, click.NoSuchOption):
        text = f"argumentos no reconocidos: {exc.option_name}"
        if exc.possibilities:
            text += f" (¿quisiste decir {' o '.join(exc.possibilities)}?)"
    elif isinstance(exc, click.BadOptionUsage):
        # click raises it for a value missing after an option, or given to a flag.
        option = next((p for p in (ctx.command.params if ctx else ())
                       if exc.option_name in getattr(p, "opts", ())), None)
        flag = isinstance(option, click.Option) and option.is_flag
        text = f"argumento {exc.option_name}: " + ("no lleva valor" if flag else "falta el valor")
    else:
        text = "los argumentos no son válidos"
    return f"Error: {text}. Ayuda: {ctx.command_path if ctx else PROG} --help"


def _missing(exc: click.MissingParameter) -> list[str]:
    """The missing argument and every required one after it: arguments are taken in
    order, so when one is missing so are those after it."""
    if not isinstance(exc.param, click.Argument) or exc.ctx is None:
        return [_param_name(exc.param) or "?"]
    params = exc.ctx.command.params
    return [p.name for p in params[params.index(exc.param):]
            if isinstance(p, click.Argument) and p.required]


# ----- printing ------------------------------------------------------------------------

def _json_default(value):
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return str(value)


def _print_json(data) -> None:
    print(json.dumps(data, ensure_ascii=False, indent=2, default=_json_default))


def _error(text: str) -> None:
    print(text, file=sys.stderr)


def _progress_printer():
    if not sys.stderr.isatty():
        return None

    def show(done: int, total: int, ref: str | None) -> None:
        sys.stderr.write(f"\r{done}/{total} {ref or ''}".ljust(60))
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()
    return show


def _finish_run_output(as_json: bool, result: dict, text: str) -> int:
    if as_json:
        _print_json(result)
    else:
        print(text)
    summary = result.get("oppen_sync", result)
    if result.get("oppen_error") or not summary.get("success", True):
        return NOT_SENT
    return OK


def _queued_output(as_json: bool, result: dict, run_id: int) -> int:
    """A run left in the queue: its number, and who sends it."""
    if as_json:
        _print_json({**result, "run_id": run_id, "en_cola": True})
    else:
        print(f"{result['msg']}: sincronización {run_id} en cola; la envía un worker "
              "(python -m sync worker)")
    return OK


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


# ----- wiring shared by the commands ---------------------------------------------------

def _engine(settings: Settings, *, need_schema: bool = True):
    from .wiring import open_engine
    engine = open_engine(settings)
    # Disposed when the command ends, so main() can run many times in one process.
    click.get_current_context().call_on_close(engine.dispose)
    if need_schema:
        missing = schema.check_schema(engine)
        if missing:
            raise ConfigError(f"Faltan tablas en la base ({', '.join(missing)}): "
                              "ejecutá python -m sync init-db")
    return engine


def _default_user() -> str:
    return os.environ.get("USER") or "cli"


@contextlib.contextmanager
def _operator_log():
    """Silence logging for one run, and undo afterwards whatever -v added.

    The seed's log lines are for operators (-v); without it nothing is logged at all,
    not even by logging's last-resort handler (which would print warnings on stderr),
    so a person reads only the result. The root logger is restored on the way out, so
    main() leaves no trace in a process that runs it in-process."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    root.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        root.setLevel(level)


def _show_log() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)


# ----- the commands --------------------------------------------------------------------

# invoke_without_command: with no command the callback runs, and refuses in Spanish
# (click's own refusal is an English sentence).
@click.group(cls=_Group, invoke_without_command=True, subcommand_metavar="COMANDO [ARGS]...",
             context_settings={"help_option_names": ["-h", "--help"]},
             help="Sincronización de facturas auditadas con Oppen.",
             epilog="Códigos de salida: 0 hecho, 1 rechazado, 2 uso o configuración "
                    "incorrectos, 3 hecho pero con facturas sin enviar.\n\n"
                    "Ayuda de cada comando: python -m sync COMANDO --help")
@click.option("-v", "--verbose", is_flag=True, help="mostrar el log (INFO)")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    if verbose:
        _show_log()
    if ctx.invoked_subcommand is None:
        raise _Usage("faltan argumentos: COMANDO", ctx)


@cli.command("init-db", short_help="crear las tablas que falten (nunca borra datos)",
             help="Crear las tablas que falten (nunca borra ni modifica datos) e informar "
                  "cuáles se crearon.")
@click.option("--demo", is_flag=True, help="cargar datos de demostración si la base está vacía")
def init_db_command(demo: bool) -> int:
    from .demo import load_demo
    settings = load_settings()
    engine = _engine(settings, need_schema=False)
    created = schema.init_db(engine, source_tables=True if demo else None)
    print("Tablas creadas: " + (", ".join(created) if created else "ninguna (ya existían)"))
    missing = schema.check_schema(engine)
    if missing:
        raise ConfigError(f"Faltan tablas de la aplicación de ventas ({', '.join(missing)}): "
                          "DATABASE_URL apunta a una base que no es la de los locales")
    if demo:
        result = load_demo(engine)
        if result.get("omitido"):
            print(f"Demo: {result['omitido']}")
        else:
            print(f"Demo: {result['facturas']} facturas, {result['cierres']} cierres, "
                  f"{result['anticipos']} anticipos (día principal {result['dia_principal']})")
    return OK


@cli.command("audit", short_help="marcar un local auditado y sincronizar sus facturas",
             help="Marcar un local auditado para un día y enviar sus facturas a Oppen. "
                  "Muestra el mensaje del resultado (--json: el resultado completo).")
@click.argument("local", help="nombre del local")
@click.argument("fecha", type=FECHA, help="AAAA-MM-DD")
@click.option("--json", "as_json", is_flag=True, help="salida JSON")
@click.option("--user", default=_default_user, metavar="USUARIO",
              help="auditor (por defecto, el usuario del sistema)")
@click.option("--queue", "queued", is_flag=True,
              help="dejar el envío en la cola para un worker y volver enseguida")
def audit_command(local: str, fecha: dt.date, as_json: bool, user: str, queued: bool) -> int:
    from .actions import clean_local, mark_audited, request_audit
    settings = load_settings()
    engine = _engine(settings)
    if queued:
        result = request_audit(engine, settings, clean_local(local), fecha, user)
        if result["success"]:
            return _queued_output(as_json, result, result["run_id"])
    else:
        result = mark_audited(engine, settings, clean_local(local), fecha, user,
                              progress=_progress_printer())
    if not result["success"]:
        if as_json:
            _print_json(result)
        else:
            _error(f"Error: {result['msg']}")
        return REFUSED
    return _finish_run_output(as_json, result, result["msg"])


@cli.command("preview", short_help="mostrar lo que se enviaría a Oppen, sin enviar nada",
             help="Mostrar lo que se enviaría a Oppen para un local y un día, sin enviar "
                  "nada: cada factura válida con su contenido y cada inválida con el "
                  "campo y el motivo.")
@click.argument("local", help="nombre del local")
@click.argument("fecha", type=FECHA, help="AAAA-MM-DD")
@click.option("--json", "as_json", is_flag=True, help="salida JSON")
def preview_command(local: str, fecha: dt.date, as_json: bool) -> int:
    from .actions import clean_local, preview, require_local
    settings = load_settings()
    engine = _engine(settings)
    local = clean_local(local)
    require_local(engine, local)
    result = preview(engine, settings, local, fecha)
    if as_json:
        _print_json(result)
        return OK
    print(f"{local} {fecha.isoformat()} → {settings.env_label} ({settings.target}): "
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


@cli.command("resend", short_help="reenviar lo que no llegó a Oppen",
             help="Reenviar lo que no llegó a Oppen (fallidas, pendientes, inválidas ya "
                  "corregidas) de los días auditados: todo, un local, un local y un día, "
                  "o las facturas elegidas con --invoice. Muestra cuántas se enviaron y "
                  "cada error.")
@click.argument("local", required=False, help="nombre del local (opcional)")
@click.argument("fecha", type=FECHA, required=False, help="AAAA-MM-DD (opcional)")
@click.option("--invoice", "invoice_ids", type=INT, multiple=True, metavar="ID",
              help="id de facturas_trns (se puede repetir)")
@click.option("--user", default=_default_user, metavar="USUARIO",
              help="quién reenvía (por defecto, el usuario del sistema)")
@click.option("--reason", default="reenvío desde la línea de comandos", metavar="MOTIVO",
              help="motivo que queda registrado en la corrida")
@click.option("--json", "as_json", is_flag=True, help="salida JSON")
@click.option("--queue", "queued", is_flag=True,
              help="dejar el reenvío en la cola para un worker y volver enseguida")
def resend_command(local: str | None, fecha: dt.date | None, invoice_ids: tuple[int, ...],
                   user: str, reason: str, as_json: bool, queued: bool) -> int:
    from .actions import clean_local, request_resend, resend
    settings = load_settings()
    engine = _engine(settings)
    if queued:
        run_id = request_resend(engine, settings, user=user,
                                local=clean_local(local) if local else None, fecha=fecha,
                                invoice_ids=list(invoice_ids) or None, reason=reason)
        if run_id is None:
            return _finish_run_output(as_json, {"success": True, "total": 0},
                                      "ℹ️ No hay facturas para reenviar")
        return _queued_output(as_json, {"success": True, "msg": "Reenvío"}, run_id)
    result = resend(engine, settings, user=user, local=clean_local(local) if local else None,
                    fecha=fecha, invoice_ids=list(invoice_ids) or None, reason=reason,
                    progress=_progress_printer())
    result.pop("run_id", None)
    return _finish_run_output(as_json, result, _summary_text(result))


@cli.command("status", short_help="estado de envío de cada factura",
             help="Estado de envío de cada factura: referencia, estado, intentos, SerNr y "
                  "último error; de todo, de un local, o de un local y un día.")
@click.argument("local", required=False, help="nombre del local (opcional)")
@click.argument("fecha", type=FECHA, required=False, help="AAAA-MM-DD (opcional)")
@click.option("--json", "as_json", is_flag=True, help="salida JSON")
def status_command(local: str | None, fecha: dt.date | None, as_json: bool) -> int:
    from .messages import STATE_LABELS
    from .actions import clean_local, require_local, status
    settings = load_settings()
    engine = _engine(settings)
    local = clean_local(local) if local else None
    if local:
        require_local(engine, local)
    rows = status(engine, settings, local, fecha)
    if as_json:
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


@cli.command("reconcile", short_help="conciliar los días auditados con lo que tiene Oppen",
             help="Conciliar cada local/día auditado del rango con lo que Oppen tiene: "
                  "facturas que faltan en Oppen, que sobran, que difieren o que están "
                  "anuladas, y los totales de los dos lados. Corrige solo lo seguro (una "
                  "factura fallida que Oppen tiene, idéntica, queda enviada). Código de "
                  "salida 0 si todos los días cuadran, 3 si alguno no.")
@click.argument("local", required=False, help="nombre del local (opcional: todos)")
@click.option("--desde", type=FECHA, required=True, metavar="AAAA-MM-DD",
              help="primer día del rango")
@click.option("--hasta", type=FECHA, required=True, metavar="AAAA-MM-DD",
              help="último día del rango")
@click.option("--user", default=_default_user, metavar="USUARIO",
              help="quién concilia (por defecto, el usuario del sistema)")
@click.option("--json", "as_json", is_flag=True, help="salida JSON")
def reconcile_command(local: str | None, desde: dt.date, hasta: dt.date, user: str,
                      as_json: bool) -> int:
    from .actions import clean_local
    from .reconcile import public, reconcile, text_table
    settings = load_settings()
    engine = _engine(settings)
    try:
        result = reconcile(engine, settings, desde, hasta,
                           local=clean_local(local) if local else None, user=user)
    except OppenError as exc:
        _error(f"Error consultando Oppen: {exc.message}")
        return NOT_SENT
    if as_json:
        _print_json(public(result))
    else:
        print(text_table(result, settings.env_label))
    return OK if result["resumen"]["no_cuadran"] == 0 else NOT_SENT


def _with_options(*options):
    """Several click options as one decorator, listed in the order --help shows them."""
    def decorate(command):
        for option in reversed(options):
            command = option(command)
        return command
    return decorate


# The options of a standalone sandbox, as one decorator: a later `sandbox start`
# subcommand can take the very same ones.
sandbox_options = _with_options(
    click.option("--host", default="127.0.0.1", metavar="HOST",
                 help="dirección donde escuchar (127.0.0.1)"),
    click.option("--port", type=PORT, default=8765, metavar="PUERTO",
                 help="puerto donde escuchar (8765; 0 elige uno libre)"),
    click.option("--api", default=None, metavar="PROYECTO",
                 help="proyecto de API (por defecto OPPEN_API o ApiNg)"),
    click.option("--username", default=None, metavar="USUARIO",
                 help="usuario que acepta (por defecto OPPEN_USERNAME o API)"),
    click.option("--store", default=None, metavar="ARCHIVO",
                 help="archivo JSONL donde persistir las facturas"),
    click.option("--latency-ms", type=NOT_NEGATIVE, default=0.0, metavar="MS",
                 help="demora de cada respuesta, en milisegundos (0)"),
    click.option("--error-rate", type=RATE, default=0.0, metavar="P",
                 help="proporción de pedidos respondidos con 500, 503 o 502 HTML, "
                      "de 0 a 1 (0)"),
    click.option("--timeout-rate", type=RATE, default=0.0, metavar="P",
                 help="proporción de facturas guardadas sin respuesta a tiempo (0)"),
    click.option("--drop-rate", type=RATE, default=0.0, metavar="P",
                 help="proporción de envíos cuya conexión se corta (0)"),
    click.option("--rate-limit-rate", type=RATE, default=0.0, metavar="P",
                 help="proporción de envíos respondidos con 429 (0)"),
    click.option("--hang-seconds", type=NOT_NEGATIVE, default=2.0, metavar="S",
                 help="cuánto espera una respuesta demorada por --timeout-rate (2)"),
    click.option("--token-max-uses", type=NOT_NEGATIVE_INT, default=0, metavar="N",
                 help="usos de cada token antes de vencer (0: sin límite)"),
    click.option("--token-ttl", type=_Number(float, low=0, low_open=True),
                 default=3600.0, metavar="S",
                 help="segundos de vida de cada token (3600)"),
    click.option("--down", is_flag=True, help="responder 502 HTML a todo"),
    click.option("--duplicate-style", type=_Choice(("409", "real")), default="409",
                 help="respuesta a una factura repetida: 409, o 400 como Oppen real (409)"),
    click.option("--seed", type=INT, default=None, metavar="N",
                 help="semilla de las fallas, para repetir una corrida"),
    click.option("--log-file", default=None, metavar="ARCHIVO",
                 help="al detenerse, guardar aquí el registro de pedidos (JSON)"),
)


@cli.command("worker", short_help="hacer los envíos: cola, reintentos automáticos y avisos",
             help="Hacer todos los envíos a Oppen: las sincronizaciones pedidas desde la "
                  "consola o con --queue, los reintentos automáticos (OPPEN_RETRY_DELAYS), "
                  "lo que dejó un proceso que murió y los días auditados en el sistema de "
                  "ventas. Corre hasta SIGTERM o Ctrl+C: termina lo que está enviando, "
                  "devuelve lo demás a la cola y sale con 0. Varios workers pueden "
                  "compartir una base MySQL/MariaDB.")
@click.option("--once", is_flag=True,
              help="hacer lo que corresponde ahora y salir (para cron y pruebas)")
@click.option("--embedded", is_flag=True, hidden=True)
@click.option("--parent-pid", type=INT, default=None, hidden=True)
def worker_command(once: bool, embedded: bool, parent_pid: int | None) -> int:
    from .state import migrate
    from .wiring import open_client
    from .worker import run_worker
    settings = load_settings()
    engine = _engine(settings)
    problem = migrate.check(engine)
    if problem:
        raise ConfigError(problem)
    if not logging.getLogger().handlers:
        _show_log()   # a service: its log is its output (journald, the console's terminal)
    client = open_client(settings)
    try:
        return run_worker(engine, settings, client, once=once, embedded=embedded,
                          parent_pid=parent_pid, say=lambda text: print(text, flush=True))
    finally:
        client.close()


# A group that runs when called alone, so `sandbox --port P [fallas]` keeps working when
# subcommands (start, stop, ...) are added under it with `@sandbox_command.command()`.
@cli.group("sandbox", invoke_without_command=True,
           short_help="levantar el sandbox de Oppen (servidor HTTP local)",
           help="Levantar el sandbox de Oppen (un servidor HTTP local que responde como "
                "Oppen y puede fallar a propósito) hasta Ctrl+C o SIGTERM.")
@sandbox_options
@click.pass_context
def sandbox_command(ctx: click.Context, **options) -> int | None:
    if ctx.invoked_subcommand is not None:
        return None  # the subcommand does the work
    return _serve_sandbox(**options)


def _serve_sandbox(*, host, port, api, username, store, latency_ms, error_rate, timeout_rate,
                   drop_rate, rate_limit_rate, hang_seconds, token_max_uses, token_ttl, down,
                   duplicate_style, seed, log_file) -> int:
    import secrets as _secrets

    from .sandbox import Faults, OppenSandbox
    settings = load_settings()
    password = settings.password or os.environ.get("OPPEN_PASSWORD") or _secrets.token_urlsafe(12)
    username = username or settings.username or "API"
    faults = Faults(latency_ms=latency_ms, error_rate=error_rate, timeout_rate=timeout_rate,
                    drop_rate=drop_rate, rate_limit_rate=rate_limit_rate,
                    hang_seconds=hang_seconds, token_max_uses=token_max_uses,
                    token_ttl=token_ttl, down=down, duplicate_style=duplicate_style, seed=seed)
    try:
        sandbox = OppenSandbox(host=host, port=port, api=api or settings.api,
                               username=username, password=password, faults=faults,
                               store_path=store)
        sandbox.start()
    except OSError as exc:
        if exc.filename:  # the --store file, not the port
            raise ConfigError(f"No se pudo abrir {exc.filename}: {exc.strerror}") from None
        raise ConfigError(f"No se pudo abrir el puerto {port}: {exc.strerror}") from None
    print(f"Sandbox de Oppen escuchando en {sandbox.url} (API {api or settings.api})")
    print(f"  OPPEN_BASE_URL={sandbox.url} OPPEN_USERNAME={username}")
    if not (settings.password or os.environ.get("OPPEN_PASSWORD")):
        print(f"  contraseña generada para esta sesión: {password}")
    print("Ctrl+C para detenerlo.", flush=True)
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        sandbox.stop()
    if log_file:
        with open(log_file, "w", encoding="utf-8") as fh:
            json.dump(sandbox.request_log(), fh)
    return OK


def _sandbox_admin(url: str | None, password: str | None) -> tuple[str, str, str]:
    """Where a running sandbox is and its own credentials: the options, else the
    settings (OPPEN_BASE_URL, OPPEN_USERNAME, OPPEN_PASSWORD)."""
    settings = load_settings()
    password = password or settings.password or os.environ.get("OPPEN_PASSWORD")
    if not password:
        raise ConfigError("Falta la contraseña del sandbox: --password u OPPEN_PASSWORD")
    return (url or settings.base_url or "http://127.0.0.1:8765", settings.username or "API",
            password)


def _admin_refused(exc) -> int:
    # Answered and refused (no such invoice, already there): refused; unreachable: usage.
    _error(f"Error: {exc.message}")
    return REFUSED if exc.status is not None else USAGE


sandbox_admin_options = _with_options(
    click.option("--url", default=None, metavar="URL",
                 help="dirección del sandbox en marcha (por defecto OPPEN_BASE_URL o "
                      "http://127.0.0.1:8765)"),
    click.option("--password", default=None, metavar="CLAVE",
                 help="su contraseña (por defecto OPPEN_PASSWORD)"),
)


@sandbox_command.command("annul", short_help="anular una factura en un sandbox en marcha",
                         help="Anular una factura en un sandbox en marcha, como se hace a mano "
                              "en Oppen: queda guardada con Invalid = 1. Por SerNr, o por "
                              "OfficialSerNr (con --voucher-code y --doc-type si el número "
                              "solo no alcanza).")
@sandbox_admin_options
@click.option("--sernr", type=INT, default=None, metavar="N", help="SerNr de la factura")
@click.option("--official-sernr", default=None, metavar="PPPP-NNNNNNNN",
              help="OfficialSerNr de la factura")
@click.option("--voucher-code", default=None, metavar="CÓDIGO", help="VoucherCode (p. ej. 006)")
@click.option("--doc-type", default=None, metavar="N", help="DocType (p. ej. 1)")
def sandbox_annul_command(url, password, sernr, official_sernr, voucher_code, doc_type) -> int:
    from .sandbox import admin
    if sernr is None and not official_sernr:
        raise _Usage("falta --sernr o --official-sernr", click.get_current_context())
    url, username, password = _sandbox_admin(url, password)
    try:
        record = admin.annul(url, password=password, username=username, sernr=sernr,
                             official_sernr=official_sernr, voucher_code=voucher_code,
                             doc_type=doc_type)
    except admin.SandboxAdminError as exc:
        return _admin_refused(exc)
    print(f"Anulada en el sandbox: {record.get('OfficialSerNr')} (SerNr {record.get('SerNr')})")
    return OK


@sandbox_command.command("load", short_help="cargar facturas a mano en un sandbox en marcha",
                         help="Cargar facturas a mano en un sandbox en marcha, como una persona "
                              "o la integración anterior las habría cargado en Oppen (no "
                              "pasan por la sincronización): todas o ninguna. ARCHIVO es un "
                              "JSON con una lista de facturas, o una factura por línea; '-' lee "
                              "la entrada estándar.")
@sandbox_admin_options
@click.argument("archivo", help="JSON o JSONL con las facturas ('-': la entrada estándar)")
def sandbox_load_command(url, password, archivo: str) -> int:
    from .sandbox import admin
    try:
        text = sys.stdin.read() if archivo == "-" else open(archivo, encoding="utf-8").read()
    except OSError as exc:
        raise SyncError(f"No se pudo leer {archivo}: {exc.strerror}") from None
    try:
        data = json.loads(text)
        records = data if isinstance(data, list) else [data]
    except ValueError:
        try:
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
        except ValueError:
            raise SyncError(f"{archivo} no es JSON (una lista de facturas, o una por "
                            "línea)") from None
    url, username, password = _sandbox_admin(url, password)
    try:
        stored = admin.load(url, records, password=password, username=username)
    except admin.SandboxAdminError as exc:
        return _admin_refused(exc)
    print(f"{len(stored)} factura(s) cargada(s) a mano en el sandbox")
    for record in stored:
        print(f"  {record.get('OfficialSerNr')}  SerNr {record.get('SerNr')}")
    return OK


@cli.command("new-sernr", short_help="asignar un SerNr nuevo a una factura en conflicto",
             help="Asignar un SerNr nuevo a una factura cuyo SerNr Oppen ya tiene con otro "
                  "número (un respaldo restaurado, dos bases con la misma base de SerNr). "
                  "ID es el id que muestra `status --json`. Queda registrado quién, cuándo "
                  "y por qué; la factura vuelve a pendiente y se envía con el SerNr nuevo "
                  "en el próximo reenvío.")
@click.argument("state_id", metavar="ID", type=INT, help="id de la factura en el registro de envíos")
@click.option("--reason", required=True, metavar="MOTIVO", help="motivo (obligatorio)")
@click.option("--user", default=_default_user, metavar="USUARIO",
              help="quién lo asigna (por defecto, el usuario del sistema)")
@click.option("--json", "as_json", is_flag=True, help="salida JSON")
def new_sernr_command(state_id: int, reason: str, user: str, as_json: bool) -> int:
    from .actions import reassign_sernr
    settings = load_settings()
    result = reassign_sernr(_engine(settings), settings, state_id, user=user, reason=reason)
    if as_json:
        _print_json(result)
    else:
        print(f"{result['reference']}: SerNr {result['sernr_anterior']} → "
              f"{result['sernr_nuevo']}; se enviará con el nuevo en el próximo reenvío")
    return OK


@cli.command("hash-password",
             short_help="generar el hash bcrypt de una contraseña de la consola",
             help="Generar el hash bcrypt de una contraseña de la consola, para "
                  "password_hash en [users.<nombre>] de .streamlit/secrets.toml. La pide "
                  "dos veces en una terminal; si no, la lee de la entrada estándar.")
def hash_password_command() -> int:
    import bcrypt

    from .auth import MAX_PASSWORD_BYTES
    if sys.stdin.isatty():
        password = getpass.getpass("Contraseña: ")
        if password != getpass.getpass("Repetila: "):
            raise SyncError("Las contraseñas no coinciden")
    else:
        password = sys.stdin.readline().rstrip("\n")
    if len(password) < 8:
        raise SyncError("La contraseña debe tener al menos 8 caracteres")
    # bcrypt refuses longer input, and the console refuses it at login.
    if len(password.encode("utf-8")) > MAX_PASSWORD_BYTES:
        raise SyncError(f"La contraseña no puede tener más de {MAX_PASSWORD_BYTES} bytes")
    print(bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode())
    return OK


@cli.command("bench", short_help="medir la velocidad contra el sandbox (bases temporales)",
             help="Medir la velocidad de la sincronización contra el sandbox, en bases "
                  "temporales (nunca toca la base ni el Oppen configurados).")
@click.option("--database", default=None, metavar="URL",
              help="correr todo en el servidor MySQL/MariaDB de esta URL (bases bench_* "
                   "temporales, borradas al terminar); sin ella, SQLite")
@click.option("--n", "n", type=INT, default=1000, metavar="N",
              help="facturas por corrida (1000; la de alta concurrencia y la de latencia 0 "
                   "usan 10×N, con 4×C la primera)")
@click.option("--latency-ms", type=FLOAT, default=20.0, metavar="MS",
              help="latencia del sandbox (20)")
@click.option("--concurrency", type=INT, default=8, metavar="C",
              help="envíos simultáneos (8)")
@click.option("--rows", type=INT, default=0, metavar="R",
              help="medir las consultas de la consola sobre esta cantidad de facturas "
                   "(p. ej. 1000000)")
@click.option("--preview-n", type=INT, default=10000, metavar="N",
              help="facturas del local/día de la vista previa medida (10000)")
@click.option("--memory-n", type=INT, default=0, metavar="M",
              help="medir la memoria de una corrida de esta cantidad (p. ej. 100000)")
@click.option("--json", "json_path", default=None, metavar="ARCHIVO",
              help="guardar los resultados en este archivo")
def bench_command(database: str | None, n: int, latency_ms: float, concurrency: int, rows: int,
                  preview_n: int, memory_n: int, json_path: str | None) -> int:
    from benchmarks.bench import main as bench_main
    for name, value in (("n", n), ("concurrency", concurrency)):
        if value < 1:
            raise SyncError(f"--{name} debe ser mayor que 0")
    if latency_ms < 0 or rows < 0 or memory_n < 0:
        raise SyncError("--latency-ms, --rows y --memory-n no pueden ser negativos")
    # benchmarks.bench.main reads its settings as attributes, as argparse gave them.
    return bench_main(types.SimpleNamespace(
        database=database, n=n, latency_ms=latency_ms, concurrency=concurrency, rows=rows,
        preview_n=preview_n, memory_n=memory_n, json=json_path))


# ----- the entry point -----------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    """Run one command line (sys.argv by default) and return its exit code.

    Never raises and never exits the process: every error becomes one Spanish line on
    stderr and its exit code."""
    args = sys.argv[1:] if argv is None else list(argv)
    with _operator_log():
        try:
            with cli.make_context(PROG, args) as ctx:
                result = cli.invoke(ctx)
            return result if isinstance(result, int) else OK
        except click.exceptions.Exit as exc:  # --help, after printing the help
            return exc.exit_code
        except click.UsageError as exc:
            _error(_usage_text(exc))
            return USAGE
        except ConfigError as exc:
            _error(f"Error de configuración: {exc.message}")
            return USAGE
        except (AuditRefused, NotFound, RunInProgress) as exc:
            _error(f"Error: {exc.message}")
            return REFUSED
        except OppenError as exc:
            _error(f"Error sincronizando con Oppen: {exc.message}")
            return NOT_SENT
        except SyncError as exc:
            _error(f"Error: {exc.message}")
            return USAGE
        except sa.exc.OperationalError as exc:
            _error(f"Error: no se pudo usar la base de datos ({_db_reason(exc)})")
            return USAGE
        except sa.exc.SQLAlchemyError as exc:
            _error(f"Error de base de datos: {type(exc).__name__}")
            return USAGE
        except (KeyboardInterrupt, click.Abort):
            _error("Interrumpido")
            return INTERRUPTED
        except Exception as exc:  # a bug: one line for the person, the detail in the log
            logging.getLogger(__name__).exception("Error inesperado")
            _error(f"Error inesperado ({type(exc).__name__}); ejecutá con -v para ver el "
                   "detalle")
            return USAGE


def _db_reason(exc: Exception) -> str:
    orig = getattr(exc, "orig", None)
    text = str(orig.args[-1] if orig is not None and orig.args else exc).splitlines()[0]
    return text[:200]
