"""Exit codes come from exception types (one table, hf_cache.cli.EXIT_CODES), and a failed repo is named once.

The table is unit-tested; the commands are run for real (the CLI in a subprocess, moto's S3 server, the
Hub-compatible server, the fault proxy refusing uploads), as a CronJob or an operator sees them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hf_cache.cli import EXIT_CODES, exit_code
from hf_cache.demo.command import failure_cause
from hf_cache.errors import (
    ConfigError,
    HfCacheError,
    HubError,
    LeaseHeldError,
    ModelsFileError,
    MountError,
    RefreshFailedError,
    S3AccessDeniedError,
    S3NotFoundError,
    S3PreconditionFailedError,
    S3UnreachableError,
)
from hf_cache.lab.faultproxy import FaultProxy, Refuse
from hf_cache.lab.hubserver import HubServer
from hf_cache.lab.s3server import S3Server, via


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (ConfigError("bad flag"), 2),
        (ModelsFileError(["models.txt:3: bad line"]), 2),
        (HfCacheError("x"), 1),
        (HubError("x"), 1),
        (MountError("x"), 1),
        (LeaseHeldError("x"), 1),
        (RefreshFailedError(["org/a@main"], 3), 1),
        (S3NotFoundError("x"), 1),
        (S3AccessDeniedError("x"), 1),
        (S3UnreachableError("x"), 1),
        (S3PreconditionFailedError("x"), 1),
    ],
)
def test_each_type_has_its_exit_code(exc: HfCacheError, code: int) -> None:
    assert exit_code(exc) == code


def test_the_table_is_ordered_most_specific_first() -> None:
    """A base class listed before its subclass would swallow the subclass's code."""
    kinds = [kind for kind, _ in EXIT_CODES]
    for i, kind in enumerate(kinds):
        assert not any(issubclass(later, kind) for later in kinds[i + 1 :]), kind
    assert kinds[-1] is HfCacheError


def test_refresh_failed_names_every_failed_repo_once() -> None:
    err = RefreshFailedError(["org/a@main", "org/b@v1"], 5)
    assert str(err) == "2 of 5 repos failed: org/a@main, org/b@v1" and err.failed == ["org/a@main", "org/b@v1"]


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hf_cache", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def _env(s3_endpoint: str, s3: S3Server, hub: HubServer) -> dict[str, str]:
    return {
        **via(s3.env(), s3_endpoint),
        "HF_ENDPOINT": hub.endpoint,
        "HF_HUB_ETAG_TIMEOUT": "5",
        "HF_HUB_DOWNLOAD_TIMEOUT": "10",
        "HF_TOKEN": "",
    }


def _failed_line(stdout: str, repo: str) -> str:
    lines = [ln.strip() for ln in stdout.splitlines() if ln.strip().startswith("FAILED")]
    assert len(lines) == 1, stdout
    assert lines[0].count(repo) == 1, lines[0]  # the repo name once: `FAILED  org/x@main: <why>`
    return lines[0]


def test_a_failed_repo_exits_1_with_one_error_line_naming_it_once(
    s3_server: S3Server, bucket: str, hub_server: HubServer, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "config.json").write_text('{"model_type": "gpt2"}')
    hub_server.add_repo("org/good", repo)
    env = _env(s3_server.endpoint, s3_server, hub_server)

    missing = _cli(["refresh", "--bucket", bucket, "--prefix", "p", "org/good", "org/missing"], env)
    assert missing.returncode == 1, missing.stderr
    errors = [ln for ln in missing.stderr.splitlines() if ln.startswith("hf-cache: error:")]
    assert errors == ["hf-cache: error: 1 of 2 repos failed: org/missing@main"], missing.stderr
    assert "Traceback" not in missing.stderr
    assert _failed_line(missing.stdout, "org/missing@main").startswith("FAILED  org/missing@main: ")
    # the demo quotes a failed refresh's cause: the repo once there too
    assert failure_cause(missing.stdout, missing.stderr).count("org/missing@main") == 1

    plan = _cli(["refresh", "--bucket", bucket, "--prefix", "p", "--dry-run", "org/missing"], env)
    assert plan.returncode == 1 and plan.stderr.splitlines()[-1] == (
        "hf-cache: error: 1 of 1 repos could not be resolved: org/missing@main"
    ), plan.stderr
    assert plan.stdout.count("org/missing@main") == 1, plan.stdout

    # S3 refusing the upload: the S3 boundary's line, the repo still named once
    with FaultProxy(s3_server.endpoint, [Refuse("PUT", "models--org--good", 403)]) as proxy:
        denied = _cli(
            ["refresh", "--bucket", bucket, "--prefix", "q", "org/good"], _env(proxy.endpoint, s3_server, hub_server)
        )
    assert denied.returncode == 1, denied.stderr
    line = _failed_line(denied.stdout, "org/good@main")
    assert "access denied (AccessDenied, HTTP 403)" in line, line
    assert denied.stderr.splitlines()[-1] == "hf-cache: error: 1 of 1 repos failed: org/good@main", denied.stderr


def test_verify_judges_a_file_on_what_s3_answered(
    s3_server: S3Server, bucket: str, hub_server: HubServer, tmp_path: Path
) -> None:
    """A file S3 refuses to read is reported as unreadable with S3's code, not as missing (it may well be there)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "config.json").write_text('{"model_type": "gpt2"}')
    (repo / "extra.txt").write_text("x")
    sha = hub_server.add_repo("org/good", repo)
    env = _env(s3_server.endpoint, s3_server, hub_server)
    assert _cli(["refresh", "--bucket", bucket, "--prefix", "p", "org/good"], env).returncode == 0
    s3_server.client().delete_object(Bucket=bucket, Key=f"p/hub/models--org--good/snapshots/{sha}/extra.txt")
    with FaultProxy(s3_server.endpoint, [Refuse("GET", ("/snapshots/", "config.json"), 403)]) as proxy:
        found = _cli(
            ["verify", "--bucket", bucket, "--prefix", "p", "--json"], _env(proxy.endpoint, s3_server, hub_server)
        )
    assert found.returncode == 1, found.stderr
    problems = {(p["path"], p["problem"]) for p in json.loads(found.stdout)["problems"]}
    assert problems == {("config.json", "unreadable (AccessDenied)"), ("extra.txt", "missing")}, found.stdout
