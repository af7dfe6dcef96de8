"""Single sign-on through Streamlit's st.login, as far as it can be tried without a real
identity provider: with [auth] configured the login page offers it; an identity
(st.user, as AppTest simulates it) whose e-mail is a configured user's gets that user's
name and role and a session, logged as an SSO login; an e-mail nobody configured is
refused with the Spanish message and logged as a failure."""

from __future__ import annotations

import sqlalchemy as sa

from sync import logins
from sync.state import schema

from ui_helpers import no_exception, shows

AUTH = """
[auth]
redirect_uri = "http://localhost:8501/oauth2callback"
cookie_secret = "una-clave-de-prueba-larga-y-aleatoria"

[auth.google]
client_id = "cliente-de-prueba"
client_secret = "secreto-de-prueba"
server_metadata_url = "https://accounts.google.com/.well-known/openid-configuration"

[users.carla]
name = "Carla Contadora"
role = "admin"
email = "Carla@Cadena.com.ar"
"""


def _with_sso(secrets_file) -> None:
    secrets_file.write_text(secrets_file.read_text(encoding="utf-8") + AUTH, encoding="utf-8")


def _logins(engine):
    t = schema.oppen_logins
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            sa.select(t.c.username, t.c.method, t.c.outcome).order_by(t.c.id))]


def test_the_login_page_offers_the_configured_provider(console_env, app, secrets_file):
    _with_sso(secrets_file)
    at = app("pages/auditoria.py")
    at.user = {"is_logged_in": False}
    at.run()
    no_exception(at)
    assert "Ingresar con Google" in [b.label for b in at.button]
    assert "user" not in at.session_state


def test_a_configured_email_logs_in_with_its_role(console_env, app, secrets_file):
    _with_sso(secrets_file)
    at = app("pages/auditoria.py")
    at.user = {"is_logged_in": True, "email": "carla@cadena.com.ar", "name": "Carla"}
    at.run()
    no_exception(at)
    user = at.session_state["user"]
    assert (user.username, user.name, user.role) == ("carla", "Carla Contadora", "admin")
    assert at.session_state["login_method"] == logins.SSO
    assert [t.value for t in at.title] == ["Auditoría"]
    assert _logins(console_env["engine"]) == [("carla", logins.SSO, logins.OK)]


def test_an_unknown_email_is_refused_and_logged(console_env, app, secrets_file):
    _with_sso(secrets_file)
    at = app("pages/auditoria.py")
    at.user = {"is_logged_in": True, "email": "intruso@example.com"}
    at.run()
    no_exception(at)
    assert "user" not in at.session_state
    assert shows(at, "error", "no tiene acceso a esta consola")
    assert _logins(console_env["engine"]) == [("intruso@example.com", logins.SSO, logins.FAILED)]
