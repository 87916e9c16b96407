"""Each account's HTTP client has a connection for every delivery thread of the account.

A request takes its rate-limit slot right before it goes out; if it then had to wait for a
pooled connection, it would leave later than the limiter allowed (inside a Retry-After window,
or in a burst). So the pool must fit the account's concurrency.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from consumer.compose import klaviyo_clients
from consumer.endpoints import Endpoint
from consumer.settings import Settings

THREADS = 8


@pytest.fixture
def barrier_server() -> Iterator[str]:
    """Answers 202 only once THREADS requests are in at the same time."""
    barrier = threading.Barrier(THREADS, timeout=10)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            try:
                barrier.wait()
                status = 202
            except threading.BrokenBarrierError:
                status = 503
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_connection_pool_fits_the_account_threads(barrier_server: str) -> None:
    settings = Settings(
        klaviyo={"api_key": "pk_test", "base_url": barrier_server},  # type: ignore[arg-type]
        delivery={"threads_per_account": THREADS, "max_concurrent_requests": 4},  # type: ignore[arg-type]
    )
    [client] = klaviyo_clients(settings).values()
    outcomes: list[str] = []

    def post(endpoint: Endpoint) -> None:
        try:
            client.post(endpoint, b"{}")
            outcomes.append("ok")
        except Exception as exc:
            outcomes.append(type(exc).__name__)

    # Two endpoints, four requests each: every one must be on the wire at once.
    endpoints = [Endpoint.EVENTS] * 4 + [Endpoint.SUBSCRIBE] * 4
    threads = [threading.Thread(target=post, args=(e,)) for e in endpoints]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    client.close()
    assert outcomes == ["ok"] * THREADS
