"""The HTML the sandbox shows: its own root and docs pages, and the two 502 pages the
real service sends when it is not there (nginx's, and the stopped test instance's).
Everything interpolated is escaped; nothing here reads requests or stored invoices.
"""

from __future__ import annotations

import html

from .replies import Reply, html_reply

# What nginx in front of an unreachable Oppen sends back.
_BAD_GATEWAY = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)

# What a stopped Oppen test instance answers until someone starts it from the panel.
_TESTING_FRAMEWORK = (
    "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>Testing Framework</title></head>\n"
    "<body><h1>Testing Framework</h1>\n"
    "<p>This testing instance is stopped. Start it from the Oppen panel to use it.</p>\n"
    "</body></html>\n"
)


def bad_gateway() -> Reply:
    return html_reply(502, _BAD_GATEWAY)


def testing_framework() -> Reply:
    return html_reply(502, _TESTING_FRAMEWORK)


def root_page(base: str, *, invoices: int, down: bool, stopped: bool) -> Reply:
    api = html.escape(base)
    yes_no = {True: "sí", False: "no"}
    return html_reply(200, (
        "<!doctype html><html><head><meta charset='utf-8'><title>Oppen sandbox</title></head>"
        f"<body><h1>Oppen sandbox</h1><p>Réplica local de la API NG de Oppen en "
        f"<a href='{api}docs/'><code>{api}</code></a>. Nunca se comunica con el Oppen real.</p>"
        f"<p>Facturas guardadas: {invoices}. Caído: {yes_no[down]}. "
        f"Instancia detenida: {yes_no[stopped]}.</p></body></html>"
    ))


def docs_page(base: str) -> Reply:
    api = html.escape(base)
    return html_reply(200, (
        "<!doctype html><html><head><meta charset='utf-8'><title>Oppen sandbox API</title></head>"
        f"<body><h1>{api}</h1><ul>"
        f"<li><code>POST {api}authenticate</code> {{username, password}}</li>"
        f"<li><code>POST {api}Invoice</code> invoice record (Bearer token)</li>"
        f"<li><code>GET {api}Invoice?Field=v&amp;Field__gte=v&amp;Field__lte=v&amp;__limit__=N"
        "&amp;__offset__=K&amp;__total_records__=1</code> (Bearer token)</li>"
        "</ul></body></html>"
    ))
