"""A Hub-compatible HTTP server on 127.0.0.1, serving repos from local folders.

It answers the endpoints huggingface_hub uses to resolve and download a repo (see docs/measurements.md):
repo info with ``?blobs=true`` metadata, HEAD/GET of ``resolve`` URLs with ``X-Repo-Commit``/``ETag``, Range reads,
typed errors through ``X-Error-Code``, gated repos that need ``Authorization: Bearer <token>``. Knobs let tests act
like an independent server (no sizes/LFS metadata), serve corrupt bytes, or list hostile file names.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

LFS_MIN = 1024 * 1024


def _blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class _File:
    data: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def blob_id(self) -> str:
        if self.lfs:
            pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {len(self.data)}\n"
            return _blob_id(pointer.encode())
        return _blob_id(self.data)


@dataclass
class _Repo:
    repo_id: str
    repo_type: str
    commits: dict[str, dict[str, _File]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)
    gated: bool = False
    token: str | None = None
    corrupt: dict[str, bytes] = field(default_factory=dict)


class HubServer:
    def __init__(self) -> None:
        self.repos: dict[tuple[str, str], _Repo] = {}
        self.omit_metadata = False
        self.echo_credentials: set[str] = set()  # repo ids whose API answers 500 quoting the request's credentials
        self.request_log: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                server._handle(self, head=True)

            def do_GET(self) -> None:
                server._handle(self, head=False)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    # -- set-up ----------------------------------------------------------------------------------------------
    def add_repo(
        self,
        repo_id: str,
        folder: Path,
        *,
        repo_type: str = "model",
        revision_names: tuple[str, ...] = ("main",),
        gated: bool = False,
        token: str | None = None,
        sha: str | None = None,
    ) -> str:
        files: dict[str, _File] = {}
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            rel = path.relative_to(folder).as_posix()
            data = path.read_bytes()
            files[rel] = _File(data, lfs=len(data) >= LFS_MIN or rel.endswith((".safetensors", ".bin")))
        if sha is None:
            digest = hashlib.sha1(f"{repo_type}:{repo_id}".encode())
            for rel, f in files.items():
                digest.update(f"{rel}\0{f.sha256}\0".encode())
            sha = digest.hexdigest()
        with self._lock:
            repo = self.repos.setdefault((repo_type, repo_id), _Repo(repo_id, repo_type))
            repo.commits[sha] = files
            for name in revision_names:
                repo.refs[name] = sha
            repo.gated, repo.token = gated, token
        return sha

    def set_omit_metadata(self, omit: bool) -> None:
        self.omit_metadata = omit

    def corrupt(self, repo_id: str, path: str, data: bytes, repo_type: str = "model") -> None:
        self.repos[(repo_type, repo_id)].corrupt[path] = data

    def echo_credentials_in_errors(self, repo_id: str) -> None:
        """Make this repo's API fail with a message quoting the request's Authorization header, as a misconfigured
        proxy or mirror does: a test then sees whether hf-cache keeps such text out of logs, errors and S3."""
        self.echo_credentials.add(repo_id)

    def add_hostile_path(self, repo_id: str, path: str, repo_type: str = "model") -> None:
        repo = self.repos[(repo_type, repo_id)]
        for files in repo.commits.values():
            files[path] = _File(b"evil", lfs=False)

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    # -- serving ---------------------------------------------------------------------------------------------
    def _send(
        self,
        h: BaseHTTPRequestHandler,
        code: int,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        head: bool = False,
        ctype: str = "application/json",
    ) -> None:
        h.send_response(code)
        h.send_header("Content-Type", ctype)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        if "Content-Length" not in (headers or {}):
            h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if not head and body:
            h.wfile.write(body)

    def _error(self, h: BaseHTTPRequestHandler, code: int, error_code: str, message: str, head: bool) -> None:
        body = json.dumps({"error": message}).encode()
        self._send(h, code, body, {"X-Error-Code": error_code, "X-Error-Message": message}, head)

    def _find(self, repo_type: str, rest: str) -> tuple[_Repo | None, str]:
        """Split ``org/name/<tail>`` (repo ids have one or two segments) against the known repos."""
        parts = rest.split("/")
        for n in (2, 1):
            repo = self.repos.get((repo_type, "/".join(parts[:n])))
            if repo is not None:
                return repo, "/".join(parts[n:])
        return None, rest

    def _authorized(self, h: BaseHTTPRequestHandler, repo: _Repo, head: bool) -> bool:
        if not repo.gated:
            return True
        auth = h.headers.get("Authorization", "")
        if not auth:
            self._error(
                h, 401, "GatedRepo", f"Access to {repo.repo_id} is restricted. You must be authenticated.", head
            )
            return False
        if auth != f"Bearer {repo.token}":
            self._error(h, 403, "GatedRepo", f"Access to {repo.repo_id} is restricted for this token.", head)
            return False
        return True

    def _handle(self, h: BaseHTTPRequestHandler, head: bool) -> None:
        url = urlparse(h.path)
        path = unquote(url.path)
        with self._lock:
            self.request_log.append((h.command, h.path))
        if path.startswith("/api/"):
            if path.count("/") < 3:
                return self._error(h, 404, "EntryNotFound", f"no such endpoint {path}", head)
            _, _, kind, rest = path.split("/", 3)
            repo_type = {"models": "model", "datasets": "dataset"}.get(kind)
            repo, tail = self._find(repo_type or "", rest) if repo_type else (None, rest)
            if repo is None:
                return self._error(h, 404, "RepoNotFound", "Repository not found", head)
            if not self._authorized(h, repo, head):
                return None
            if repo.repo_id in self.echo_credentials:
                seen = f"Authorization: {h.headers.get('Authorization', '')} for http://{h.headers.get('Host', '')}"
                return self._error(h, 500, "InternalError", f"upstream refused the request ({seen})", head)
            rev = tail.removeprefix("revision/") if tail.startswith("revision/") else "main"
            sha = repo.refs.get(rev, rev if rev in repo.commits else None)
            if sha is None:
                return self._error(h, 404, "RevisionNotFound", f"Invalid rev id: {rev}", head)
            blobs = parse_qs(url.query).get("blobs", ["false"])[0] == "true"
            siblings = []
            for rel, entry in repo.commits[sha].items():
                sib: dict[str, object] = {"rfilename": rel}
                if blobs and not self.omit_metadata:
                    sib.update({"size": len(entry.data), "blobId": entry.blob_id})
                    if entry.lfs:
                        sib["lfs"] = {"sha256": entry.sha256, "size": len(entry.data), "pointerSize": 134}
                siblings.append(sib)
            body = {
                "id": repo.repo_id,
                "_id": repo.repo_id,
                "sha": sha,
                "private": repo.gated,
                "gated": "manual" if repo.gated else False,
                "siblings": siblings,
            }
            return self._send(h, 200, json.dumps(body).encode(), head=head)

        repo_type = "model"
        rest = path.lstrip("/")
        if rest.startswith("datasets/"):
            repo_type, rest = "dataset", rest[len("datasets/") :]
        repo, tail = self._find(repo_type, rest)
        if repo is None or not tail.startswith("resolve/"):
            return self._error(h, 404, "RepoNotFound", "Repository not found", head)
        if not self._authorized(h, repo, head):
            return None
        rev, _, file_path = tail[len("resolve/") :].partition("/")
        sha = repo.refs.get(rev, rev if rev in repo.commits else None)
        if sha is None:
            return self._error(h, 404, "RevisionNotFound", f"Invalid rev id: {rev}", head)
        f = repo.commits[sha].get(file_path)
        if f is None:
            return self._error(h, 404, "EntryNotFound", f"{file_path} does not exist at {rev}", head)
        data = repo.corrupt.get(file_path, f.data)
        headers = {"X-Repo-Commit": sha, "ETag": f'"{f.sha256 if f.lfs else f.blob_id}"', "Accept-Ranges": "bytes"}
        rng = h.headers.get("Range")
        code = 200
        if rng and rng.startswith("bytes="):
            start_s, _, end_s = rng[len("bytes=") :].partition("-")
            start = int(start_s or 0)
            end = int(end_s) if end_s else len(data) - 1
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data, code = data[start : end + 1], 206
        headers["Content-Length"] = str(len(data))
        return self._send(h, code, data, headers, head, ctype="application/octet-stream")
