"""The operations console: `streamlit run console.py`.

The one entrance: every address (/, /vista_previa, /corridas?corrida=12…) runs this
router first. It loads the settings, finds who is logged in (this tab's session, or a
signed session kept in the browser's cookie, or single sign-on), shows only the login
until then, and then the page asked for if the person's role allows it, with the same
sidebar everywhere: who is logged in, their role, the Oppen target in a colour that
cannot be missed, and "Cerrar sesión". The pages in `pages/` call the `sync` package and
render what it returns.
"""

from __future__ import annotations

import logging

import streamlit as st

from sync import auth
from ui import formats, session

st.set_page_config(page_title="Consola Oppen", page_icon="🧾", layout="wide")
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

session.one_entrance(router=True)
settings = session.load()
user = session.current_user(settings)

pages = {"Auditoría": [
    st.Page("pages/auditoria.py", title="Auditoría", icon=":material/fact_check:", default=True),
    st.Page("pages/locales_auditados.py", title="Locales auditados",
            icon=":material/event_available:"),
    st.Page("pages/vista_previa.py", title="Vista previa", icon=":material/preview:"),
    st.Page("pages/corridas.py", title="Corridas", icon=":material/history:"),
]}
if user is None or auth.has_role(user, "admin"):
    pages["Administración"] = [
        st.Page("pages/facturas_fallidas.py", title="Facturas fallidas", icon=":material/error:"),
        st.Page("pages/monitoreo.py", title="Monitoreo", icon=":material/monitoring:"),
        st.Page("pages/conciliacion.py", title="Conciliación", icon=":material/balance:"),
    ]

session.keep_in_browser(settings)
if user is None:
    # Register the pages (hidden) so the address asked for is still known after logging
    # in, but run none of them: only the login form shows.
    st.navigation(pages, position="hidden")
    session.login_form(settings)
else:
    with st.sidebar:
        session.env_badge(settings)
        st.markdown(f"**{formats.md(user.name)}**  \n"
                    f"{auth.ROLE_LABELS.get(user.role, user.role)} · usuario "
                    f"{formats.md(user.username)}")
        if st.button("Cerrar sesión", icon=":material/logout:", key="cerrar_sesion"):
            session.logout(settings)
            st.rerun()
    page = st.navigation(pages)
    session.env_badge(settings, phone_only=True)
    with session.routed():
        page.run()
