"""``/readyz``, ``/healthz`` and ``/metrics`` for the DaemonSet's probes and Prometheus.

Handlers only read state the supervisor keeps: no request touches the mount, so a hung FUSE server cannot hang a
probe. Connections are bounded in number and in idle time, so idle or slow clients cannot pin threads.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hf_cache.errors import ConfigError
from hf_cache.mount.metrics import MountMetrics

IDLE_TIMEOUT = 5.0  # seconds a connection may stay silent (probes send their request at once)
MAX_CONNECTIONS = 64  # beyond this, new connections are closed at once instead of getting a thread


class BoundedHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # listen backlog: a burst of probes is accepted, not SYN-dropped (the default is 5)

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], max_connections: int):
        self._slots = threading.BoundedSemaphore(max_connections)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def start_health_server(
    addr: str,
    port: int,
    ready: Callable[[], bool],
    alive: Callable[[], bool],
    metrics: MountMetrics,
    refresh_metrics: Callable[[], None],
    idle_timeout: float = IDLE_TIMEOUT,
    max_connections: int = MAX_CONNECTIONS,
) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        timeout = idle_timeout  # socket timeout: an idle connection is closed after this

        def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            if path == "/readyz":
                ok = ready()
                self._send(200 if ok else 503, b"ready\n" if ok else b"mount not ready\n")
            elif path == "/healthz":
                ok = alive()
                self._send(200 if ok else 503, b"ok\n" if ok else b"supervisor loop stalled\n")
            elif path == "/metrics":
                refresh_metrics()
                self._send(200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST)
            else:
                self._send(404, b"not found\n")

        def log_message(self, format: str, *args: object) -> None:  # probes every few seconds: keep logs quiet
            pass

    if not 0 <= port <= 65535:
        raise ConfigError(f"--health-port {port}: a port is 0-65535")
    try:
        server = BoundedHTTPServer((addr, port), Handler, max_connections)
    except (socket.gaierror, UnicodeError) as exc:
        raise ConfigError(f"--health-addr {addr!r} is not an address: use an IP such as 0.0.0.0") from exc
    except OSError as exc:
        raise ConfigError(
            f"cannot serve health on {addr}:{port}: {exc.strerror or exc}; pick a free --health-port "
            "(HFCACHE_HEALTH_PORT) or another --health-addr"
        ) from exc
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    return server
