"""The HTTP endpoint: ``/metrics``, ``/healthz`` and ``/readyz`` on one port.

Apart from the registry (:mod:`~stream_learner.metrics`) because it is a small server of
its own (asyncio, deadlines, a bound on open connections); it only reads the registry's
exposition and the :class:`~stream_learner.health.Health` it is given.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST

from .health import Health

if TYPE_CHECKING:     # metrics re-exports this module: a runtime import would be a cycle
    from .metrics import Metrics

log = logging.getLogger(__name__)


class MetricsServer:
    """/metrics, /healthz and /readyz on one port, served by one asyncio loop thread.

    Not http.server's thread per connection: there an idle socket holds a thread forever
    (no timeouts) and a backlog of 5 leaves new connections waiting behind them, so a few
    hundred idle connections (a port scan, a stuck scraper) kept the kubelet's probe from
    getting through and a healthy daemon was restarted. Here an open connection costs a
    file descriptor, not a thread; each has a deadline (``timeout``: the whole request
    must arrive, and the answer be taken, within it) and at most ``max_connections`` are
    held: a new one beyond that closes the connection idle longest, or, when every held
    connection is mid-answer, is answered 503 and closed at once. Nothing waits in a
    queue, so /healthz answers within its own round trip however many sockets are open.
    Exposition runs on one worker thread, so a slow scrape never delays /healthz.
    """

    def __init__(self, metrics: Metrics, health: Health, host: str, port: int,
                 max_connections: int = 32, timeout: float = 5.0) -> None:
        self.max_connections = max_connections
        self.timeout = timeout
        self._routes = _Routes(metrics, health)
        family = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                    flags=socket.AI_PASSIVE)[0][0]
        # Bound here, not in start(): a taken port fails the caller at once (cli reports it).
        self._sock = socket.create_server((host, port), family=family, backlog=LISTEN_BACKLOG)
        self._port = int(self._sock.getsockname()[1])
        self._loop = asyncio.new_event_loop()
        self._held: set[asyncio.StreamWriter] = set()
        self._idle: dict[asyncio.StreamWriter, None] = {}   # insertion order: oldest first
        self._scrape = ThreadPoolExecutor(max_workers=1, thread_name_prefix="metrics-scrape")
        self._started = threading.Event()
        self._stopping: asyncio.Event | None = None
        self._last_full_warning = -math.inf
        self._thread = threading.Thread(target=self._run, name="metrics-http", daemon=True)

    @property
    def port(self) -> int:
        return self._port

    def start(self) -> "MetricsServer":
        self._thread.start()
        if not self._started.wait(10.0):
            raise OSError("metrics server did not start within 10 s")
        return self

    def stop(self) -> None:
        if self._thread.is_alive() and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join(10.0)
        elif not self._thread.is_alive():
            self._sock.close()
        self._scrape.shutdown(wait=False, cancel_futures=True)

    # -- the loop thread -------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._loop.close()
            self._sock.close()

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        server = await asyncio.start_server(self._connection, sock=self._sock,
                                            limit=MAX_REQUEST_HEAD_BYTES)
        self._started.set()
        await self._stopping.wait()
        server.close()
        for writer in list(self._held):
            writer.transport.abort()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _admit(self, writer: asyncio.StreamWriter) -> bool:
        """Hold ``writer`` if there is room, making room by closing the longest-idle one."""
        if len(self._held) >= self.max_connections:
            if not self._idle:
                return False
            oldest = next(iter(self._idle))
            self._release(oldest)
            oldest.transport.abort()
            self._warn_full("closing the longest-idle connection")
        self._held.add(writer)
        return True

    def _release(self, writer: asyncio.StreamWriter) -> None:
        self._held.discard(writer)
        self._idle.pop(writer, None)

    def _warn_full(self, action: str) -> None:
        now = time.monotonic()
        if now - self._last_full_warning >= 60.0:      # one line a minute, not one per socket
            self._last_full_warning = now
            log.warning("metrics server: %d connections open (metrics.max_connections): %s",
                        len(self._held), action)

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        try:
            if not self._admit(writer):
                self._warn_full("answering 503")
                writer.write(_response(503, b"too many connections\n", keep_alive=False))
                # Read what the client sent before closing: closing with unread bytes
                # makes the kernel send RST, which can discard the 503 on the way.
                writer.write_eof()
                await asyncio.wait_for(reader.read(MAX_REQUEST_HEAD_BYTES), REJECT_LINGER_S)
                return
            keep_alive = True
            while keep_alive:
                self._idle[writer] = None
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.timeout)
                self._idle.pop(writer, None)             # mid-answer: not to be evicted
                keep_alive = await self._answer(head, writer)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, OSError):
            pass                                         # deadline, peer gone or evicted
        except asyncio.LimitOverrunError:
            writer.write(_response(431, b"request head too large\n", keep_alive=False))
        finally:
            self._release(writer)
            writer.close()

    async def _answer(self, head: bytes, writer: asyncio.StreamWriter) -> bool:
        """Write the answer to one request head; False when the connection must close."""
        request = _parse(head)
        if request is None:
            writer.write(_response(400, b"not an HTTP request\n", keep_alive=False))
            return False
        method, path, keep_alive = request
        if method not in ("GET", "HEAD"):
            writer.write(_response(405, b"GET only\n", keep_alive=False,
                                   extra=b"Allow: GET, HEAD\r\n"))
            return False
        if path == "/metrics":
            code, body, ctype = await self._loop.run_in_executor(self._scrape,
                                                                 self._routes.metrics)
        else:
            code, body, ctype = self._routes.get(path)
        writer.write(_response(code, body, keep_alive, ctype=ctype,
                               send_body=method == "GET"))
        await asyncio.wait_for(writer.drain(), self.timeout)
        return keep_alive


LISTEN_BACKLOG = 512            # the kernel caps it at net.core.somaxconn
MAX_REQUEST_HEAD_BYTES = 16 * 1024
REJECT_LINGER_S = 0.5           # how long a refused connection may take to send its request
TEXT = "text/plain; charset=utf-8"
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            431: "Request Header Fields Too Large", 503: "Service Unavailable"}


class _Routes:
    """What each path answers: (status, body, content type)."""

    def __init__(self, metrics: Metrics, health: Health) -> None:
        self._metrics, self._health = metrics, health

    def metrics(self) -> tuple[int, bytes, str]:
        return 200, self._metrics.exposition(), CONTENT_TYPE_LATEST

    def get(self, path: str) -> tuple[int, bytes, str]:
        if path == "/healthz":
            ok = self._health.alive()
            return (200, b"ok\n", TEXT) if ok else (503, b"loop stalled\n", TEXT)
        if path == "/readyz":
            ok = self._health.is_ready()
            return (200 if ok else 503), self._health.readiness_text(), TEXT
        return 404, b"try /metrics, /healthz or /readyz\n", TEXT


def _parse(head: bytes) -> tuple[str, str, bool] | None:
    """(method, path, keep-alive) of a request head, or None when it is not HTTP/1.x.

    A request with a body (Content-Length or Transfer-Encoding) is answered and the
    connection closed, as its unread body would otherwise be taken for the next request.
    """
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return None
    method, target, version = parts
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip().lower()
    connection = headers.get("connection", "")
    keep_alive = "keep-alive" in connection if version == "HTTP/1.0" else "close" not in connection
    if headers.get("content-length", "0") != "0" or "transfer-encoding" in headers:
        keep_alive = False
    return method, target.split("?", 1)[0], keep_alive


def _response(code: int, body: bytes, keep_alive: bool, ctype: str = TEXT,
              send_body: bool = True, extra: bytes = b"") -> bytes:
    head = (f"HTTP/1.1 {code} {_REASONS[code]}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n").encode("latin-1")
    return head + extra + b"\r\n" + (body if send_body else b"")
