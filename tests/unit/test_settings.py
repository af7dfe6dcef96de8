"""Settings: defaults < `.streamlit/secrets.toml` < environment, every problem a
ConfigError naming the setting, and no password in a repr."""

from __future__ import annotations

import dataclasses
import datetime as dt
import textwrap
from decimal import Decimal

import bcrypt
import pytest

from sync.settings import DEFAULT_DATABASE_URL, load_settings
from sync.errors import ConfigError
from sync.mapping import REAL_PROFILE, SEED_PROFILE, Mapped, map_invoice

PASSWORD = "Secreto-Muy-Largo-123!"
HASH = bcrypt.hashpw(b"clave-consola", bcrypt.gensalt(4)).decode()
CREDS = {"OPPEN_USERNAME": "API", "OPPEN_PASSWORD": PASSWORD}


@pytest.fixture
def secrets_file(tmp_path):
    path = tmp_path / "secrets.toml"

    def write(text: str):
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return write


def refused(environ=None, path=None) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(environ=dict(environ or {}), secrets_path=path)
    message = str(info.value)
    assert message == info.value.message
    assert PASSWORD not in message
    return message


@pytest.fixture
def missing(tmp_path):
    return tmp_path / "no-existe.toml"


# --- defaults and sources ----------------------------------------------------------------

def test_defaults_without_secrets_file(missing):
    s = load_settings(environ={}, secrets_path=missing)
    assert s.oppen_env == "sandbox"
    assert s.api == "ApiNg"
    assert s.database_url == DEFAULT_DATABASE_URL
    assert s.database_url.startswith("sqlite:///")
    assert s.base_url is None
    assert s.embedded_sandbox
    assert s.username is None and s.password is None
    assert s.mapping == SEED_PROFILE
    assert s.timeout > 0 and s.max_attempts >= 1
    assert dict(s.users) == {}


def test_settings_are_frozen(missing):
    s = load_settings(environ={}, secrets_path=missing)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.password = "x"


def test_secrets_file_is_read(secrets_file):
    path = secrets_file("""
        OPPEN_ENV = "test"
        OPPEN_USERNAME = "API"
        OPPEN_PASSWORD = "%s"
        OPPEN_TIMEOUT = 12.5
        OPPEN_MAX_ATTEMPTS = 5
        OPPEN_API = "OtraApi"
    """ % PASSWORD)
    s = load_settings(environ={}, secrets_path=path)
    assert s.oppen_env == "test"
    assert s.base_url == "https://ngprueba.oppen.io"
    assert s.username == "API" and s.password == PASSWORD
    assert s.timeout == 12.5
    assert s.max_attempts == 5
    assert s.api == "OtraApi"


def test_environment_overrides_secrets(secrets_file):
    path = secrets_file("""
        OPPEN_TIMEOUT = 12.5
        OPPEN_API = "OtraApi"
        OPPEN_MAX_ATTEMPTS = 5
    """)
    s = load_settings(environ={"OPPEN_TIMEOUT": "3", "OPPEN_API": "ApiEnv"}, secrets_path=path)
    assert s.timeout == 3.0
    assert s.api == "ApiEnv"
    assert s.max_attempts == 5  # not overridden: the file's value stays


def test_secrets_path_from_environment(secrets_file):
    path = secrets_file('OPPEN_API = "DesdeArchivo"\n')
    s = load_settings(environ={"OPPEN_SECRETS_FILE": str(path)})
    assert s.api == "DesdeArchivo"


def test_production_and_test_base_urls(missing):
    test = load_settings(environ={"OPPEN_ENV": "test", **CREDS}, secrets_path=missing)
    prod = load_settings(environ={"OPPEN_ENV": "production", **CREDS}, secrets_path=missing)
    assert test.base_url == "https://ngprueba.oppen.io"
    assert prod.base_url == "https://ng.oppen.io"
    assert not test.embedded_sandbox and not prod.embedded_sandbox


def test_loopback_http_is_allowed(missing):
    s = load_settings(environ={"OPPEN_BASE_URL": "http://127.0.0.1:8765/", **CREDS},
                      secrets_path=missing)
    assert s.base_url == "http://127.0.0.1:8765"
    assert not s.embedded_sandbox


@pytest.mark.parametrize("url", ["sqlite:///tmp/x.sqlite3", "sqlite://",
                                 "mysql+pymysql://u:p@localhost/caja",
                                 "mariadb+pymysql://u:p@db.local:3306/caja"])
def test_supported_database_urls(missing, url):
    assert load_settings(environ={"DATABASE_URL": url}, secrets_path=missing).database_url == url


# --- each bad value: ConfigError naming the setting ---------------------------------------

@pytest.mark.parametrize("environ, name", [
    ({"OPPEN_TIMEOUT": "abc"}, "OPPEN_TIMEOUT"),
    ({"OPPEN_TIMEOUT": "0"}, "OPPEN_TIMEOUT"),
    ({"OPPEN_TIMEOUT": "-3"}, "OPPEN_TIMEOUT"),
    ({"OPPEN_TIMEOUT": "nan"}, "OPPEN_TIMEOUT"),
    ({"OPPEN_TIMEOUT": "inf"}, "OPPEN_TIMEOUT"),
    ({"OPPEN_ENV": "prod"}, "OPPEN_ENV"),
    ({"OPPEN_ENV": "PRODUCTION"}, "OPPEN_ENV"),
    ({"DATABASE_URL": "nonsense"}, "DATABASE_URL"),
    ({"DATABASE_URL": "postgresql://u:p@localhost/caja"}, "DATABASE_URL"),
    ({"DATABASE_URL": "postgresql+psycopg2://u:p@localhost/caja"}, "DATABASE_URL"),
    ({"OPPEN_MAX_ATTEMPTS": "0"}, "OPPEN_MAX_ATTEMPTS"),
    ({"OPPEN_MAX_ATTEMPTS": "-1"}, "OPPEN_MAX_ATTEMPTS"),
    ({"OPPEN_MAX_ATTEMPTS": "2.5"}, "OPPEN_MAX_ATTEMPTS"),
    ({"OPPEN_MAX_ATTEMPTS": "muchos"}, "OPPEN_MAX_ATTEMPTS"),
    ({"OPPEN_MAX_ATTEMPTS": "1000"}, "OPPEN_MAX_ATTEMPTS"),
    ({"OPPEN_CONCURRENCY": "0"}, "OPPEN_CONCURRENCY"),
    ({"OPPEN_BACKOFF_CAP": "x"}, "OPPEN_BACKOFF_CAP"),
    ({"OPPEN_BASE_URL": "http://ngprueba.oppen.io", **CREDS}, "OPPEN_BASE_URL"),
    ({"OPPEN_BASE_URL": "http://192.168.1.10:8080", **CREDS}, "OPPEN_BASE_URL"),
    ({"OPPEN_ENV": "test", "OPPEN_BASE_URL": "http://ngprueba.oppen.io", **CREDS}, "OPPEN_BASE_URL"),
    ({"OPPEN_BASE_URL": "ftp://ngprueba.oppen.io", **CREDS}, "OPPEN_BASE_URL"),
    ({"OPPEN_BASE_URL": "no es una url", **CREDS}, "OPPEN_BASE_URL"),
    ({"OPPEN_ENV": "test", "OPPEN_USERNAME": "API"}, "OPPEN_PASSWORD"),
    ({"OPPEN_ENV": "production", "OPPEN_USERNAME": "API"}, "OPPEN_PASSWORD"),
    ({"OPPEN_ENV": "test", "OPPEN_PASSWORD": PASSWORD}, "OPPEN_USERNAME"),
    ({"OPPEN_WEBHOOK_URL": "no-es-url"}, "OPPEN_WEBHOOK_URL"),
    ({"OPPEN_PROFILE": "produccion"}, "OPPEN_PROFILE"),
])
def test_bad_value_names_the_setting(missing, environ, name):
    assert name in refused(environ, missing)


def test_https_is_required_message_mentions_https(missing):
    message = refused({"OPPEN_BASE_URL": "http://ngprueba.oppen.io", **CREDS}, missing)
    assert "https" in message


@pytest.mark.parametrize("env", ["test", "production"])
def test_password_from_secrets_satisfies_remote_environments(secrets_file, env):
    path = secrets_file('OPPEN_USERNAME = "API"\nOPPEN_PASSWORD = "%s"\n' % PASSWORD)
    s = load_settings(environ={"OPPEN_ENV": env}, secrets_path=path)
    assert s.password == PASSWORD


def test_bad_value_in_secrets_file_names_the_setting(secrets_file):
    path = secrets_file('OPPEN_TIMEOUT = "abc"\n')
    assert "OPPEN_TIMEOUT" in refused({}, path)


@pytest.mark.parametrize("text", [
    "OPPEN_ENV = \n",
    "OPPEN_ENV = 'test\n",
    "[mapping\nstatus = 1\n",
    "OPPEN_API = \"a\"\nOPPEN_API = \"b\"\n",
    "\x00\x01\x02",
])
def test_broken_toml_is_a_config_error(secrets_file, text):
    path = secrets_file(text)
    message = refused({}, path)
    assert str(path.name) in message or "secrets" in message


def test_unreadable_secrets_path_is_a_config_error(tmp_path):
    # A directory where the file should be.
    directory = tmp_path / "secrets.toml"
    directory.mkdir()
    refused({}, directory)


# --- the mapping profile ---------------------------------------------------------------

def test_mapping_table_overrides(secrets_file):
    path = secrets_file("""
        [mapping]
        office = "200"
        customer = "C00099"
        status = 1
        payment_days = 15
        price_includes_vat = false
        voucher_codes = { A = "001", B = "006", Z = "083" }
        labels_by_local = { MATRIZ = "MTZ" }
        art_codes = { A = "271240052", B = "271240053", Z = "271240051", CC = "271240054" }
    """)
    m = load_settings(environ={}, secrets_path=path).mapping
    assert m.office == "200"
    assert m.customer == "C00099"
    assert m.status == 1
    assert m.payment_days == 15
    assert m.price_includes_vat is False
    assert dict(m.voucher_codes) == {"A": "001", "B": "006", "Z": "083"}
    assert dict(m.labels_by_local) == {"MATRIZ": "MTZ"}
    assert m.art_codes["A"] == "271240052"
    # What is not overridden stays the seed's.
    assert m.create_user == "API"
    assert m.pos_width == 4
    assert dict(m.invoice_types) == {"Z": 0, "A": 1, "B": 2, "CC": 3}


@pytest.mark.parametrize("how", ["env", "file"])
def test_real_profile_by_name(secrets_file, missing, how):
    if how == "env":
        s = load_settings(environ={"OPPEN_PROFILE": "real"}, secrets_path=missing)
    else:
        s = load_settings(environ={}, secrets_path=secrets_file('[mapping]\nprofile = "real"\n'))
    assert s.mapping == REAL_PROFILE
    assert s.mapping.status == 1 and s.mapping.pos_width == 5


def test_environment_profile_wins_over_file(secrets_file):
    path = secrets_file('[mapping]\nprofile = "real"\n')
    assert load_settings(environ={"OPPEN_PROFILE": "seed"}, secrets_path=path).mapping == SEED_PROFILE


def test_real_profile_with_overrides_on_top(secrets_file):
    path = secrets_file('[mapping]\nprofile = "real"\nlabels_by_local = { MATRIZ = "MTZ" }\n')
    m = load_settings(environ={}, secrets_path=path).mapping
    assert m.name == "real" and m.status == 1
    assert dict(m.labels_by_local) == {"MATRIZ": "MTZ"}


def test_mapping_from_environment_variables(missing):
    m = load_settings(environ={
        "OPPEN_MAPPING_POS_WIDTH": "5",
        "OPPEN_MAPPING_STATUS": "1",
        "OPPEN_MAPPING_LABELS_BY_LOCAL": '{"MATRIZ": "MTZ", "Palermo Soho": "PAL"}',
        "OPPEN_MAPPING_DUE_DATE_NOT_PAST": "true",
    }, secrets_path=missing).mapping
    assert m.pos_width == 5
    assert m.status == 1
    assert dict(m.labels_by_local) == {"MATRIZ": "MTZ", "Palermo Soho": "PAL"}
    assert m.due_date_not_past is True


def test_mapping_environment_overrides_file(secrets_file):
    path = secrets_file("[mapping]\npos_width = 4\n")
    m = load_settings(environ={"OPPEN_MAPPING_POS_WIDTH": "5"}, secrets_path=path).mapping
    assert m.pos_width == 5


def test_pos_width_five_shapes_the_official_number(missing):
    m = load_settings(environ={"OPPEN_MAPPING_POS_WIDTH": "5"}, secrets_path=missing).mapping
    row = {"local": "MATRIZ", "fecha": "2025-01-05", "tipo": "A", "punto_venta": "5",
           "nro_factura": "1691", "monto": 15000}
    result = map_invoice(row, m, today=dt.date(2025, 1, 6), sernr=1)
    assert isinstance(result, Mapped)
    assert result.official_sernr == "00005-00001691"


@pytest.mark.parametrize("toml, name", [
    ("[mapping]\nunknown_key = 1\n", "unknown_key"),
    ("[mapping]\nOffice = \"100\"\n", "Office"),
    ("[mapping]\nname = \"otro\"\n", "name"),
    ("[mapping]\nstatus = \"aprobado\"\n", "status"),
    ("[mapping]\npos_width = 0\n", "pos_width"),
    ("[mapping]\npos_width = 99\n", "pos_width"),
    ("[mapping]\nsernr_mode = \"random\"\n", "sernr_mode"),
    ("[mapping]\nlabel_format = \"Local\"\n", "label_format"),
    ("[mapping]\nprice_includes_vat = \"quizas\"\n", "price_includes_vat"),
    ("[mapping]\nvoucher_codes = \"no-json\"\n", "voucher_codes"),
    ("[mapping]\ninvoice_types = { A = \"uno\" }\n", "invoice_types"),
    ("[mapping]\nvat_rate = \"veintiuno\"\n", "vat_rate"),
    ("[mapping]\nprofile = \"otro\"\n", "OPPEN_PROFILE"),
    ("mapping = 3\n", "mapping"),
])
def test_bad_mapping_setting_is_refused(secrets_file, toml, name):
    assert name in refused({}, secrets_file(toml))


@pytest.mark.parametrize("environ, name", [
    ({"OPPEN_MAPPING_POS_WIDTH": "cinco"}, "OPPEN_MAPPING_POS_WIDTH"),
    ({"OPPEN_MAPPING_POS_WIDTH": "0"}, "pos_width"),
    ({"OPPEN_MAPPING_LABELS_BY_LOCAL": "{MATRIZ: MTZ"}, "OPPEN_MAPPING_LABELS_BY_LOCAL"),
    ({"OPPEN_MAPPING_LABELS_BY_LOCAL": "[1, 2]"}, "OPPEN_MAPPING_LABELS_BY_LOCAL"),
    ({"OPPEN_MAPPING_DUE_DATE_NOT_PAST": "tal vez"}, "OPPEN_MAPPING_DUE_DATE_NOT_PAST"),
])
def test_bad_mapping_environment_variable_is_refused(missing, environ, name):
    assert name in refused(environ, missing)


def test_partial_art_codes_override_keeps_the_generic_article(secrets_file):
    path = secrets_file('[mapping]\nart_codes = { A = "271240052" }\n')
    m = load_settings(environ={}, secrets_path=path).mapping
    row = {"local": "MATRIZ", "fecha": "2025-01-05", "tipo": "Z", "punto_venta": "2",
           "nro_factura": "150", "monto": 100}
    result = map_invoice(row, m, today=dt.date(2025, 1, 6), sernr=1)
    assert isinstance(result, Mapped), getattr(result, "reason", result)
    assert result.payload["Items"][0]["ArtCode"] == "271240051"


# --- console users ---------------------------------------------------------------------

def test_users_with_bcrypt_hash(secrets_file):
    path = secrets_file(f"""
        [users.ana]
        name = "Ana Auditora"
        role = "auditor"
        password_hash = "{HASH}"

        [users.jefe]
        role = "admin"
        password_hash = "{HASH}"
    """)
    users = load_settings(environ={}, secrets_path=path).users
    assert set(users) == {"ana", "jefe"}
    assert users["ana"].role == "auditor" and users["ana"].name == "Ana Auditora"
    assert users["jefe"].name == "jefe"
    assert bcrypt.checkpw(b"clave-consola", users["ana"].password_hash.encode())
    assert HASH not in repr(users["ana"])


@pytest.mark.parametrize("entry", [
    'role = "auditor"\npassword_hash = "clave-en-texto-plano"',
    'role = "auditor"\npassword_hash = "5f4dcc3b5aa765d61d8327deb882cf99"',
    'role = "auditor"\npassword_hash = "$argon2id$v=19$m=65536,t=3,p=4$abc$def"',
    'role = "auditor"\npassword_hash = ""',
    'role = "auditor"',
    f'role = "jefe"\npassword_hash = "{HASH}"',
    f'password_hash = "{HASH}"',
])
def test_bad_user_entry_is_refused(secrets_file, entry):
    path = secrets_file("[users.x]\n" + entry + "\n")
    assert "users.x" in refused({}, path)


def test_user_that_is_not_a_table_is_refused(secrets_file):
    assert "users.x" in refused({}, secrets_file('[users]\nx = "clave"\n'))


# --- no password in a repr --------------------------------------------------------------

def test_repr_never_contains_the_password(secrets_file):
    path = secrets_file(f"""
        OPPEN_ENV = "production"
        OPPEN_USERNAME = "API"
        OPPEN_PASSWORD = "{PASSWORD}"

        [users.ana]
        role = "admin"
        password_hash = "{HASH}"
    """)
    s = load_settings(environ={}, secrets_path=path)
    assert s.password == PASSWORD
    for text in (repr(s), str(s), f"{s}", f"{s!r}", repr(s.replace(timeout=1.0))):
        assert PASSWORD not in text
        assert HASH not in text
    assert "production" in repr(s)


def test_repr_never_contains_the_database_password(missing):
    s = load_settings(environ={"DATABASE_URL": "mysql+pymysql://caja:ClaveDeLaBase99@db/caja"},
                      secrets_path=missing)
    assert "ClaveDeLaBase99" not in repr(s)


def test_config_errors_never_echo_the_password(missing):
    environ = {"OPPEN_ENV": "test", "OPPEN_TIMEOUT": "abc", **CREDS}
    assert PASSWORD not in refused(environ, missing)
    environ = {"OPPEN_BASE_URL": "http://ngprueba.oppen.io", **CREDS}
    assert PASSWORD not in refused(environ, missing)


# --- which Oppen the state belongs to -----------------------------------------------------

def test_target_differs_between_environments(missing):
    targets = {
        env: load_settings(environ={"OPPEN_ENV": env, **CREDS}, secrets_path=missing).target
        for env in ("sandbox", "test", "production")
    }
    assert len(set(targets.values())) == 3
    for env, target in targets.items():
        assert env in target


def test_target_includes_the_api_project(missing):
    a = load_settings(environ={"OPPEN_ENV": "test", **CREDS}, secrets_path=missing)
    b = load_settings(environ={"OPPEN_ENV": "test", "OPPEN_API": "OtraApi", **CREDS},
                      secrets_path=missing)
    assert a.target != b.target


# --- every setting within a range, refused with one Spanish line naming it ------------------

@pytest.mark.parametrize("environ, name", [
    ({"OPPEN_MAPPING_PAYMENT_DAYS": "99999999"}, "OPPEN_MAPPING_PAYMENT_DAYS"),
    ({"OPPEN_MAPPING_PAYMENT_DAYS": "-1"}, "OPPEN_MAPPING_PAYMENT_DAYS"),
    ({"OPPEN_LEASE_SECONDS": "1e300"}, "OPPEN_LEASE_SECONDS"),
    ({"OPPEN_LEASE_SECONDS": "0.5"}, "OPPEN_LEASE_SECONDS"),
    ({"OPPEN_TIMEOUT": "1e300"}, "OPPEN_TIMEOUT"),
    ({"OPPEN_TIMEOUT": "1e400"}, "OPPEN_TIMEOUT"),
    ({"OPPEN_TIMEOUT": "-inf"}, "OPPEN_TIMEOUT"),
    ({"OPPEN_TIMEOUT": "true"}, "OPPEN_TIMEOUT"),
    ({"OPPEN_MAPPING_SERNR_BASE": "9223372036854775807"}, "OPPEN_MAPPING_SERNR_BASE"),
    ({"OPPEN_MAPPING_SERNR_BASE": "1000000000000001"}, "OPPEN_MAPPING_SERNR_BASE"),
    ({"OPPEN_MAPPING_SERNR_BASE": "0"}, "OPPEN_MAPPING_SERNR_BASE"),
    ({"OPPEN_MAPPING_LABELS_BY_LOCAL": '{"CG": null}'}, "OPPEN_MAPPING_LABELS_BY_LOCAL"),
    ({"OPPEN_MAPPING_LABELS_BY_LOCAL": '{"CG": ""}'}, "OPPEN_MAPPING_LABELS_BY_LOCAL"),
    ({"OPPEN_MAPPING_LABELS_BY_LOCAL": '{"CG": ["X"]}'}, "OPPEN_MAPPING_LABELS_BY_LOCAL"),
    ({"OPPEN_MAPPING_LABELS_BY_LOCAL": '{"  ": "X"}'}, "OPPEN_MAPPING_LABELS_BY_LOCAL"),
    ({"OPPEN_MAPPING_CUSTOMERS_BY_LOCAL": '{"CG": null}'}, "OPPEN_MAPPING_CUSTOMERS_BY_LOCAL"),
    ({"OPPEN_BACKOFF_BASE": "1e6"}, "OPPEN_BACKOFF_BASE"),
    ({"OPPEN_BACKOFF_BASE": "61"}, "OPPEN_BACKOFF_BASE"),
    ({"OPPEN_BACKOFF_BASE": "-0.5"}, "OPPEN_BACKOFF_BASE"),
    ({"OPPEN_BACKOFF_CAP": "301"}, "OPPEN_BACKOFF_CAP"),
    ({"OPPEN_BACKOFF_CAP": "nan"}, "OPPEN_BACKOFF_CAP"),
    ({"OPPEN_CONCURRENCY": "65"}, "OPPEN_CONCURRENCY"),
    ({"OPPEN_CONCURRENCY": "-4"}, "OPPEN_CONCURRENCY"),
    ({"OPPEN_BREAKER_THRESHOLD": "0"}, "OPPEN_BREAKER_THRESHOLD"),
    ({"OPPEN_BREAKER_THRESHOLD": "1001"}, "OPPEN_BREAKER_THRESHOLD"),
    ({"OPPEN_BREAKER_THRESHOLD": "1e3"}, "OPPEN_BREAKER_THRESHOLD"),
    ({"OPPEN_MAX_ATTEMPTS": "9" * 5000}, "OPPEN_MAX_ATTEMPTS"),
    ({"OPPEN_API": "../../admin"}, "OPPEN_API"),
    ({"OPPEN_API": "Api Ng"}, "OPPEN_API"),
    ({"OPPEN_API": ".."}, "OPPEN_API"),
    ({"OPPEN_MAPPING_STATUS": "2"}, "OPPEN_MAPPING_STATUS"),
    ({"OPPEN_MAPPING_QTY": "0"}, "OPPEN_MAPPING_QTY"),
    ({"OPPEN_MAPPING_QTY": "1000000"}, "OPPEN_MAPPING_QTY"),
    ({"OPPEN_MAPPING_NUMBER_WIDTH": "13"}, "OPPEN_MAPPING_NUMBER_WIDTH"),
    ({"OPPEN_MAPPING_VAT_RATE": "nan"}, "OPPEN_MAPPING_VAT_RATE"),
    ({"OPPEN_MAPPING_VAT_RATE": "-0.21"}, "OPPEN_MAPPING_VAT_RATE"),
    ({"OPPEN_MAPPING_VAT_RATE": "21"}, "OPPEN_MAPPING_VAT_RATE"),
    ({"OPPEN_MAPPING_VAT_RATE": "Infinity"}, "OPPEN_MAPPING_VAT_RATE"),
    ({"OPPEN_MAPPING_OFFICE": ""}, "OPPEN_MAPPING_OFFICE"),
    ({"OPPEN_MAPPING_OFFICE": "1" * 61}, "OPPEN_MAPPING_OFFICE"),
    ({"OPPEN_MAPPING_CUSTOMER": "C0\n0001"}, "OPPEN_MAPPING_CUSTOMER"),
    ({"OPPEN_MAPPING_SEND_INVOICE_DATE": "verdadero"}, "OPPEN_MAPPING_SEND_INVOICE_DATE"),
    ({"OPPEN_MAPPING_ALLOW_ZERO_AMOUNT": "2"}, "OPPEN_MAPPING_ALLOW_ZERO_AMOUNT"),
    ({"OPPEN_MAPPING_PRICE_INCLUDES_VAT_BY_TYPE": '{"CC": "quizas"}'},
     "OPPEN_MAPPING_PRICE_INCLUDES_VAT_BY_TYPE"),
    ({"OPPEN_MAPPING_POS_WIDTHS": '{"CC": 9}'}, "OPPEN_MAPPING_POS_WIDTHS"),
    ({"OPPEN_MAPPING_NUMBER_WIDTHS": '{"CC": 0}'}, "OPPEN_MAPPING_NUMBER_WIDTHS"),
    ({"OPPEN_MAPPING_OFFICES": '{"D": "200"}'}, "OPPEN_MAPPING_OFFICES"),
    ({"OPPEN_MAPPING_OFFICES": '{"": "200"}'}, "OPPEN_MAPPING_OFFICES"),
    ({"OPPEN_MAPPING_OFFICES": '["200"]'}, "OPPEN_MAPPING_OFFICES"),
    ({"OPPEN_MAPPING_VAT_CODES": '{"CC": null}'}, "OPPEN_MAPPING_VAT_CODES"),
    ({"OPPEN_MAPPING_SEND_TYPES": "A,B,X"}, "OPPEN_MAPPING_SEND_TYPES"),
    ({"OPPEN_MAPPING_SEND_TYPES": "[]"}, "OPPEN_MAPPING_SEND_TYPES"),
    ({"OPPEN_MAPPING_SEND_TYPES": '{"A": 1}'}, "OPPEN_MAPPING_SEND_TYPES"),
    ({"OPPEN_MAPPING_SEND_TYPES": '["A", null]'}, "OPPEN_MAPPING_SEND_TYPES"),
    ({"OPPEN_MAPPING_EXCLUDED_LOCALS": '["CG", null]'}, "OPPEN_MAPPING_EXCLUDED_LOCALS"),
    ({"OPPEN_MAPPING_EXCLUDED_LOCALS": '["CG", "  "]'}, "OPPEN_MAPPING_EXCLUDED_LOCALS"),
    ({"OPPEN_MAPPING_EXCLUDED_LOCALS": '{"CG": true}'}, "OPPEN_MAPPING_EXCLUDED_LOCALS"),
    ({"OPPEN_WEBHOOK_URL": "http://hooks.example.com/services/SECRETO"}, "OPPEN_WEBHOOK_URL"),
    ({"OPPEN_WEBHOOK_URL": "https://[::1/x"}, "OPPEN_WEBHOOK_URL"),
    ({"OPPEN_BASE_URL": "http://127.0.0.1:99999", **CREDS}, "OPPEN_BASE_URL"),
    ({"OPPEN_BASE_URL": "http://127.0.0.1:puerto", **CREDS}, "OPPEN_BASE_URL"),
    ({"OPPEN_BASE_URL": "http://127.0.0.1:8765/?x=1", **CREDS}, "OPPEN_BASE_URL"),
    ({"OPPEN_BASE_URL": "http://127.0.0.1:8765/ x", **CREDS}, "OPPEN_BASE_URL"),
])
def test_out_of_range_value_names_the_setting(missing, environ, name):
    message = refused(environ, missing)
    assert name in message
    assert "Error inesperado" not in message
    assert "\n" not in message


@pytest.mark.parametrize("url", ["ftp://u:SECRETO@host", "https://u:SECRETO@ngprueba.oppen.io",
                                 "http://u:SECRETO@127.0.0.1:8765", "https://:SECRETO@[::1",
                                 "gopher://SECRETO"])
def test_base_url_with_credentials_never_shows_them(missing, url):
    message = refused({"OPPEN_ENV": "test", "OPPEN_BASE_URL": url, **CREDS}, missing)
    assert "OPPEN_BASE_URL" in message
    assert "SECRETO" not in message


def test_webhook_url_is_never_shown(missing):
    for url in ("http://hooks.example.com/services/SECRETO", "ftp://hooks/SECRETO",
                "https://[hooks/SECRETO"):
        message = refused({"OPPEN_WEBHOOK_URL": url}, missing)
        assert "OPPEN_WEBHOOK_URL" in message and "SECRETO" not in message


def test_malformed_base_url_is_a_spanish_line_not_an_unexpected_error(missing):
    message = refused({"OPPEN_BASE_URL": "http://[::1", **CREDS}, missing)
    assert message.startswith("OPPEN_BASE_URL no es una URL válida")
    assert "ValueError" not in message


@pytest.mark.parametrize("toml, name", [
    ("OPPEN_TIMEOUT = true\n", "OPPEN_TIMEOUT"),
    ("OPPEN_TIMEOUT = nan\n", "OPPEN_TIMEOUT"),
    ("OPPEN_TIMEOUT = inf\n", "OPPEN_TIMEOUT"),
    ("OPPEN_TIMEOUT = -inf\n", "OPPEN_TIMEOUT"),
    ("OPPEN_LEASE_SECONDS = 1e300\n", "OPPEN_LEASE_SECONDS"),
    ("OPPEN_MAX_ATTEMPTS = true\n", "OPPEN_MAX_ATTEMPTS"),
    ("OPPEN_MAX_ATTEMPTS = 2.0\n", "OPPEN_MAX_ATTEMPTS"),
    ("OPPEN_CONCURRENCY = [4]\n", "OPPEN_CONCURRENCY"),
    ("OPPEN_API = true\n", "OPPEN_API"),
    ("OPPEN_USERNAME = [\"API\"]\n", "OPPEN_USERNAME"),
    ("[mapping]\npayment_days = 99999999\n", "payment_days"),
    ("[mapping]\npayment_days = true\n", "payment_days"),
    ("[mapping]\nsernr_base = 9223372036854775807\n", "sernr_base"),
    ("[mapping]\nprice_includes_vat = 2\n", "price_includes_vat"),
    ("[mapping]\nprice_includes_vat = 1.0\n", "price_includes_vat"),
    ("[mapping]\nvat_rate = nan\n", "vat_rate"),
    ("[mapping]\nvat_rate = true\n", "vat_rate"),
    ("[mapping]\noffice = true\n", "office"),
    ("[mapping]\noffice = 1.5\n", "office"),
    ("[mapping]\nstatus = 1.0\n", "status"),
    ("[mapping]\nlabels_by_local = { CG = \"\" }\n", "labels_by_local"),
    ("[mapping]\nlabels_by_local = { CG = { x = 1 } }\n", "labels_by_local"),
    ("[mapping]\nlabels_by_local = { Tostado = \"T1\", TOSTADO = \"T2\" }\n", "labels_by_local"),
    ("[mapping]\ncustomers_by_local = { MATRIZ = \"A\", \" matriz\" = \"B\" }\n",
     "customers_by_local"),
    ("[mapping]\nvoucher_codes = { A = \"001\", Q = \"999\" }\n", "voucher_codes"),
    ("[mapping]\ninvoice_types = { A = -1 }\n", "invoice_types"),
    ("[mapping]\ninvoice_types = { M = 0 }\n", "art_codes"),
    ("[mapping]\nsend_types = []\n", "send_types"),
    ("[mapping]\nsend_types = \"A;B\"\n", "send_types"),
    ("[mapping]\nsend_types = [\"A\", \"Factura B\"]\n", "send_types"),
    ("[mapping]\nexcluded_locals = [\"CG\", 3.5]\n", "excluded_locals"),
    ("[mapping]\nexcluded_locals = [\"CG\", \"\"]\n", "excluded_locals"),
])
def test_bad_value_in_the_file_names_the_setting(secrets_file, toml, name):
    message = refused({}, secrets_file(toml))
    assert name in message
    assert "\n" not in message


@pytest.mark.parametrize("environ", [
    {"OPPEN_TIMEOUT": "600", "OPPEN_BACKOFF_BASE": "60", "OPPEN_BACKOFF_CAP": "300",
     "OPPEN_LEASE_SECONDS": "86400", "OPPEN_BREAKER_THRESHOLD": "1000",
     "OPPEN_MAX_ATTEMPTS": "20", "OPPEN_CONCURRENCY": "64"},
    {"OPPEN_TIMEOUT": "0.3", "OPPEN_BACKOFF_BASE": "0.001", "OPPEN_BACKOFF_CAP": "0.01",
     "OPPEN_LEASE_SECONDS": "1", "OPPEN_BREAKER_THRESHOLD": "1", "OPPEN_MAX_ATTEMPTS": "1",
     "OPPEN_CONCURRENCY": "1"},
    {"OPPEN_MAPPING_SERNR_BASE": str(10 ** 15), "OPPEN_MAPPING_PAYMENT_DAYS": "3650",
     "OPPEN_MAPPING_QTY": "1000", "OPPEN_MAPPING_VAT_RATE": "0"},
    {"OPPEN_MAPPING_SERNR_BASE": "1", "OPPEN_MAPPING_PAYMENT_DAYS": "0",
     "OPPEN_MAPPING_STATUS": "1", "OPPEN_API": "Api_Ng-2.v1"},
    {"OPPEN_WEBHOOK_URL": "http://127.0.0.1:9000/hook"},
    {"OPPEN_BASE_URL": "http://[::1]:8765/", **CREDS},
])
def test_values_at_the_edges_of_their_range_are_accepted(missing, environ):
    load_settings(environ=environ, secrets_path=missing)


def test_sernr_base_plus_row_ids_stays_below_bigint(missing):
    from sync.settings import SERNR_BASE_MAX
    s = load_settings(environ={"OPPEN_MAPPING_SERNR_BASE": str(SERNR_BASE_MAX)},
                      secrets_path=missing)
    assert s.mapping.sernr_base + 2 ** 62 < 2 ** 63


def test_validate_refuses_absurd_values_in_settings_built_in_code():
    from sync.settings import Settings, validate
    for changes, name in [({"timeout": 1e300}, "OPPEN_TIMEOUT"),
                          ({"lease_seconds": float("nan")}, "OPPEN_LEASE_SECONDS"),
                          ({"backoff_cap": float("inf")}, "OPPEN_BACKOFF_CAP"),
                          ({"backoff_base": 0.0}, "OPPEN_BACKOFF_BASE"),
                          ({"timeout": 0}, "OPPEN_TIMEOUT"),
                          ({"max_attempts": 0}, "OPPEN_MAX_ATTEMPTS"),
                          ({"concurrency": True}, "OPPEN_CONCURRENCY"),
                          ({"api": ""}, "OPPEN_API")]:
        with pytest.raises(ConfigError) as info:
            validate(Settings(**changes))
        assert name in str(info.value)


@pytest.mark.parametrize("profile, name", [
    (REAL_PROFILE.replace(labels_by_local={"CG": None}), "labels_by_local"),
    (REAL_PROFILE.replace(payment_days=10 ** 8), "payment_days"),
    (REAL_PROFILE.replace(sernr_base=2 ** 63 - 1), "sernr_base"),
    (REAL_PROFILE.replace(send_types=("A", "X")), "send_types"),
    (REAL_PROFILE.replace(send_types=()), "send_types"),
    (REAL_PROFILE.replace(offices={"X": "1"}), "offices"),
    (REAL_PROFILE.replace(vat_rate=Decimal("NaN")), "vat_rate"),
    (REAL_PROFILE.replace(excluded_locals=("CG", None)), "excluded_locals"),
])
def test_validate_refuses_bad_profiles_built_in_code(profile, name):
    from sync.settings import Settings, validate
    with pytest.raises(ConfigError) as info:
        validate(Settings(mapping=profile))
    assert name in str(info.value)


def test_validate_accepts_both_shipped_profiles():
    from sync.settings import Settings, validate
    for profile in (SEED_PROFILE, REAL_PROFILE, REAL_PROFILE.with_labels({"Tostado": "T1"}),
                    # Two spellings in the host's table: those rows map as invalid, the
                    # settings stay valid.
                    REAL_PROFILE.with_labels([("Tostado", "T1"), ("TOSTADO", "T2")])):
        assert validate(Settings(mapping=profile)).mapping == profile


# --- the new mapping fields from configuration ------------------------------------------------

def test_per_type_fields_and_exclusions_from_the_file(secrets_file):
    path = secrets_file("""
        [mapping]
        profile = "real"
        offices = { CC = "250" }
        vat_codes = { CC = "3", A = "" }
        price_includes_vat_by_type = { CC = true, Z = "false" }
        pos_widths = { cc = 4 }
        number_widths = { CC = 8 }
        send_types = ["a", "B", "Z", "CC"]
        excluded_locals = ["Centro Gallego", " CG "]
        labels_by_local = { Tostado = " TSTTR01 " }
    """)
    m = load_settings(environ={}, secrets_path=path).mapping
    assert dict(m.offices) == {"CC": "250"}
    assert dict(m.vat_codes) == {"CC": "3", "A": ""}
    assert dict(m.price_includes_vat_by_type) == {"CC": True, "Z": False}
    assert dict(m.pos_widths) == {"CC": 4}
    assert dict(m.number_widths) == {"CC": 8}
    assert m.send_types == ("A", "B", "Z", "CC")
    assert m.excluded_locals == ("Centro Gallego", "CG")
    assert m.is_excluded_local("cg") and m.is_excluded_local("CENTRO GALLEGO ")
    assert dict(m.labels_by_local) == {"Tostado": "TSTTR01"}


@pytest.mark.parametrize("raw", ["A,B,Z", " a , b ,z ", '["A", "B", "Z"]'])
def test_send_types_from_the_environment(missing, raw):
    m = load_settings(environ={"OPPEN_MAPPING_SEND_TYPES": raw}, secrets_path=missing).mapping
    assert m.send_types == ("A", "B", "Z")


def test_excluded_locals_from_the_environment(missing):
    m = load_settings(environ={"OPPEN_MAPPING_EXCLUDED_LOCALS": '["Pérez, Juan", "CG"]'},
                      secrets_path=missing).mapping
    assert m.excluded_locals == ("Pérez, Juan", "CG")
    m = load_settings(environ={"OPPEN_MAPPING_EXCLUDED_LOCALS": "CG, Centro"},
                      secrets_path=missing).mapping
    assert m.excluded_locals == ("CG", "Centro")


def test_defaults_of_the_new_fields(missing):
    seed = load_settings(environ={}, secrets_path=missing).mapping
    assert seed.send_types == ("A", "B", "Z", "CC") and seed.excluded_locals == ()
    assert dict(seed.offices) == dict(seed.vat_codes) == dict(seed.pos_widths) == {}
    real = load_settings(environ={"OPPEN_PROFILE": "real"}, secrets_path=missing).mapping
    assert real.send_types == ("A", "B", "Z")
    assert (real.office_for("CC"), real.vat_code_for("CC"), real.price_includes_vat_for("CC"),
            real.pos_width_for("CC"), real.art_codes["CC"], real.voucher_codes["CC"]) == \
        ("200", "3", True, 4, "OTR-ING", "082")
    assert (real.office_for("A"), real.vat_code_for("A"), real.price_includes_vat_for("A"),
            real.pos_width_for("A")) == ("100", "", False, 5)


def test_a_scalar_setting_keeps_its_meaning_for_every_type(secrets_file):
    # An existing configuration that sets only the scalar: every type follows it...
    path = secrets_file('[mapping]\noffice = "300"\nvat_code = "5"\nprice_includes_vat = false\n')
    m = load_settings(environ={}, secrets_path=path).mapping
    assert {m.office_for(t) for t in "A B Z CC".split()} == {"300"}
    assert {m.vat_code_for(t) for t in "A B Z CC".split()} == {"5"}
    assert {m.price_includes_vat_for(t) for t in "A B Z CC".split()} == {False}
    # ...except, with the real profile, the types its own tables name (CC).
    path = secrets_file('[mapping]\nprofile = "real"\noffice = "300"\n')
    m = load_settings(environ={}, secrets_path=path).mapping
    assert (m.office_for("A"), m.office_for("CC")) == ("300", "200")


def test_environment_tables_merge_over_the_file_key_by_key(secrets_file):
    path = secrets_file('[mapping]\nart_codes = { A = "FILE-A" }\n'
                        'labels_by_local = { Tostado = "FILE", Palermo = "PAL" }\n')
    m = load_settings(environ={"OPPEN_MAPPING_ART_CODES": '{"B": "ENV-B"}',
                               "OPPEN_MAPPING_LABELS_BY_LOCAL": '{"TOSTADO": "ENV"}'},
                      secrets_path=path).mapping
    assert dict(m.art_codes) == {"A": "FILE-A", "B": "ENV-B", "Z": "271240051", "CC": "271240051"}
    assert dict(m.labels_by_local) == {"Palermo": "PAL", "TOSTADO": "ENV"}


def test_one_local_spelled_twice_with_the_same_code_is_fine(secrets_file):
    path = secrets_file('[mapping]\nlabels_by_local = { Tostado = "T1", TOSTADO = "T1" }\n')
    assert load_settings(environ={}, secrets_path=path).mapping.labels_for("tostado") == ("T1",)


def test_a_new_type_needs_its_invoice_type_and_article(secrets_file):
    path = secrets_file('[mapping]\ninvoice_types = { M = 5 }\nart_codes = { M = "ART-M" }\n'
                        'send_types = ["A", "M"]\noffices = { M = "400" }\n')
    m = load_settings(environ={}, secrets_path=path).mapping
    assert m.send_types == ("A", "M") and m.office_for("M") == "400"


def test_labels_null_never_becomes_the_text_none(secrets_file, missing):
    message = refused({"OPPEN_MAPPING_LABELS_BY_LOCAL": '{"CG": null}'}, missing)
    assert "CG" in message and "None" not in message


def test_the_real_profile_from_configuration_maps_the_golden_invoice(secrets_file):
    path = secrets_file("""
        [mapping]
        profile = "real"
        customers_by_local = { Tostado = "CUIT0" }
    """)
    m = load_settings(environ={}, secrets_path=path).mapping.with_labels({"Tostado": "TSTTR01"})
    row = {"local": "Tostado", "fecha": "2026-03-21", "tipo": "B", "punto_venta": 2,
           "nro_factura": 9439, "monto": Decimal("2029744.31")}
    result = map_invoice(row, m, today=dt.date(2026, 3, 22))
    assert isinstance(result, Mapped)
    assert result.payload["Labels"] == "TSTTR01" and result.payload["CustCode"] == "CUIT0"
    assert result.payload["Items"][0]["Price"] == 1677474.64
    assert result.payload["DueDate"] == "2026-04-20"
