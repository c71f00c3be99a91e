"""`hf-cache inject` (Helm post-renderer, CI pipe) and the `daemonset/job-pod` kustomize component wire job pods the
same way: the mount and `hf-cache env` appended to what each workload declares, never replacing it."""

from __future__ import annotations

import copy
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from hf_cache.deploy.inject import POD_SPEC_PATHS, component_replacements, wiring
from hf_cache.readers.envvars import reader_env
from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parent.parent
COMPONENT = ROOT / "daemonset" / "job-pod"

POD = {
    "restartPolicy": "Never",
    "containers": [
        {
            "name": "main",
            "image": "vllm/vllm-openai:v0.8.0",
            "env": [
                {"name": "KEEP_ME", "value": "1"},
                {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
            ],
            "envFrom": [{"configMapRef": {"name": "own-config"}}],
            "volumeMounts": [{"name": "shm", "mountPath": "/dev/shm"}, {"name": "data", "mountPath": "/data"}],
        },
        {"name": "sidecar", "image": "busybox:1.36"},
    ],
    "volumes": [{"name": "shm", "emptyDir": {"medium": "Memory"}}, {"name": "data", "emptyDir": {}}],
}
BARE_POD = {"restartPolicy": "Never", "containers": [{"name": "only", "image": "python:3.11"}]}
API = {
    "Pod": "v1",
    "Job": "batch/v1",
    "CronJob": "batch/v1",
    "Deployment": "apps/v1",
    "StatefulSet": "apps/v1",
    "DaemonSet": "apps/v1",
}


def workload(kind: str, name: str, pod: dict, labelled: bool = True, annotations: dict | None = None) -> dict:
    meta: dict = {"name": name}
    if labelled:
        meta["labels"] = {"hf-cache.io/mount": "true"}
    if annotations:
        meta["annotations"] = annotations
    pod = copy.deepcopy(pod)
    if kind in ("Deployment", "StatefulSet", "DaemonSet"):
        pod.pop("restartPolicy")
    template = {"metadata": {"labels": {"app": name}}, "spec": pod}
    spec: dict
    if kind == "Pod":
        spec = pod
    elif kind == "Job":
        spec = {"template": template}
    elif kind == "CronJob":
        spec = {"schedule": "0 * * * *", "jobTemplate": {"spec": {"template": template}}}
    else:
        spec = {"selector": {"matchLabels": {"app": name}}, "template": template}
        if kind == "StatefulSet":
            spec["serviceName"] = name
    return {"apiVersion": API[kind], "kind": kind, "metadata": meta, "spec": spec}


def pod_spec(doc: dict) -> dict:
    node = doc
    for key in POD_SPEC_PATHS[doc["kind"]]:
        node = node[key]
    return node


def sample() -> list[dict]:
    docs = []
    for kind in POD_SPEC_PATHS:
        docs.append(workload(kind, f"{kind.lower()}-own", POD))
        docs.append(workload(kind, f"{kind.lower()}-bare", BARE_POD))
    docs.append(workload("Job", "not-labelled", POD, labelled=False))
    for value in ("false", "True"):  # only exactly "true" opts in, as the component's labelSelector reads it
        doc = workload("Job", f"labelled-{value.lower()}", POD)
        doc["metadata"]["labels"]["hf-cache.io/mount"] = value
        docs.append(doc)
    return docs


def inject(text: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["hf-cache", "inject"], input=text, capture_output=True, text=True, timeout=60)


def kustomize_with_component(tmp: Path, docs: list[dict]) -> list[dict]:
    require_tool("kubectl")
    (tmp / "workloads.yaml").write_text(yaml.safe_dump_all(docs))
    rel = os.path.relpath(COMPONENT, tmp)
    (tmp / "kustomization.yaml").write_text(f"resources: [workloads.yaml]\ncomponents: [{rel}]\n")
    out = subprocess.run(["kubectl", "kustomize", str(tmp)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def by_name(docs: list[dict]) -> dict[tuple[str, str], dict]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def test_component_and_inject_produce_the_same_pod_specs(tmp_path: Path) -> None:
    docs = sample()
    result = inject(yaml.safe_dump_all(docs))
    assert result.returncode == 0, result.stderr
    injected = by_name([d for d in yaml.safe_load_all(result.stdout) if d])
    built = by_name(kustomize_with_component(tmp_path, docs))
    assert injected.keys() == built.keys() == by_name(docs).keys()
    for key, doc in built.items():
        assert doc == injected[key], key


def test_every_container_gets_the_mount_and_env_and_keeps_its_own() -> None:
    result = inject(yaml.safe_dump_all(sample()))
    assert result.returncode == 0, result.stderr
    docs = by_name([d for d in yaml.safe_load_all(result.stdout) if d])
    w = wiring()
    for kind in POD_SPEC_PATHS:
        own = pod_spec(docs[(kind, f"{kind.lower()}-own")])
        # The workload's own volumes, mounts, env and envFrom come first and are all still there.
        assert own["volumes"] == [*POD["volumes"], w["volume"]]
        main, sidecar = own["containers"]
        assert main["volumeMounts"] == [*POD["containers"][0]["volumeMounts"], w["volumeMount"]]
        assert main["env"] == [*POD["containers"][0]["env"], *w["env"]]
        assert main["envFrom"] == POD["containers"][0]["envFrom"]
        assert sidecar["volumeMounts"] == [w["volumeMount"]] and sidecar["env"] == w["env"]
        bare = pod_spec(docs[(kind, f"{kind.lower()}-bare")])
        assert bare["volumes"] == [w["volume"]] and bare["containers"][0]["env"] == w["env"]
    for name in ("not-labelled", "labelled-false", "labelled-true"):
        assert pod_spec(docs[("Job", name)]) == POD, name  # not opted in: untouched


def test_inject_is_idempotent_also_on_the_components_output(tmp_path: Path) -> None:
    once = inject(yaml.safe_dump_all(sample())).stdout
    assert inject(once).stdout == once
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    built = kustomize_with_component(tmp_path / "first", sample())
    again = [d for d in yaml.safe_load_all(inject(yaml.safe_dump_all(built)).stdout) if d]
    assert again == built
    assert by_name(kustomize_with_component(tmp_path / "second", built)) == by_name(built)


def test_annotation_names_the_containers() -> None:
    doc = workload("Deployment", "serve", POD, annotations={"hf-cache.io/containers": "sidecar"})
    result = inject(yaml.safe_dump(doc))
    assert result.returncode == 0, result.stderr
    (out,) = [d for d in yaml.safe_load_all(result.stdout) if d]
    main, sidecar = pod_spec(out)["containers"]
    assert main == POD["containers"][0]
    assert sidecar["env"] == wiring()["env"] and sidecar["volumeMounts"] == [wiring()["volumeMount"]]


def test_kind_list_items_are_wired() -> None:
    text = yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": [workload("Job", "j", BARE_POD)]})
    result = inject(text)
    assert result.returncode == 0, result.stderr
    (out,) = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert pod_spec(out["items"][0])["containers"][0]["env"] == wiring()["env"]


def _with(env: list | None = None, mounts: list | None = None, volumes: list | None = None) -> dict:
    pod = copy.deepcopy(BARE_POD)
    if env is not None:
        pod["containers"][0]["env"] = env
    if mounts is not None:
        pod["containers"][0]["volumeMounts"] = mounts
    if volumes is not None:
        pod["volumes"] = volumes
    return workload("Job", "train", pod)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        (yaml.safe_dump(_with(env=[{"name": "HF_HOME", "value": "/data/hf"}])), "env var 'HF_HOME'"),
        (
            yaml.safe_dump(_with(mounts=[{"name": "models", "mountPath": "/mnt/hf_cache"}])),
            "'models' is already mounted at /mnt/hf_cache",
        ),
        (yaml.safe_dump(_with(volumes=[{"name": "hf-cache", "emptyDir": {}}])), "volume 'hf-cache'"),
        (
            yaml.safe_dump(workload("Job", "train", BARE_POD, annotations={"hf-cache.io/containers": "nope"})),
            "names no container nope",
        ),
        (yaml.safe_dump({**workload("Job", "x", BARE_POD), "kind": "ReplicaSet"}), "inject wires only"),
        (yaml.safe_dump({**workload("Job", "x", BARE_POD), "spec": {}}), "has no pod spec with containers"),
        ("kind: Job\nmetadata: [unclosed\n", "not valid YAML at line"),
        ("- just\n- a list\n", "document 1 is not a Kubernetes object"),
    ],
    ids=[
        "own-HF_HOME",
        "other-volume-at-mountpoint",
        "own-hf-cache-volume",
        "unknown-container",
        "kind",
        "no-pod",
        "bad-yaml",
        "not-a-mapping",
    ],
)
def test_inject_refuses_in_one_line_what_it_would_have_to_replace(text: str, named: str) -> None:
    result = inject(text)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hf-cache: error: ") and named in lines[0], result.stderr
    assert result.stdout == ""  # a post-renderer that fails must not hand Helm half a release


def test_component_is_generated_from_the_wiring_and_hf_cache_env() -> None:
    (local,) = [d for d in yaml.safe_load_all((COMPONENT / "wiring.yaml").read_text()) if d]
    assert {k: local[k] for k in ("volume", "volumeMount", "env")} == wiring()
    assert local["metadata"]["annotations"]["config.kubernetes.io/local-config"] == "true"
    assert wiring()["env"] == [{"name": k, "value": v} for k, v in reader_env().items()]
    shell = subprocess.run(["hf-cache", "env", "--format", "dotenv"], capture_output=True, text=True, check=True)
    assert [f"{e['name']}={e['value']}" for e in wiring()["env"]] == shell.stdout.splitlines()
    kustomization = yaml.safe_load((COMPONENT / "kustomization.yaml").read_text())
    assert kustomization["replacements"] == component_replacements()
    assert "patches" not in kustomization  # JSON-patch `add` replaces a workload's lists


def test_injected_manifests_are_valid_kubernetes(tmp_path: Path) -> None:
    require_tool("kubernetes-validate")
    result = inject(yaml.safe_dump_all(sample()))
    path = tmp_path / "injected.yaml"
    path.write_text(result.stdout)
    check = subprocess.run(
        ["kubernetes-validate", "--strict", "--quiet", "-k", "1.33.0", str(path)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
