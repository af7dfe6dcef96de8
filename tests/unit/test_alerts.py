"""Pure parts of the worker's schedule and alerts: the retry schedule's steps and horizon,
how a wait reads, what the webhook receives in each format, and the worker's settings
(each refused with one Spanish line)."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from sync import alerts, notify
from sync.errors import ConfigError
from sync.schedule import Schedule
from sync.settings import Settings, load_settings, validate

NOW = dt.datetime(2026, 11, 24, 8, 0, 0)
DEFAULT = Schedule()


def test_default_schedule_is_the_issue_s():
    assert DEFAULT.delays == (60, 300, 900, 3600, 10800, 21600)
    assert DEFAULT.horizon == 7 * 86400
    assert [DEFAULT.delay(n) for n in range(1, 9)] == [60, 300, 900, 3600, 10800, 21600,
                                                       21600, 21600]   # the last repeats


def test_each_transient_failure_takes_the_next_step_from_the_first_attempt():
    step = DEFAULT.step(retry_count=0, first_attempt_at=None, now=NOW)
    assert (step.retry_count, step.first_attempt_at, step.attention_at) == (1, NOW, None)
    assert step.next_attempt_at == NOW + dt.timedelta(seconds=60)
    later = NOW + dt.timedelta(minutes=5)
    step = DEFAULT.step(retry_count=1, first_attempt_at=NOW, now=later)
    assert (step.retry_count, step.first_attempt_at) == (2, NOW)   # the first one stays
    assert step.next_attempt_at == later + dt.timedelta(seconds=300)


def test_the_horizon_ends_automatic_tries():
    just_before = NOW + dt.timedelta(days=7, seconds=-1)
    assert DEFAULT.step(retry_count=40, first_attempt_at=NOW, now=just_before).attention_at is None
    at = NOW + dt.timedelta(days=7)
    step = DEFAULT.step(retry_count=41, first_attempt_at=NOW, now=at)
    assert (step.next_attempt_at, step.attention_at, step.retry_count) == (None, at, 42)


def test_a_person_s_run_starts_the_schedule_over():
    later = NOW + dt.timedelta(days=8)
    step = DEFAULT.step(retry_count=41, first_attempt_at=NOW, now=later, fresh=True)
    assert (step.retry_count, step.first_attempt_at, step.attention_at) == (1, later, None)
    assert step.next_attempt_at == later + dt.timedelta(seconds=60)


@pytest.mark.parametrize("seconds, text", [
    (0, "0 s"), (59, "59 s"), (60, "1 min"), (3599, "59 min"), (3600, "1 h"),
    (14400, "4 h"), (16200, "4 h 30 min"), (47 * 3600, "47 h"), (604800, "7 días"),
    (2 * 86400 + 3 * 3600, "2 días 3 h"), (-5, "0 s")])
def test_a_wait_as_a_person_says_it(seconds, text):
    assert alerts.duration(seconds) == text


def test_the_webhook_body_in_each_format():
    fields = {"alert": "oppen_down", "state": "open", "target": "test/ApiNg", "details": {}}
    slack = Settings(webhook_url="https://hooks.example/x")
    assert notify.body(slack, "🔴 Oppen no responde", fields) == {"text": "🔴 Oppen no responde"}
    plain = slack.replace(webhook_format="json")
    body = notify.body(plain, "🔴 Oppen no responde", fields)
    assert body == {**fields, "text": "🔴 Oppen no responde"}
    json.dumps(body)   # a plain JSON object


def test_the_test_instance_hint_names_oppen_s_panel():
    assert "iniciarla desde el panel de Oppen" in alerts.TEST_INSTANCE_HINT
    assert alerts.AUDITOR_SENTENCE == ("Oppen no responde; se reintenta automáticamente y el "
                                       "administrador fue avisado")


# --- the worker's settings --------------------------------------------------------------------

@pytest.fixture
def missing(tmp_path):
    return tmp_path / "no-existe.toml"


def test_worker_settings_defaults(missing):
    s = load_settings(environ={}, secrets_path=missing)
    assert (s.worker_poll, s.retry_delays, s.retry_horizon, s.alert_stale_after,
            s.pickup_since, s.webhook_format) == (
        5.0, (60.0, 300.0, 900.0, 3600.0, 10800.0, 21600.0), 604800.0, 14400.0, None, "slack")


def test_worker_settings_from_the_environment_and_the_file(missing, tmp_path):
    s = load_settings(environ={"OPPEN_RETRY_DELAYS": " 1, 2.5 ,10 ", "OPPEN_WORKER_POLL": "0.2",
                               "OPPEN_PICKUP_SINCE": "2026-11-24",
                               "OPPEN_WEBHOOK_FORMAT": "json"}, secrets_path=missing)
    assert (s.retry_delays, s.worker_poll, s.pickup_since, s.webhook_format) == (
        (1.0, 2.5, 10.0), 0.2, dt.date(2026, 11, 24), "json")
    path = tmp_path / "secrets.toml"
    path.write_text("OPPEN_RETRY_DELAYS = [30, 60]\nOPPEN_PICKUP_SINCE = 2026-01-02\n"
                    "OPPEN_RETRY_HORIZON = 86400\n", encoding="utf-8")
    s = load_settings(environ={}, secrets_path=path)
    assert (s.retry_delays, s.pickup_since, s.retry_horizon) == (
        (30.0, 60.0), dt.date(2026, 1, 2), 86400.0)


@pytest.mark.parametrize("name, value, message", [
    ("OPPEN_RETRY_DELAYS", "60,abc", "OPPEN_RETRY_DELAYS debe ser un número mayor que 0 "
                                     "(se recibió 'abc')"),
    ("OPPEN_RETRY_DELAYS", ",", "OPPEN_RETRY_DELAYS debe ser una lista de segundos separados "
                                "por comas (p. ej. 60,300,900; se recibió ',')"),
    ("OPPEN_RETRY_DELAYS", "0.5", "OPPEN_RETRY_DELAYS: cada espera debe estar entre 1 y "
                                  "604800 segundos (se recibió '0.5')"),
    ("OPPEN_RETRY_DELAYS", "60," * 21, "OPPEN_RETRY_DELAYS debe tener entre 1 y 20 esperas "
                                       "separadas por comas (p. ej. 60,300,900)"),
    ("OPPEN_RETRY_HORIZON", "0.5", "OPPEN_RETRY_HORIZON debe ser al menos 1 y como máximo "
                                   "31536000 segundos (365 días; se recibió '0.5')"),
    ("OPPEN_ALERT_STALE_AFTER", "1e9", "OPPEN_ALERT_STALE_AFTER debe ser al menos 1 y como "
                                       "máximo 2592000 segundos (30 días; se recibió "
                                       "'1000000000.0')"),
    ("OPPEN_WORKER_POLL", "0", "OPPEN_WORKER_POLL debe ser un número mayor que 0 "
                               "(se recibió '0')"),
    ("OPPEN_WORKER_POLL", "7200", "OPPEN_WORKER_POLL debe ser mayor que 0 y como máximo 3600 "
                                  "segundos (se recibió '7200.0')"),
    ("OPPEN_PICKUP_SINCE", "24/11/2026", "OPPEN_PICKUP_SINCE debe ser una fecha AAAA-MM-DD "
                                         "(p. ej. 2026-11-24; se recibió '24/11/2026')"),
    ("OPPEN_PICKUP_SINCE", "1999-12-31", "OPPEN_PICKUP_SINCE debe ser una fecha entre 2000 y "
                                         "2099 (AAAA-MM-DD; se recibió '1999-12-31')"),
    ("OPPEN_WEBHOOK_FORMAT", "xml", "OPPEN_WEBHOOK_FORMAT debe ser slack o json "
                                    "(se recibió 'xml')"),
])
def test_worker_settings_are_refused_with_one_spanish_line(missing, name, value, message):
    with pytest.raises(ConfigError) as refused:
        load_settings(environ={name: value}, secrets_path=missing)
    assert refused.value.message == message


def test_settings_built_in_code_are_held_to_the_same_ranges():
    with pytest.raises(ConfigError, match="OPPEN_RETRY_DELAYS: cada espera"):
        validate(Settings(retry_delays=(60.0, float("inf"))))
    with pytest.raises(ConfigError, match="OPPEN_RETRY_DELAYS debe tener entre 1 y 20"):
        validate(Settings(retry_delays=()))
    with pytest.raises(ConfigError, match="OPPEN_PICKUP_SINCE"):
        validate(Settings(pickup_since="2026-11-24"))
