"""Settings: defaults < `.streamlit/secrets.toml` < environment, every problem a
ConfigError naming the setting, and no password in a repr."""

from __future__ import annotations

import dataclasses
import datetime as dt
import textwrap

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
