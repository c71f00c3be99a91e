"""Real Hugging Face readers through a real mount, on a cache published by the real ``hf-cache refresh``.

One publish and one mount serve the whole module (they are the slow part); every reader runs in a fresh
subprocess whose Hugging Face environment is exactly ``reader_env()`` (what ``hf-cache env`` prints), so offline
mode and the read-only mount are what they are in a job pod.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hf_cache.lab.hubserver import HubServer
from hf_cache.lab.mounting import RunningMount, start_mount
from hf_cache.lab.s3server import S3Server
from hf_cache.readers.envvars import reader_env
from tests.refresh_helpers import run_cli, run_refresh

CUSTOM_CONFIG = """
from transformers import GPT2Config
class TinyCustomConfig(GPT2Config):
    model_type = "tiny-custom"
"""
CUSTOM_MODEL = """
from transformers import GPT2LMHeadModel
from .configuration_tiny import TinyCustomConfig
class TinyCustomModel(GPT2LMHeadModel):
    config_class = TinyCustomConfig
    def custom_marker(self):
        return "remote code ran"
"""


@dataclass
class Published:
    mount: RunningMount
    sha: str
    scratch: Path
    hub: HubServer


def make_remote_code_repo(tiny: Path, dest: Path) -> Path:
    shutil.copytree(tiny, dest)
    (dest / "configuration_tiny.py").write_text(CUSTOM_CONFIG)
    (dest / "modeling_tiny.py").write_text(CUSTOM_MODEL)
    config = json.loads((dest / "config.json").read_text())
    config["model_type"] = "tiny-custom"
    config["architectures"] = ["TinyCustomModel"]
    config["auto_map"] = {
        "AutoConfig": "configuration_tiny.TinyCustomConfig",
        "AutoModelForCausalLM": "modeling_tiny.TinyCustomModel",
    }
    (dest / "config.json").write_text(json.dumps(config))
    return dest


@pytest.fixture(scope="module")
def published(
    s3_server: S3Server, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Published]:
    root = tmp_path_factory.mktemp("readers")
    repo = root / "tiny"
    shutil.copytree(tiny_model_dir, repo)
    (repo / "nested" / "deeper").mkdir(parents=True)
    (repo / "nested" / "deeper" / "notes.txt").write_text("nested file")
    hub = HubServer()
    sha = hub.add_repo("org/tiny", repo, revision_names=("main", "v1.0"))
    remote = make_remote_code_repo(tiny_model_dir, root / "remote")
    data = root / "data"
    data.mkdir()
    (data / "train.csv").write_text("text,label\nhello,1\nworld,0\nmodels,1\n")
    models = root / "models.txt"
    models.write_text(
        f"org/tiny\norg/tiny@v1.0\norg/remote-code source=file://{remote}\norg/data type=dataset source=file://{data}\n"
    )
    bucket = s3_server.new_bucket()
    env = {**s3_server.env(), "HF_ENDPOINT": hub.endpoint, "HF_TOKEN": ""}
    result = run_refresh(models, bucket, env, prefix="hf")
    assert result.returncode == 0, result.stderr
    mount = start_mount(
        bucket=bucket, prefix="hf", env=s3_server.env(), mountpoint=root / "mnt", cache_dir=root / "cache"
    )
    try:
        yield Published(mount, sha, root / "scratch", hub)
    finally:
        mount.stop()
        hub.stop()


def run_reader(p: Published, code: str, timeout: float = 180) -> dict:
    """Run ``code`` in a fresh interpreter with only the reader environment; it prints one JSON line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_", "HUGGINGFACE_"))}
    env.update(reader_env(str(p.mount.mountpoint), str(p.scratch)))
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_huggingface_hub_resolves_every_way_offline(published: Published) -> None:
    out = run_reader(
        published,
        f"""
        import json, os
        from huggingface_hub import hf_hub_download, snapshot_download, try_to_load_from_cache, scan_cache_dir
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError
        r = {{}}
        r["default"] = open(hf_hub_download("org/tiny", "config.json")).read()
        r["main"] = hf_hub_download("org/tiny", "config.json", revision="main")
        r["tag"] = hf_hub_download("org/tiny", "config.json", revision="v1.0")
        r["sha"] = hf_hub_download("org/tiny", "config.json", revision="{published.sha}")
        r["nested"] = open(hf_hub_download("org/tiny", "nested/deeper/notes.txt")).read()
        snap = snapshot_download("org/tiny", allow_patterns=["*.json"])
        r["snapshot"] = snap
        r["snapshot_files"] = sorted(os.listdir(snap))
        r["try"] = try_to_load_from_cache("org/tiny", "tokenizer.json")
        info = scan_cache_dir()
        r["scan"] = sorted((repo.repo_id, repo.repo_type) for repo in info.repos)
        try:
            hf_hub_download("org/tiny", "no-such-file.bin")
        except (EntryNotFoundError, LocalEntryNotFoundError) as exc:
            r["missing"] = type(exc).__name__
        try:
            hf_hub_download("org/never-published", "config.json")
        except LocalEntryNotFoundError as exc:
            r["unpublished"] = str(exc)[:300]
        print(json.dumps(r))
    """,
    )
    mp = str(published.mount.mountpoint)
    snap_dir = f"{mp}/hub/models--org--tiny/snapshots/{published.sha}"
    assert json.loads(out["default"])["model_type"] == "gpt2"
    assert out["main"] == out["tag"] == out["sha"] == f"{snap_dir}/config.json"
    assert out["nested"] == "nested file"
    assert out["snapshot"] == snap_dir and "config.json" in out["snapshot_files"]
    assert out["try"] == f"{snap_dir}/tokenizer.json"
    assert ("org/tiny", "model") in [tuple(x) for x in out["scan"]]
    assert ("org/data", "dataset") in [tuple(x) for x in out["scan"]]
    assert out["missing"] in ("EntryNotFoundError", "LocalEntryNotFoundError")
    assert "offline" in out["unpublished"].lower() or "cannot find" in out["unpublished"].lower()


def test_transformers_loads_and_generates_through_the_mount(published: Published) -> None:
    out = run_reader(
        published,
        """
        import json
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
        config = AutoConfig.from_pretrained("org/tiny")
        tok = AutoTokenizer.from_pretrained("org/tiny", revision="v1.0")
        model = AutoModelForCausalLM.from_pretrained("org/tiny")
        ids = tok("hello world", return_tensors="pt").input_ids
        out = model.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=tok.eos_token_id)
        print(json.dumps({"layers": config.n_layer, "new": int(out.shape[1] - ids.shape[1]),
                          "text": tok.decode(out[0])}))
    """,
    )
    assert out == {"layers": 2, "new": 5, "text": out["text"]} and out["text"].startswith("hello world")


def test_trust_remote_code_model_runs_from_the_mount(published: Published) -> None:
    out = run_reader(
        published,
        """
        import json, os
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained("org/remote-code", trust_remote_code=True)
        print(json.dumps({"marker": model.custom_marker(), "cls": type(model).__name__,
                          "modules": os.environ["HF_MODULES_CACHE"]}))
    """,
    )
    assert out["marker"] == "remote code ran" and out["cls"] == "TinyCustomModel"
    assert Path(out["modules"]).is_dir()  # the module copy went to scratch, not into the read-only mount


def test_datasets_load_dataset_from_the_mount(published: Published) -> None:
    """datasets 5 offline never looks in the hub cache for a repo id (only in its own processed cache), so the
    documented recipe is load_dataset(snapshot_download(...)): the snapshot resolves offline from the mount."""
    out = run_reader(
        published,
        """
        import json
        from datasets import load_dataset
        from huggingface_hub import snapshot_download
        ds = load_dataset(snapshot_download("org/data", repo_type="dataset"), split="train")
        print(json.dumps({"rows": ds.num_rows, "text": list(ds["text"])}))
    """,
    )
    assert out == {"rows": 3, "text": ["hello", "world", "models"]}


def test_warm_fills_the_node_cache_so_reads_fetch_nothing(published: Published) -> None:
    env = {**os.environ, "HFCACHE_MOUNTPOINT": str(published.mount.mountpoint)}
    before = published.mount.metrics()["hfcache_s3_read_bytes_total"]
    result = run_cli(["warm", "org/remote-code", "org/data@main"], env)
    assert result.returncode == 1  # org/data is a model id here; it names what is missing
    assert "org/data is not published" in result.stderr
    result = run_cli(["warm", "org/remote-code", f"org/tiny@{published.sha}"], env)
    assert result.returncode == 0, result.stderr
    assert "warmed 2 snapshots" in result.stdout
    warmed = published.mount.metrics()["hfcache_s3_read_bytes_total"]
    assert warmed >= before
    for path in (published.mount.mountpoint / "hub" / "models--org--remote-code" / "snapshots").rglob("*"):
        if path.is_file():
            path.read_bytes()
    assert published.mount.metrics()["hfcache_s3_read_bytes_total"] == warmed


def test_doctor_passes_in_a_good_pod_and_explains_failures(published: Published) -> None:
    mp = str(published.mount.mountpoint)
    good = {**os.environ, **reader_env(mp), "HFCACHE_MOUNTPOINT": mp}
    result = run_cli(["doctor", "org/tiny", "org/tiny@v1.0"], good)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("[ok]") == 6

    bad = {k: v for k, v in good.items() if not k.startswith("HF_")}
    result = run_cli(["doctor", "org/never-published", "org/tiny@v9"], bad)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert any(ln.startswith("[FAIL] environment: HF_HOME=(unset)") for ln in lines)
    assert any("org/never-published is not published" in ln and "add it to models.txt" in ln for ln in lines)
    assert any("has no ref 'v9'" in ln for ln in lines)

    result = run_cli(["doctor", "--mountpoint", "/nonexistent/hf_cache"], good)
    assert result.returncode == 1 and "does not exist; mount the node path" in result.stdout


def test_env_formats_parse_back(tmp_path: Path) -> None:
    want = reader_env("/mnt/hf_cache")
    shell = run_cli(["env", "--format", "shell"], dict(os.environ)).stdout
    out = subprocess.run(["bash", "-c", shell + "\nenv"], capture_output=True, text=True, env={}).stdout
    got = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    assert {k: got[k] for k in want} == want
    dotenv = run_cli(["env", "--format", "dotenv"], dict(os.environ)).stdout
    assert dict(line.split("=", 1) for line in dotenv.splitlines()) == want
    k8s = run_cli(["env", "--format", "k8s", "--mountpoint", "/mnt/hf_cache"], dict(os.environ)).stdout
    import yaml

    assert {e["name"]: e["value"] for e in yaml.safe_load(k8s)["env"]} == want


def test_demo_runs_the_whole_pipeline_and_cleans_up() -> None:
    result = run_cli(["demo"], dict(os.environ), timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for step in (
        "1. loopback S3",
        "2. published demo/tiny-gpt2",
        "3. mounted read-only",
        "cold:",
        "warm:",
        "5. node cache:",
        "6. stopped",
    ):
        assert step in out
    warm_line = next(ln for ln in out.splitlines() if "warm:" in ln)
    assert "(0 B read from S3)" in warm_line
    workdir = out.rsplit("removed ", 1)[1].strip()
    assert not Path(workdir).exists()
    assert subprocess.run(["pgrep", "-f", workdir], capture_output=True).returncode == 1
