"""The HTTP/1.1 server around :class:`~kafka_klaviyo_dev.emulator.app.EmulatorApp`.

The standard library's ``ThreadingHTTPServer`` is enough: a thread per connection, keep-alive
with ``protocol_version = "HTTP/1.1"``, and no dependency to add. The emulator's work per
request is CPU-bound Python either way, so an async server would not make it faster.

Two details matter for a client under test:

- ``TCP_NODELAY``: headers and body go out in separate writes; with Nagle's algorithm and the
  client's delayed ACKs every keep-alive response would otherwise stall for ~40 ms.
- ``stop()`` closes idle keep-alive connections and releases held (timeout-fault) requests, so
  a test suite never waits on a connection thread.

Run it in the background (``start()``/``stop()``, or as a context manager) or in the
foreground (``serve_forever()``, ended by ``request_stop()``, which is safe in signal handlers).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from kafka_klaviyo_dev.emulator import endpoints as ep
from kafka_klaviyo_dev.emulator.app import EmulatorApp, Request
from kafka_klaviyo_dev.emulator.config import EmulatorConfig
from kafka_klaviyo_dev.emulator.control import PREFIX, ControlApi
from kafka_klaviyo_dev.emulator.responses import Response, single_error
from kafka_klaviyo_dev.emulator.validation import validators_for
from kafka_klaviyo_dev.errors import DevstackError

logger = logging.getLogger(__name__)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], emulator: EmulatorServer) -> None:
        self.emulator = emulator
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def close_connections(self) -> None:
        with self.connections_lock:
            connections = list(self.connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "KlaviyoEmulator/1.0"
    sys_version = ""
    #: Idle keep-alive connections are closed after this many seconds.
    timeout = 300
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        try:
            with contextlib.suppress(OSError):
                super().finish()
        finally:
            with self.server.connections_lock:
                self.server.connections.discard(self.connection)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        emulator = self.server.emulator
        arrived = emulator.app.clock()
        url = urlsplit(self.path)
        body = self._read_body(emulator.config.max_request_bytes)
        if body is None:
            return
        request = Request(
            method=self.command,
            path=url.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            query=parse_qs(url.query),
            arrived=arrived,
        )
        if url.path == PREFIX or url.path.startswith(PREFIX + "/"):
            response = emulator.control.handle(request)
        elif url.path.startswith("/api/"):
            response = emulator.app.handle_api(request)
        else:
            response = single_error(404, f"Not found: {url.path}")
        if response.drop:
            # A timeout fault: vanish without an answer, as a dead upstream would.
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self._write(response)

    def _read_body(self, cap: int) -> bytes | None:
        """The request body; None if it was refused (the answer is already written)."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked(cap)
        raw = self.headers.get("Content-Length")
        if raw is None:
            return b""
        try:
            length = int(raw)
        except ValueError:
            self.close_connection = True
            self._write(single_error(400, "Content-Length is not a number."))
            return None
        if length > cap:
            # Refuse unread: the connection cannot be reused, so close it.
            self.close_connection = True
            self._write(single_error(413, f"The request body may not exceed {cap:,} bytes."))
            return None
        body = self.rfile.read(length) if length > 0 else b""
        if len(body) < length:
            # The client went away mid-body (a killed consumer): Klaviyo never sees such a
            # request, so neither answer nor record it.
            self.close_connection = True
            return None
        return body

    def _read_chunked(self, cap: int) -> bytes | None:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(65537).strip()
            try:
                size = int(line.split(b";", 1)[0], 16)
            except ValueError:
                self.close_connection = True
                self._write(single_error(400, "Malformed chunked body."))
                return None
            if size == 0:
                while self.rfile.readline(65537).strip():
                    pass  # trailers
                return b"".join(parts)
            total += size
            if total > cap:
                self.close_connection = True
                self._write(single_error(413, f"The request body may not exceed {cap:,} bytes."))
                return None
            chunk = self.rfile.read(size)
            if len(chunk) < size:
                self.close_connection = True  # cut off mid-body, as above
                return None
            parts.append(chunk)
            self.rfile.readline(3)

    def _write(self, response: Response) -> None:
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        try:
            self.end_headers()
            if response.body:
                self.wfile.write(response.body)
        except OSError:
            # The client hung up before reading its answer (killed mid-request); the
            # request itself was complete and has been recorded, as Klaviyo would.
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        # Request lines only (no headers: they carry the API key); debug level because a
        # benchmark makes thousands.
        logger.debug("emulator %s - " + format, self.address_string(), *args)


class EmulatorServer:
    """A Klaviyo emulator on a real socket.

    >>> server = EmulatorServer(EmulatorConfig(api_keys={"pk_test": "acme"}))
    >>> url = server.start()          # port 0 -> a free port
    >>> server.stop()
    """

    def __init__(
        self, config: EmulatorConfig, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """``clock``: monotonic seconds for Retry-After debts, fault expiry and rate-limit
        windows; a test may pass a manual clock to step time instead of sleeping."""
        self.config = config
        validators = None
        if config.spec_path is not None and config.validate:
            validators = validators_for(config.spec_path, tuple(e.path for e in ep.ENDPOINTS))
            if validators.revision and validators.revision != config.revision:
                logger.warning(
                    "emulator: the spec describes revision %s but the emulator serves %s",
                    validators.revision,
                    config.revision,
                )
        self.app = EmulatorApp(config, validators, clock=clock)
        self.control = ControlApi(self.app)
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stop_requested = threading.Event()

    @property
    def validation_note(self) -> str:
        """One line saying whether and how bodies are validated."""
        if self.app.validators is not None:
            return f"schema validation on ({self.config.spec_path})"
        if self.config.spec_path is None:
            return (
                "schema validation OFF: no OpenAPI spec configured (--spec / KLAVIYO_OPENAPI_SPEC)"
            )
        return "schema validation OFF (validate disabled)"

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the running server."""
        if self._httpd is None:
            raise DevstackError("the Klaviyo emulator is not running")
        host, port = self._httpd.server_address[:2]
        shown = host if isinstance(host, str) else host.decode()
        if ":" in shown:
            shown = f"[{shown}]"
        return f"http://{shown}:{port}"

    def start(self) -> str:
        """Listen and serve in a background thread; returns the base URL."""
        if self._httpd is not None:
            return self.base_url
        try:
            self._httpd = _HTTPServer((self.config.host, self.config.port), self)
        except OSError as exc:
            raise DevstackError(
                f"the Klaviyo emulator cannot listen on {self.config.host}:{self.config.port}: "
                f"{exc.strerror}"
            ) from exc
        self.app.stopping.clear()
        self._stop_requested.clear()
        httpd = self._httpd
        self._thread = threading.Thread(
            target=lambda: httpd.serve_forever(poll_interval=0.05),
            name="klaviyo-emulator",
            daemon=True,
        )
        self._thread.start()
        if self.app.validators is None:
            logger.warning("emulator: %s", self.validation_note)
        logger.info("emulator: listening on %s", self.base_url)
        return self.base_url

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving, close every connection and release held requests."""
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        self.app.stopping.set()
        httpd.shutdown()
        httpd.close_connections()
        httpd.server_close()
        if thread is not None:
            thread.join(timeout)
        self._httpd = None
        self._thread = None
        self._stop_requested.set()

    def request_stop(self) -> None:
        """Ask ``serve_forever`` to return; safe to call from a signal handler."""
        self._stop_requested.set()

    def serve_forever(self, on_ready: Callable[[str], None] | None = None) -> None:
        """Serve until ``request_stop()``; ``on_ready`` gets the base URL once listening."""
        url = self.start()
        try:
            if on_ready is not None:
                on_ready(url)
            while not self._stop_requested.wait(0.5):
                pass
        finally:
            self.stop()

    def __enter__(self) -> EmulatorServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
