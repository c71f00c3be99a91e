"""``/readyz``, ``/healthz`` and ``/metrics`` for the DaemonSet's probes and Prometheus."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from cache.mount.metrics import MountMetrics


def start_health_server(
    addr: str,
    port: int,
    ready: Callable[[], bool],
    alive: Callable[[], bool],
    metrics: MountMetrics,
    refresh_metrics: Callable[[], None],
) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
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

    server = ThreadingHTTPServer((addr, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    return server
