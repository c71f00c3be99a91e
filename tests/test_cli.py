"""The command line as users of hf, rclone, kubectl and terraform expect it: one repo grammar, plain counts, logging
flags anywhere, versions, completion, JSON logs, progress that moves with bytes. Fast: no S3 server here."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hf_cache.cli import exit_code
from hf_cache.errors import ConfigError, ModelsFileError
from hf_cache.layout import repo_folder_name
from hf_cache.modelsfile import parse_models_text
from hf_cache.progress import Progress, eta_seconds, plural
from hf_cache.refresh.prune import Published
from hf_cache.refresh.remove import folder_repo, plan_remove
from hf_cache.reponame import RepoName, format_repo, not_published, parse_repo, parse_repos

SHA = "0123456789abcdef0123456789abcdef01234567"
SHA2 = "89abcdef0123456789abcdef0123456789abcdef"


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hf_cache", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


# -- one grammar --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("org/tiny", RepoName("org/tiny")),
        ("org/tiny@v1.0", RepoName("org/tiny", "model", "v1.0")),
        (f"org/tiny@{SHA}", RepoName("org/tiny", "model", SHA)),
        ("dataset:team/data", RepoName("team/data", "dataset")),
        ("dataset:team/data@main", RepoName("team/data", "dataset", "main")),
        ("model:org/tiny", RepoName("org/tiny")),
        ("gpt2", RepoName("gpt2")),
    ],
)
def test_repo_grammar_parses_and_prints_back_the_same(text: str, name: RepoName) -> None:
    assert parse_repo(text) == name
    assert parse_repo(str(name)) == name
    assert str(name) == text.removeprefix("model:")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("org/x@abc123", "looks like a short commit sha"),  # 6 hex digits
        ("org/x@abc1234", "looks like a short commit sha"),
        ("space:org/x", "unknown repo type 'space'"),
        ("org/x.git", "cannot end with '.git'"),  # huggingface_hub's rule, which the old copy of the rules missed
        ("org/a--b", "'--' and '..' are not allowed"),
        ("a/b/c", "more than one '/'"),
        ("org/x@", "empty revision"),
        ("", "empty repo id"),
    ],
)
def test_bad_names_are_one_line_with_what_to_write(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_repo(text)
    message = str(err.value)
    assert fragment in message and "\n" not in message and exit_code(err.value) == 2


def test_short_sha_of_six_hex_digits_is_flagged_in_models_txt_too() -> None:
    with pytest.raises(ModelsFileError) as err:
        parse_models_text("org/x@abc123\n")
    assert "short commit sha" in err.value.problems[0]
    assert parse_models_text("org/x@decade\n")[0].revision == "decade"  # a word of hex letters is a branch name


def test_one_repo_two_spellings_in_models_txt_is_an_error_naming_both_lines() -> None:
    with pytest.raises(ModelsFileError) as err:
        parse_models_text("Org/Tiny\norg/tiny@v1\n")
    assert err.value.problems == [
        "models.txt:2: org/tiny and Org/Tiny (line 1) are one repo on the Hub (it ignores case) but would be two"
        " cache folders; spell it one way"
    ]
    assert len(parse_models_text("org/tiny\norg/tiny type=dataset\n")) == 2  # a model and a dataset: two repos


def test_case_only_match_on_the_command_line_names_the_published_spelling() -> None:
    known = {("model", "org/tiny")}
    problem = not_published([parse_repo("Org/Tiny")], known)
    assert problem is not None and "Org/Tiny is published as org/tiny" in problem and "use that spelling" in problem
    assert not_published([parse_repo("org/tiny@v1")], known) is None
    assert "org/other is not published" in (not_published([parse_repo("org/other")], known) or "")


def test_the_same_name_twice_is_refused() -> None:
    with pytest.raises(ConfigError, match="named twice"):
        parse_repos(["org/x", "org/x"])


@pytest.mark.parametrize(
    "line",
    [
        "bad--id",
        "a/b/c",
        "-org/x",
        "org/x@",
        "org/x@abc123",
        "org/x@a..b",
        "org/x foo=1",
        "org/x include",
        "org/x include=",
        "org/x include=[abc",
        "org/x include=*.json,,*.bin",
        "org/x type=space",
        "org/x source=http://example.com/x",
        "org/x source=file:///no/such/folder",
        "org/x type=model type=dataset",
        "include=*.json",
        "org/x source=file:///",
        "org/x.git",
    ],
)
def test_every_models_file_error_says_what_to_do(line: str) -> None:
    with pytest.raises(ModelsFileError) as err:
        parse_models_text(f"{line}\n")
    for problem in err.value.problems:
        what = problem.split(": ", 1)[1]
        assert "; " in what, f"no '; what to do' part in {problem!r}"


def test_counts_read_right() -> None:
    assert plural(1, "file") == "1 file" and plural(0, "file") == "0 files" and plural(2, "snapshot") == "2 snapshots"


# -- rm's plan ------------------------------------------------------------------------------------------------------
def _published() -> Published:
    tiny = repo_folder_name("org/tiny", "model")
    data = repo_folder_name("team/data", "dataset")
    return Published(
        refs={tiny: {"main": SHA, "v1": SHA, "old": SHA2}, data: {"main": SHA}},
        snapshots={tiny: {SHA, SHA2}, data: {SHA}},
    )


def test_rm_plan_removes_refs_before_snapshots() -> None:
    actions, problems = plan_remove(_published(), [parse_repo("org/tiny")])
    assert not problems
    kinds = [a.kind for a in actions]
    assert kinds == ["ref"] * 3 + ["snapshot"] * 2


def test_rm_of_a_ref_keeps_a_snapshot_another_ref_still_points_at() -> None:
    actions, _ = plan_remove(_published(), [parse_repo("org/tiny@v1")])
    assert [(a.kind, a.name) for a in actions] == [("ref", "v1")]
    actions, _ = plan_remove(_published(), [parse_repo("org/tiny@old")])
    assert [(a.kind, a.name) for a in actions] == [("ref", "old"), ("snapshot", SHA2)]


def test_rm_of_a_sha_takes_every_ref_pointing_at_it_first() -> None:
    actions, _ = plan_remove(_published(), [parse_repo(f"org/tiny@{SHA}")])
    assert [(a.kind, a.name) for a in actions] == [("ref", "main"), ("ref", "v1"), ("snapshot", SHA)]


def test_rm_of_what_is_not_there_names_it() -> None:
    _, problems = plan_remove(_published(), [parse_repo("Org/Tiny")])
    assert "published as org/tiny" in problems[0]
    _, problems = plan_remove(_published(), [parse_repo("org/tiny@v9")])
    assert "no ref 'v9'" in problems[0] and "main" in problems[0]
    _, problems = plan_remove(_published(), [parse_repo("team/data")])  # the dataset, named as a model
    assert "team/data is not published" in problems[0]
    assert folder_repo(repo_folder_name("team/data", "dataset")) == ("dataset", "team/data")
    assert format_repo("team/data", "dataset", "main") == "dataset:team/data@main"


# -- flags, version, completion -----------------------------------------------------------------------------------
def test_logging_flags_are_accepted_after_the_subcommand() -> None:
    for flags in (["-v"], ["-q"], ["--verbose", "--log-format", "json"]):
        result = cli("env", *flags)
        assert result.returncode == 0, result.stderr
        assert "HF_HOME" in result.stdout
    result = cli("-q", "env", "--json")
    assert json.loads(result.stdout)["HF_HUB_OFFLINE"] == "1"


def test_version_and_completion() -> None:
    result = cli("version", "--json")
    assert result.returncode == 0
    versions = json.loads(result.stdout)
    assert versions["hf-cache"] and versions["huggingface_hub"]
    for shell in ("bash", "zsh", "fish"):
        result = cli("completion", shell)
        assert result.returncode == 0 and "_HF_CACHE_COMPLETE" in result.stdout, shell
    # The script really completes: click answers the completion request with our commands.
    done = cli(env={"_HF_CACHE_COMPLETE": "bash_complete", "COMP_WORDS": "hf-cache ve", "COMP_CWORD": "1"})
    assert "version" in done.stdout and "verify" in done.stdout


def test_json_log_format_is_one_redacted_object_per_line() -> None:
    code = (
        "import logging; from hf_cache.logs import setup_logging; setup_logging(fmt='json');"
        "logging.getLogger('hf_cache.x').info('token %s here', 'hf_SecretSecret1234')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    record = json.loads(result.stderr.strip())
    assert record["level"] == "info" and record["logger"] == "hf_cache.x"
    assert record["message"] == "token *** here"


def test_bad_repo_name_is_one_line_and_exit_2_in_every_command() -> None:
    for args in (
        ["verify", "--bucket", "b"],
        ["rm", "--bucket", "b"],
        ["doctor"],
        ["warm"],
        ["refresh", "--bucket", "b"],
    ):
        result = cli(*args, "org/x@abc123")
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.startswith("hf-cache: error: 'org/x@abc123': revision 'abc123' looks like a short")
        assert "Traceback" not in result.stderr


# -- progress -----------------------------------------------------------------------------------------------------
def test_pod_progress_logs_every_interval_even_when_no_file_finishes(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="hf_cache.progress")
    with Progress("refresh", total_bytes=100 * 2**20, interval=0.2, tty=False) as progress:
        progress.advance(10 * 2**20)  # one long upload under way, no file finished
        time.sleep(0.9)
    lines = [r.getMessage() for r in caplog.records if r.name == "hf_cache.progress"]
    assert len(lines) >= 4, lines  # >= 3 heartbeats in 0.9 s, then the done line
    assert "10.0 MiB/100.0 MiB" in lines[0] and "ETA" in lines[0]


def test_a_publisher_or_warm_given_no_progress_leaves_no_heartbeat_running() -> None:
    """Seen in a full run: a Publisher built without a Progress started a heartbeat thread nothing ever stopped; it
    logged 'refresh: 2/3 files ... ETA 4283007s' every 10 s for the life of the process, into closed streams."""
    from hf_cache.readers.warm import warm
    from hf_cache.refresh.publish import Publisher

    def heartbeats() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name.startswith("progress-")}

    before = heartbeats()
    publisher = Publisher(target=None, hub=None, scratch=Path("."))  # type: ignore[arg-type]
    assert warm([]) == (0, 0)
    assert heartbeats() == before
    assert publisher.progress.interval == 0


def test_terminal_bar_shows_bytes_total_rate_and_eta_as_bytes_move() -> None:
    stream = io.StringIO()
    progress = Progress("refresh", tty=True, stream=stream)
    progress.add_total(64 * 2**20, 1)
    for _ in range(8):
        progress.advance(4 * 2**20)  # parts of one file: no file has finished
        time.sleep(0.25)
    text = stream.getvalue()
    progress.close()
    frames = [f for f in text.split("\r") if "refresh" in f]
    assert any("/64.0M" in f and "B/s" in f and "<" in f for f in frames), frames  # total, rate, ETA
    assert any("32.0M/64.0M" in f or "28.0M/64.0M" in f for f in frames), frames  # moved before any file ended


def test_log_lines_go_above_the_bar_not_into_it() -> None:
    code = (
        "import io, logging, sys; from hf_cache.logs import setup_logging; from hf_cache.progress import Progress;"
        "setup_logging(); p = Progress('refresh', total_bytes=100, tty=True, stream=sys.stderr); p.advance(50);"
        "logging.getLogger('hf_cache.x').warning('LOGLINE'); p.close()"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    line = next(ln for ln in result.stderr.split("\n") if "LOGLINE" in ln)
    # tqdm clears the bar line first ("\r" + spaces + "\r"), so the log line starts on a clean line.
    assert "refresh" not in line.split("\r")[-1] and line.split("\r")[-1].endswith("LOGLINE"), repr(line)
    assert "%|" not in line.split("\r")[-1]


def test_eta() -> None:
    assert eta_seconds(50, 100, 10.0) == 5.0
    assert eta_seconds(50, 0, 10.0) is None and eta_seconds(0, 100, 0.0) is None


# -- rclone's config notice -----------------------------------------------------------------------------------------
def test_rclone_started_by_the_mount_prints_no_config_file_notice(tmp_path: Path) -> None:
    from hf_cache.mount.config import MountConfig
    from hf_cache.mount.rclone import rclone_binary, rclone_env

    env = rclone_env(MountConfig(bucket="b"), base={"HOME": str(tmp_path), "PATH": os.environ["PATH"]})
    result = subprocess.run(
        [rclone_binary(), "lsf", f":local:{tmp_path}"], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert "not found" not in result.stderr and "NOTICE" not in result.stderr, result.stderr


def test_huggingface_hub_lines_print_once_through_our_redacting_handler() -> None:
    """huggingface_hub's own stderr handler would print its retry lines (URLs included) a second time, unredacted."""
    code = (
        "import logging; from hf_cache.logs import setup_logging; setup_logging(fmt='json');"
        "from huggingface_hub import HfApi;"
        "logging.getLogger('huggingface_hub.utils._http').warning("
        "'Retrying in 1s [Retry 1/5]: GET http://user:pw-Secret99@mirror.local/api/models/org/x')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    record = json.loads(lines[0])
    assert record["message"] == "Retrying in 1s [Retry 1/5]: GET http://mirror.local/api/models/org/x"
    assert "pw-Secret99" not in result.stderr


def test_doctor_says_1_file_for_a_one_file_snapshot(tmp_path: Path) -> None:
    from hf_cache.readers.doctor import check_repo

    hub = tmp_path / "hub"
    repo = hub / "models--org--one"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(SHA)
    (repo / "snapshots" / SHA).mkdir(parents=True)
    (repo / "snapshots" / SHA / "config.json").write_text("{}")
    (repo / "trees").mkdir()
    (repo / "trees" / f"{SHA}.json").write_text(json.dumps({"format_version": 1, "files": {"config.json": {}}}))
    check = check_repo(hub, "org/one", None, "model")
    assert check.ok and check.detail == f"{SHA[:12]}, 1 file, complete", check
    assert check.name == "repo org/one@main"
