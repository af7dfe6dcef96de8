"""What the console asks of the browser, through one small script Streamlit runs in the
page (st.components.v2, Streamlit's own way to run trusted JavaScript; no third-party
component):

- the session cookie: the signed token of `sync.logins` is kept in a first-party cookie
  (`SameSite=Strict`, `Secure` over https, expiring with the session), which Streamlit
  hands back on every new connection as `st.context.cookies`: a reload or another tab
  finds the session. Logging out deletes it (and `sync.logins.end_session` kills the
  token on the server, so a copied cookie dies too). The token never goes in the URL,
  which people share.
- Spanish widgets: Streamlit's date pickers take their month and day names and the first
  day of the week from `navigator.language`; it is set to es-AR here, so an en-US
  browser gets the same Spanish calendar.
- on a phone, the sidebar closes once a page is chosen.

The script receives only constants and the token: never text from the database.
"""

from __future__ import annotations

import streamlit as st

COOKIE = "oppen_consola_sesion"
# Up to this width Streamlit starts with its sidebar closed and lays it over the page
# (its "md" breakpoint): there it must close again once a page is chosen.
PHONE_MAX_WIDTH = 768

_JS = """
export default function (component) {
  const { data } = component;
  if (navigator.language !== "es-AR") {
    Object.defineProperty(navigator, "language", { get: () => "es-AR", configurable: true });
    Object.defineProperty(navigator, "languages", { get: () => ["es-AR", "es"], configurable: true });
  }
  const cookie = (data && data.cookie) || null;
  if (cookie) {
    const secure = window.location.protocol === "https:" ? "; Secure" : "";
    const current = document.cookie.split("; ").find((c) => c.startsWith(cookie.name + "="));
    if (cookie.value) {
      if (!current || current.slice(cookie.name.length + 1) !== cookie.value) {
        document.cookie = `${cookie.name}=${cookie.value}; Path=/; Max-Age=${cookie.maxAge}; SameSite=Strict${secure}`;
      }
    } else if (current) {
      document.cookie = `${cookie.name}=; Path=/; Max-Age=0; SameSite=Strict${secure}`;
    }
  }
  if (!window.__oppenSidebarCloser) {
    window.__oppenSidebarCloser = true;
    document.addEventListener("click", (event) => {
      const link = event.target.closest && event.target.closest('[data-testid="stSidebarNav"] a');
      if (!link || window.innerWidth > __PHONE_MAX_WIDTH__) return;
      setTimeout(() => {
        const close = document.querySelector('[data-testid="stSidebarCollapseButton"] button')
          || document.querySelector('[data-testid="stSidebar"] [data-testid="stBaseButton-headerNoPadding"]');
        if (close) close.click();
      }, 150);
    }, true);
  }
}
"""

_component = st.components.v2.component(
    "oppen_consola_navegador", js=_JS.replace("__PHONE_MAX_WIDTH__", str(PHONE_MAX_WIDTH)))


def sync_browser(token: str | None, max_age: int, *, write: bool) -> None:
    """Run the page script: Spanish widgets always; the cookie written when `write` (a
    token: keep it; None: delete it)."""
    cookie = {"name": COOKIE, "value": token or "", "maxAge": int(max_age)} if write else None
    try:
        _component(key="oppen_navegador", data={"cookie": cookie}, height=0, width="stretch")
    except Exception:  # noqa: BLE001 - never a traceback: the console works without it
        pass


def session_cookie() -> str | None:
    """The session token the browser sent when this connection opened, if any."""
    try:
        value = st.context.cookies.get(COOKIE)
    except Exception:  # noqa: BLE001 - outside a browser session (tests)
        return None
    return value if isinstance(value, str) else None


def client_address() -> str | None:
    """The address the connection came from (throttling's 'client')."""
    try:
        value = st.context.ip_address
    except Exception:  # noqa: BLE001 - outside a browser session (tests)
        return None
    return value if isinstance(value, str) else None
