"""The foundation: the loopback servers work, the tiny model loads, the CLI reports errors as one line."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from hf_cache import layout
from hf_cache.lab.s3server import S3Server
from hf_cache.logs import MASK, RedactingFilter, redact


def test_s3_server_round_trip(s3_server: S3Server, bucket: str) -> None:
    client = s3_server.client()
    client.put_object(Bucket=bucket, Key="a/b.txt", Body=b"hello")
    assert client.get_object(Bucket=bucket, Key="a/b.txt")["Body"].read() == b"hello"


def test_tiny_model_loads_and_generates(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ids = tok("hello world", return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=tok.eos_token_id)
    assert out.shape[1] == ids.shape[1] + 3
    assert (tiny_model_dir / "model.safetensors").stat().st_size > 10_000


def test_layout_names() -> None:
    assert layout.repo_folder_name("org/name") == "models--org--name"
    assert layout.repo_folder_name("org/data", "dataset") == "datasets--org--data"
    assert layout.ref_key("", "o/n", "model", "main") == "hub/models--o--n/refs/main"
    assert layout.snapshot_key("p/q/", "o/n", "model", "a" * 40, "x/y.bin") == (
        f"p/q/hub/models--o--n/snapshots/{'a' * 40}/x/y.bin"
    )
    assert layout.status_key("p") == "p/hf-cache/status.json"


def test_redaction_hides_env_secrets_and_token_shapes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_SuperSecretValue123")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-xyz")
    text = redact("token hf_SuperSecretValue123 key aws-secret-xyz other hf_abcdefghijkl Authorization: Bearer abc")
    assert "SuperSecret" not in text and "aws-secret-xyz" not in text and "hf_abcdefghijkl" not in text
    assert "Bearer abc" not in text and text.count(MASK) == 4

    # rclone's errors quote the presigned URLs the mount's S3 endpoint sends it to (with IRSA: a session token)
    line = (
        'vfs cache: failed to download: Get "https://b.s3.eu-west-1.amazonaws.com/k?x-id=GetObject&X-Amz-Algorithm='
        "AWS4-HMAC-SHA256&X-Amz-Credential=ASIAXYZ%2F20261128%2Feu-west-1%2Fs3%2Faws4_request&X-Amz-Date=20261128T0"
        "70817Z&X-Amz-Expires=60&X-Amz-Security-Token=IQoJb3JpZ2luX2VjEHg%2Bsession&X-Amz-SignedHeaders=host&X-Amz-"
        'Signature=0d45c0cede15": dial tcp: i/o timeout'
    )
    text = redact(line)
    assert "ASIAXYZ" not in text and "IQoJb3JpZ2lu" not in text and "0d45c0cede15" not in text, text
    assert "X-Amz-Date=20261128T070817Z" in text and text.endswith('": dial tcp: i/o timeout')

    record = logging.LogRecord("x", logging.INFO, __file__, 1, "using %s", ("hf_SuperSecretValue123",), None)
    RedactingFilter().filter(record)
    assert record.getMessage() == f"using {MASK}"


EXPECTED_COMMANDS = {"refresh", "ls", "verify", "mount", "env", "warm", "doctor", "demo", "render", "inject"}


def _listed_commands(help_text: str) -> set[str]:
    """The names in the help's Commands section, as whole words: 'ls' is not found inside 'models'."""
    section = help_text.split("Commands:\n", 1)[1]
    names = set()
    for line in section.splitlines():
        if line.startswith("  ") and not line.startswith("   "):
            names.add(line.split()[0])
    return names


def test_cli_help_lists_every_command_and_each_one_loads() -> None:
    from click.testing import CliRunner

    from hf_cache.cli import cli

    out = subprocess.run([sys.executable, "-m", "hf_cache", "--help"], capture_output=True, text=True, check=True)
    listed = _listed_commands(out.stdout)
    assert listed >= EXPECTED_COMMANDS, f"missing from the CLI: {sorted(EXPECTED_COMMANDS - listed)}"
    runner = CliRunner()
    for name in sorted(listed):
        result = runner.invoke(cli, [name, "--help"])
        assert result.exit_code == 0, (name, result.output, result.exception)
        assert result.output.startswith(f"Usage: cli {name} ") or result.output.startswith(f"Usage: {name}"), name
    assert _listed_commands("Commands:\n  models  List models\n") == {"models"}  # no substring matches


def test_every_subpackage_ships_as_hf_cache() -> None:
    """cache/ imports as hf_cache through setuptools' package-dir, which needs every subpackage listed: a folder
    missing from pyproject.toml works in an editable checkout and is absent from the image's wheel."""
    import tomllib

    root = Path(__file__).resolve().parents[1]
    config = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"] == {"hf_cache": "cache"}
    folders = {
        "hf_cache" + ("." + ".".join(p.parent.relative_to(root / "cache").parts) if p.parent != root / "cache" else "")
        for p in (root / "cache").rglob("__init__.py")
    }
    assert set(config["packages"]) == folders, "list every folder of cache/ under [tool.setuptools] packages"
