"""Threaded HTTP and WebSocket servers on 127.0.0.1 free ports, started and stopped in-process."""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets import http11
from websockets.sync.server import Server, ServerConnection, serve

log = logging.getLogger(__name__)
# The server side of the fake sockets logs request lines, which carry the client's access token in
# Kite's query string; keep them out of the logs the secrets test greps (the fake is not the service).
_protocol_log = logging.getLogger(__name__ + ".protocol")
_protocol_log.propagate = False
_protocol_log.disabled = True
_protocol_log.addHandler(logging.NullHandler())


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]
    json_body: Any
    headers: dict[str, str]


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    delay_seconds: float = 0.0  # a slow reply (timeout faults)
    drop: bool = False  # close the connection without replying

    @staticmethod
    def json(status: int, payload: Any, delay_seconds: float = 0.0) -> Response:
        return Response(status, json.dumps(payload, default=str).encode(), delay_seconds=delay_seconds)


Router = Callable[[Request], Response]


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client killed mid-request (the crash soak's kill -9) resets its socket: expected, not a traceback on
        stderr. Anything else is still reported."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            log.debug("client %s went away mid-request", client_address)
            return
        super().handle_error(request, client_address)


@dataclass
class HttpServerThread:
    router: Router
    server: ThreadingHTTPServer | None = None
    thread: threading.Thread | None = None
    stop_event: threading.Event = field(default_factory=threading.Event)

    def start(self) -> int:
        router, stop_event = self.router, self.stop_event

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out as two writes: avoid 40 ms delayed-ACK stalls

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("fake http: " + format, *args)

            def _serve(self) -> None:
                split = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                content_type = self.headers.get("Content-Type") or ""
                form: dict[str, str] = {}
                body: Any = None
                if raw and "json" in content_type:
                    body = json.loads(raw)
                elif raw:
                    form = {k: v[-1] for k, v in parse_qs(raw.decode()).items()}
                request = Request(
                    self.command,
                    split.path,
                    {k: v[-1] for k, v in parse_qs(split.query).items()},
                    form,
                    body,
                    {k.lower(): v for k, v in self.headers.items()},
                )
                response = router(request)
                if response.delay_seconds:
                    stop_event.wait(response.delay_seconds)
                if response.drop:
                    self.close_connection = True
                    return
                try:
                    self.send_response(response.status)
                    self.send_header("Content-Type", response.content_type)
                    self.send_header("Content-Length", str(len(response.body)))
                    self.end_headers()
                    self.wfile.write(response.body)
                except OSError:
                    # The client gave up (its timeout fired during a slow-reply fault): expected.
                    self.close_connection = True

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="fake-http", daemon=True)
        self.thread.start()
        return int(self.server.server_address[1])

    def stop(self) -> None:
        self.stop_event.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


class WebSocketServerThread:
    """Keeps the open connections so tests can broadcast to them or drop them."""

    def __init__(
        self,
        on_connect: Callable[[ServerConnection], bool],
        on_message: Callable[[ServerConnection, str | bytes], None],
        *,
        refuse_in_handshake: bool = False,
    ) -> None:
        self._on_connect = on_connect
        # Kite answers bad credentials with HTTP 403 to the opening handshake (the client never sees an open
        # socket); otherwise the socket opens and closes at once with 1008.
        self._refuse_in_handshake = refuse_in_handshake
        self._on_message = on_message
        self.connections: set[ServerConnection] = set()
        self._lock = threading.Lock()
        self.server: Server | None = None
        self.connect_count = 0

    def start(self) -> int:
        self.server = serve(self._handle, "127.0.0.1", 0, logger=_protocol_log,
                            process_request=self._authorize if self._refuse_in_handshake else None)
        threading.Thread(target=self.server.serve_forever, name="fake-ws", daemon=True).start()
        return int(self.server.socket.getsockname()[1])

    def _authorize(self, connection: ServerConnection, request: http11.Request) -> http11.Response | None:
        del request  # the connection holds it
        if self._on_connect(connection):
            return None
        return connection.respond(HTTPStatus.FORBIDDEN, "invalid credentials\n")

    def _handle(self, connection: ServerConnection) -> None:
        if not self._refuse_in_handshake and not self._on_connect(connection):
            connection.close(code=1008, reason="invalid credentials")
            return
        with self._lock:
            self.connections.add(connection)
            self.connect_count += 1
        try:
            for message in connection:
                self._on_message(connection, message)
        except Exception:
            log.debug("fake ws: connection ended", exc_info=True)
        finally:
            with self._lock:
                self.connections.discard(connection)

    def broadcast(self, message: str | bytes) -> int:
        with self._lock:
            targets = list(self.connections)
        sent = 0
        for connection in targets:
            try:
                connection.send(message)
                sent += 1
            except Exception:
                log.debug("fake ws: send failed", exc_info=True)
        return sent

    def drop_all(self) -> None:
        with self._lock:
            targets = list(self.connections)
        for connection in targets:
            # An abrupt close (no close frame) is what a network drop looks like to the client.
            connection.socket.close()

    def stop(self) -> None:
        self.drop_all()
        if self.server is not None:
            self.server.shutdown()
