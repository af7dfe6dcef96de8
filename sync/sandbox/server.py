"""The sandbox's HTTP front: a threaded HTTP/1.1 server on a real socket that reads each
request, hands it to one `respond` function and puts the Reply on the wire, including
the misbehaving ways (hang, drop, trickle).

It knows nothing of Oppen. It listens only on the address it is given, never logs
requests (their headers carry tokens and passwords), and never lets a client's
hang-up end in a traceback.
"""

from __future__ import annotations

import http
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from .replies import Reply, error

MAX_BODY_BYTES = 8 * 1024 * 1024
# Idle keep-alive connections are closed after this long, freeing their thread.
IDLE_TIMEOUT_SECONDS = 300.0
SERVER_VERSION = "OppenSandbox/1"


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str  # as sent: path and query string
    headers: Any  # email.message.Message: case-insensitive get()
    body: bytes
    client_host: str


Respond = Callable[[Request], Reply]


class _BadRequest(Exception):
    """The request cannot be read; answer and close, since the stream is out of step."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.status)
        self.reply = reply


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Idle keep-alive clients would otherwise make server_close() wait for ever.
    block_on_close = False
    # The default backlog of 5 makes bursts of new connections wait for SYN retries.
    request_queue_size = 128
    front: HttpFront

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up mid-request is routine here (timeouts, drops); no tracebacks.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = SERVER_VERSION
    sys_version = ""
    timeout = IDLE_TIMEOUT_SECONDS
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.front._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.front._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        try:
            body = self._read_body()
            request = Request(method, self.path, self.headers, body, str(self.client_address[0]))
            reply = self.server.front.respond(request)
        except _BadRequest as exc:
            self.close_connection = True
            reply = exc.reply
        except Exception:
            reply = error(500, "Internal Server Error")
        try:
            self._deliver(reply)
        except OSError:
            self.close_connection = True

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        raw = self.headers.get("Content-Length")
        if raw is None:
            return b""
        try:
            length = int(raw)
        except ValueError:
            raise _BadRequest(error(400, "Invalid Content-Length")) from None
        if length < 0:
            raise _BadRequest(error(400, "Invalid Content-Length"))
        if length > MAX_BODY_BYTES:
            raise _BadRequest(error(413, "Payload Too Large"))
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        size_so_far = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _BadRequest(error(400, "Invalid chunked body")) from None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            size_so_far += size
            if size_so_far > MAX_BODY_BYTES:
                raise _BadRequest(error(413, "Payload Too Large"))
            parts.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def _deliver(self, reply: Reply) -> None:
        stopping = self.server.front.stopping
        if reply.action == "drop":
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if reply.action == "hang":
            # Nothing may be written: the client must see a read timeout, not an answer.
            stopping.wait(reply.hang_seconds)
            self.close_connection = True
            return
        head = self._head(reply)
        if reply.action == "trickle":
            # The head at once, then the body a byte at a time: every read returns
            # something, so only a deadline on the whole exchange ends the wait.
            self.wfile.write(head)
            for index in range(len(reply.body)):
                if stopping.wait(reply.trickle_ms / 1000.0):
                    self.close_connection = True
                    return
                self.wfile.write(reply.body[index:index + 1])
            return
        # One write for head and body: with a split write, Nagle plus delayed ACK can
        # stall every keep-alive answer by ~40 ms.
        self.wfile.write(head + reply.body)

    def _head(self, reply: Reply) -> bytes:
        try:
            phrase = http.HTTPStatus(reply.status).phrase
        except ValueError:
            phrase = "Unknown"
        lines = [
            f"HTTP/1.1 {reply.status} {phrase}",
            f"Server: {self.server_version}",
            f"Content-Type: {reply.content_type}",
            f"Content-Length: {len(reply.body)}",
        ]
        lines.extend(f"{name}: {value}" for name, value in reply.extra_headers)
        if self.close_connection:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class HttpFront:
    """Binds at once (so the port of a port-0 server is known before start), serves in
    a daemon thread, and can be stopped and started again on the same port."""

    def __init__(self, host: str, port: int, respond: Respond) -> None:
        self.host = host
        self.respond = respond
        # Set while stopping: wakes handlers sleeping on latency, hangs and trickles.
        self.stopping = threading.Event()
        self._life_lock = threading.Lock()
        self._conn_lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._thread: threading.Thread | None = None
        self._server: _Server | None = self._bind(port)
        self.port: int = self._server.server_address[1]

    def _bind(self, port: int) -> _Server:
        server = _Server((self.host, port), _Handler)
        server.front = self
        return server

    def start(self) -> None:
        with self._life_lock:
            if self._thread is not None:
                return
            if self._server is None:
                self._server = self._bind(self.port)
            self.stopping.clear()
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},  # stop() waits up to one interval
                name=f"oppen-sandbox-{self.port}",
                daemon=True,
            )
            self._thread.start()

    def stop(self) -> bool:
        """Close the socket and every open connection; False if it was not bound."""
        with self._life_lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
        if server is None:
            return False
        self.stopping.set()
        if thread is not None:
            server.shutdown()
        with self._conn_lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        return True

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._conn_lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)
