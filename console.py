"""The operations console: `streamlit run console.py`.

A router and the shared chrome only: it loads the settings, draws the sidebar (who is
logged in, their role, the Oppen target in a colour that cannot be missed) and shows
each person the pages of their role. The pages in `pages/` call the `sync` package
and render what it returns.
"""

from __future__ import annotations

import logging

import streamlit as st

from sync import auth
from ui import session

st.set_page_config(page_title="Consola Oppen", page_icon="🧾", layout="wide")
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

settings = session.load()
user = session.current_user(settings)

if user is not None:
    with st.sidebar:
        session.env_badge(settings)
        st.markdown(f"**{user.name}**  \n{auth.ROLE_LABELS.get(user.role, user.role)}"
                    f" · usuario `{user.username}`")
        if st.button("Cerrar sesión", icon=":material/logout:"):
            session.logout()
            st.rerun()

pages = {"Auditoría": [
    st.Page("pages/auditoria.py", title="Auditoría", icon=":material/fact_check:", default=True),
    st.Page("pages/locales_auditados.py", title="Locales auditados",
            icon=":material/event_available:"),
    st.Page("pages/vista_previa.py", title="Vista previa", icon=":material/preview:"),
]}
if user is None or auth.has_role(user, "admin"):
    pages["Administración"] = [
        st.Page("pages/facturas_fallidas.py", title="Facturas fallidas", icon=":material/error:"),
        st.Page("pages/monitoreo.py", title="Monitoreo", icon=":material/monitoring:"),
    ]

if user is None:
    # Register the pages (hidden) so the address asked for is still known after logging
    # in, but run none of them: only the login form shows.
    st.navigation(pages, position="hidden")
    session.login_form(settings)
else:
    st.navigation(pages).run()
