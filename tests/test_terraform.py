"""Terraform, offline: fmt, init from the on-disk provider mirror, validate every root and module, terraform test,
and checkov. Each works on a copy, so no .terraform/ or lock file is left in the tree."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parent.parent
TF = ROOT / "terraform"
MIRROR = Path("/opt/tf-plugins")
ROOTS = ("", "modules/bucket", "modules/cluster")


def tf(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TF_CLI_CONFIG_FILE": "/dev/null", "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"}
    return subprocess.run(["terraform", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_tool("terraform")
    if not MIRROR.is_dir():
        pytest.fail(f"the AWS provider mirror {MIRROR} is missing: terraform cannot init offline", pytrace=False)
    work = tmp_path_factory.mktemp("tf") / "terraform"
    shutil.copytree(TF, work, ignore=shutil.ignore_patterns(".terraform", ".terraform.lock.hcl", "*.tfstate*"))
    for sub in ROOTS:
        result = tf(["init", "-backend=false", "-input=false", f"-plugin-dir={MIRROR}"], work / sub)
        assert result.returncode == 0, result.stderr
    return work


def test_fmt() -> None:
    require_tool("terraform")
    result = tf(["fmt", "-check", "-recursive", "-diff"], TF)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("sub", ROOTS)
def test_validate(workdir: Path, sub: str) -> None:
    result = tf(["validate", "-json"], workdir / sub)
    report = json.loads(result.stdout)
    assert report["valid"], report["diagnostics"]


def test_terraform_test_assertions(workdir: Path) -> None:
    result = tf(["test", "-no-color"], workdir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "9 passed, 0 failed" in result.stdout


def test_every_module_input_and_output_is_documented() -> None:
    import re

    for path in TF.rglob("*.tf"):
        text = path.read_text()
        for kind, name, body in re.findall(r'^(variable|output)\s+"([^"]+)"\s*{(.*?)^}', text, re.S | re.M):
            assert "description" in body, f"{path.relative_to(ROOT)}: {kind} {name} has no description"


def test_checkov_finds_nothing_unexplained() -> None:
    require_tool("checkov")
    result = subprocess.run(
        ["checkov", "-d", str(TF), "--framework", "terraform", "--skip-download", "--compact", "-o", "json"],
        capture_output=True,
        text=True,
    )
    report = json.loads(result.stdout)
    assert report["results"]["failed_checks"] == [], [c["check_id"] for c in report["results"]["failed_checks"]]
    assert report["summary"]["passed"] > 50
    for skipped in report["results"]["skipped_checks"]:
        assert len(skipped["check_result"].get("suppress_comment", "")) > 20, skipped["check_id"]


def test_example_tfvars_match_the_example_cluster() -> None:
    tfvars = (TF / "examples" / "example.tfvars").read_text()
    outputs = json.loads((ROOT / "clusters" / "example" / "terraform-output.json").read_text())
    assert f'bucket_name       = "{outputs["bucket"]["value"]}"' in tfvars
    assert outputs["prefix"]["value"] == "clusters/example" and 'cluster_name      = "example"' in tfvars
