"""An HTTP reverse proxy on 127.0.0.1 that forwards to an S3 server and refuses chosen requests.

Rules match a method and a substring of the request path (the S3 key is in it, path-style addressing); a matching
request is answered with an S3 error of the given status instead of being forwarded. Tests put it in front of moto to
see what one refused PUT does to a whole run, without mocking boto3 or hf-cache. A rule with ``times`` refuses only
its first ``times`` matching requests and forwards the rest: throttling (429, 503 SlowDown) that retries get past.
"""

from __future__ import annotations

import http.client
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit


@dataclass(frozen=True)
class Refuse:
    method: str  # "PUT", "POST", ... or "*"
    path_contains: str | tuple[str, ...]  # every one of these must be in the request path (query included)
    status: int = 403
    times: int | None = None  # refuse only the first this many matching requests (None: every one)

    def matches(self, method: str, path: str) -> bool:
        wanted = (self.path_contains,) if isinstance(self.path_contains, str) else self.path_contains
        return self.method in ("*", method) and all(w in unquote(path) for w in wanted)


_CODES = {403: "AccessDenied", 429: "TooManyRequests", 500: "InternalError", 503: "SlowDown"}


class FaultProxy:
    def __init__(self, upstream: str, rules: list[Refuse]) -> None:
        self.upstream = urlsplit(upstream)
        if not self.upstream.hostname:
            raise ValueError(f"fault proxy upstream {upstream!r} has no host: write http://127.0.0.1:PORT")
        self._host: str = self.upstream.hostname
        self.rules = list(rules)
        self.refused: list[tuple[str, str]] = []
        self._used = [0] * len(self.rules)  # requests each rule refused so far
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _any(self) -> None:
                proxy._handle(self)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        rule = self._refusing(h.command, h.path)
        if rule is not None:
            code = _CODES.get(rule.status, "InternalError")
            xml = f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>refused by the test proxy</Message></Error>"
            self._reply(h, rule.status, {"Content-Type": "application/xml"}, xml.encode())
            return
        conn = http.client.HTTPConnection(self._host, self.upstream.port, timeout=120)
        try:
            headers = {k: v for k, v in h.headers.items() if k.lower() not in ("connection", "keep-alive")}
            conn.request(h.command, h.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            out = {k: v for k, v in resp.getheaders() if k.lower() not in ("connection", "transfer-encoding")}
            if h.command == "HEAD":
                self._reply(h, resp.status, out, b"", head=True)
            else:
                out["Content-Length"] = str(len(data))
                self._reply(h, resp.status, out, data)
        finally:
            conn.close()

    def _refusing(self, method: str, path: str) -> Refuse | None:
        """The first rule that refuses this request (and counts it), None to forward it."""
        with self._lock:
            for i, rule in enumerate(self.rules):
                if rule.matches(method, path) and (rule.times is None or self._used[i] < rule.times):
                    self._used[i] += 1
                    self.refused.append((method, path))
                    return rule
        return None

    @staticmethod
    def _reply(
        h: BaseHTTPRequestHandler, status: int, headers: dict[str, str], body: bytes, head: bool = False
    ) -> None:
        h.close_connection = True
        try:
            h.send_response(status)
            for k, v in headers.items():
                if k.lower() != "content-length" or head:
                    h.send_header(k, v)
            if not head:
                h.send_header("Content-Length", str(len(body)))
            h.send_header("Connection", "close")
            h.end_headers()
            if body and not head:
                h.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up on this request (a cancelled transfer): nothing to tell it
