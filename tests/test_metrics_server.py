"""The metrics endpoint stays answerable under idle and slow connections.

A liveness probe that cannot get through restarts a healthy daemon, so the server must
not let a few hundred idle sockets (a port scan, a misbehaving scraper, a slowloris)
crowd out /healthz: each connection has a deadline (metrics.connection_timeout_seconds)
and at most metrics.max_connections are held open; real sockets on loopback, no mocks.
"""

from __future__ import annotations

import socket
import time
from typing import Iterator

import pytest

from stream_learner.metrics import Health, Metrics, MetricsServer

IDLE = 500
TIMEOUT = 1.0          # metrics.connection_timeout_seconds for these tests
MAX_CONNECTIONS = 32


@pytest.fixture
def server() -> Iterator[MetricsServer]:
    s = MetricsServer(Metrics(), Health(3600.0), "127.0.0.1", 0,
                      max_connections=MAX_CONNECTIONS, timeout=TIMEOUT).start()
    try:
        yield s
    finally:
        s.stop()


def get(port: int, path: str, timeout: float) -> tuple[int, bytes]:
    """One GET over a fresh connection: (status, body); raises on timeout."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def open_idle(port: int, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        socks.append(s)
    return socks


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """True when the server closes (EOF or reset) within ``within`` seconds; a 503 first
    is fine (the answer to a connection over the limit)."""
    sock.settimeout(within)
    deadline = time.monotonic() + within
    try:
        while time.monotonic() < deadline:
            if sock.recv(4096) == b"":
                return True
    except ConnectionResetError:
        return True
    except (socket.timeout, TimeoutError):
        return False
    return False


def test_healthz_answers_within_a_second_with_500_idle_connections(
        server: MetricsServer) -> None:
    idle = open_idle(server.port, IDLE)
    try:
        t0 = time.monotonic()
        status, body = get(server.port, "/healthz", timeout=1.0)
        elapsed = time.monotonic() - t0
        assert (status, body) == (200, b"ok\n")
        assert elapsed < 1.0
        # and again, while those sockets are still open on our side
        assert get(server.port, "/metrics", timeout=1.0)[0] == 200
    finally:
        for s in idle:
            s.close()


def test_connections_beyond_the_limit_are_not_held() -> None:
    # A long deadline here: with TIMEOUT, opening 500 sockets on a loaded machine can take
    # longer than the deadline, and held connections closed by it would count as evicted.
    server = MetricsServer(Metrics(), Health(3600.0), "127.0.0.1", 0,
                           max_connections=MAX_CONNECTIONS, timeout=120.0).start()
    idle = open_idle(server.port, IDLE)
    try:
        get(server.port, "/healthz", timeout=1.0)     # everything accepted by now
        # The server holds at most max_connections: all the others were closed at once
        # (not after the timeout), oldest idle first.
        still_open = [s for s in idle if not closed_by_server(s, within=0.01)]
        assert len(still_open) <= MAX_CONNECTIONS
        assert len(still_open) >= MAX_CONNECTIONS - 1    # the probe's own slot
    finally:
        for s in idle:
            s.close()
        server.stop()


def test_an_idle_connection_is_closed_after_the_timeout(server: MetricsServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        t0 = time.monotonic()
        assert not closed_by_server(sock, within=TIMEOUT * 0.5), "closed before the timeout"
        assert closed_by_server(sock, within=TIMEOUT * 2), "idle connection never closed"
        assert TIMEOUT * 0.9 <= time.monotonic() - t0 <= TIMEOUT * 2.5


def test_a_slow_request_is_closed_after_the_timeout(server: MetricsServer) -> None:
    # Slowloris: a byte every 0.2 s never completes the request line; the deadline is
    # for the whole request, not per read.
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        t0 = time.monotonic()
        closed = False
        for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100:
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            if closed_by_server(sock, within=0.2):
                closed = True
                break
        assert closed, "a trickling request was never cut off"
        assert time.monotonic() - t0 <= TIMEOUT * 2.5


def test_keep_alive_serves_several_requests_on_one_connection(server: MetricsServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        for _ in range(3):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while not data.endswith(b"ok\n"):
                chunk = sock.recv(4096)
                assert chunk, "closed a keep-alive connection after one request"
                data += chunk
            assert data.startswith(b"HTTP/1.1 200 ")


def test_unknown_path_and_method(server: MetricsServer) -> None:
    assert get(server.port, "/nope", timeout=2.0)[0] == 404
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 405 ")
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"\x16\x03\x01garbage\r\n\r\n")       # e.g. a TLS hello
        assert sock.recv(4096).startswith(b"HTTP/1.1 400 ")


class SlowMetrics(Metrics):
    """An exposition that takes a second: a connection mid-answer for that long."""

    def exposition(self) -> bytes:
        time.sleep(1.0)
        return super().exposition()


def test_when_every_held_connection_is_mid_answer_a_new_one_gets_503_at_once() -> None:
    s = MetricsServer(SlowMetrics(), Health(3600.0), "127.0.0.1", 0, max_connections=2,
                      timeout=TIMEOUT).start()
    try:
        busy = open_idle(s.port, 2)
        for sock in busy:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.2)                        # both requests read, both being answered
        t0 = time.monotonic()
        status, body = get(s.port, "/healthz", timeout=1.0)
        assert (status, body) == (503, b"too many connections\n")
        assert time.monotonic() - t0 < 0.5, "refused only after waiting"
        for sock in busy:                      # the held ones still get their answer
            sock.settimeout(5)
            assert sock.recv(64).startswith(b"HTTP/1.1 200 ")
            sock.close()
        assert get(s.port, "/healthz", timeout=1.0) == (200, b"ok\n")
    finally:
        s.stop()
