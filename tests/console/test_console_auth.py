"""Login and roles: bcrypt against the configured users, the demo users only on the
sandbox, and role checks that hold wherever an action runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from sync import auth
from sync.settings import ConfigError, load_settings

from ui_helpers import PASSWORDS


@pytest.fixture
def configured(secrets_file):
    return load_settings(environ={}, secrets_path=secrets_file)


def test_configured_users_log_in_with_their_password(configured):
    user = auth.authenticate(configured, "ana", PASSWORDS["ana"])
    assert (user.username, user.name, user.role, user.password_hash) == (
        "ana", "Ana Auditora", "auditor", "")
    assert auth.authenticate(configured, " beto ", PASSWORDS["beto"]).role == "admin"


@pytest.mark.parametrize("username, password", [
    ("ana", "otra-clave"), ("ana", ""), ("nadie", "ana-clave-123"), ("", ""),
    ("ana", "x" * 100), ("auditor", "auditor-demo"),   # demo users: not when users exist
])
def test_wrong_credentials_get_one_message(configured, username, password):
    with pytest.raises(auth.LoginFailed) as refused:
        auth.authenticate(configured, username, password)
    assert refused.value.message == "Usuario o contraseña incorrectos"


def test_demo_users_on_the_sandbox_match_the_readme(tmp_path):
    sandbox = load_settings(environ={}, secrets_path=tmp_path / "none.toml")
    assert auth.demo_mode(sandbox)
    assert auth.authenticate(sandbox, "auditor", "auditor-demo").role == "auditor"
    assert auth.authenticate(sandbox, "admin", "admin-demo").role == "admin"
    with pytest.raises(auth.LoginFailed):
        auth.authenticate(sandbox, "admin", "auditor-demo")


@pytest.mark.parametrize("env, label", [("test", "PRUEBAS"), ("production", "PRODUCCIÓN")])
def test_demo_users_are_refused_on_real_targets(tmp_path, env, label):
    settings = load_settings(environ={"OPPEN_ENV": env, "OPPEN_USERNAME": "API",
                                      "OPPEN_PASSWORD": "x"},
                             secrets_path=tmp_path / "none.toml")
    assert not auth.demo_mode(settings)
    with pytest.raises(ConfigError) as refused:
        auth.authenticate(settings, "admin", "admin-demo")
    assert f"No hay usuarios configurados para el entorno {label}" in refused.value.message
    assert "[users.<nombre>]" in refused.value.message


def test_no_plain_password_in_the_code():
    source = Path(auth.__file__).read_text(encoding="utf-8")
    assert "auditor-demo" not in source and "admin-demo" not in source


def test_roles(configured):
    ana = auth.authenticate(configured, "ana", PASSWORDS["ana"])
    beto = auth.authenticate(configured, "beto", PASSWORDS["beto"])
    assert auth.has_role(ana, "auditor") and not auth.has_role(ana, "admin")
    assert auth.has_role(beto, "auditor") and auth.has_role(beto, "admin")
    assert not auth.has_role(None, "auditor") and not auth.has_role(beto, "root")
    assert auth.require_role(beto, "admin") is beto
    with pytest.raises(auth.PermissionDenied) as refused:
        auth.require_role(ana, "admin", "reenviar facturas")
    assert refused.value.message == ("No tenés permiso para reenviar facturas: hace falta el "
                                     "rol Administrador")
    with pytest.raises(auth.PermissionDenied, match="iniciar sesión"):
        auth.require_role(None, "auditor")


def test_refresh_follows_the_configuration(configured, secrets_file):
    beto = auth.authenticate(configured, "beto", PASSWORDS["beto"])
    assert auth.refresh(configured, beto) == beto
    secrets_file.write_text(secrets_file.read_text(encoding="utf-8").replace(
        'role = "admin"', 'role = "auditor"'), encoding="utf-8")
    demoted = auth.refresh(load_settings(environ={}, secrets_path=secrets_file), beto)
    assert demoted.role == "auditor"
    removed = load_settings(environ={}, secrets_path=secrets_file.parent / "none.toml")
    assert auth.refresh(removed, beto) is None   # back to demo users: beto is gone
    assert auth.refresh(configured, None) is None
