"""Kubernetes manifests: every base, component and overlay renders offline, validates strictly against 1.29-1.33,
passes checkov with every skip explained, and has the shape the design needs."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from hf_cache.deploy.inject import NODE_PATH, NODE_TIER
from hf_cache.readers.envvars import reader_env
from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parent.parent
K8S_VERSIONS = ("1.29.0", "1.30.0", "1.31.0", "1.32.0", "1.33.0")
JOB = """
apiVersion: batch/v1
kind: Job
metadata:
  name: train
  labels: {hf-cache.io/mount: "true"}
spec:
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: trainer
          image: python:3.11
          env: [{name: KEEP_ME, value: "1"}]
"""
DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: serve
  labels: {hf-cache.io/mount: "true"}
spec:
  selector: {matchLabels: {app: serve}}
  template:
    metadata: {labels: {app: serve}}
    spec:
      containers:
        - name: vllm
          image: vllm/vllm-openai:v0.8.0
          envFrom: [{secretRef: {name: vllm-config}}]
          env: [{name: VLLM_PORT, value: "8000"}]
          volumeMounts: [{name: shm, mountPath: /dev/shm}]
        - {name: sidecar, image: busybox:1.36}
      volumes: [{name: shm, emptyDir: {medium: Memory}}]
"""
UNLABELLED = """
apiVersion: batch/v1
kind: Job
metadata: {name: other}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: busybox:1.36}]
"""


def rel(frm: Path, to: str) -> str:
    """kustomize takes only relative paths to other kustomizations."""
    return os.path.relpath(ROOT / to, frm)


def kustomize(path: Path, *flags: str) -> list[dict]:
    require_tool("kubectl")
    out = subprocess.run(["kubectl", "kustomize", *flags, str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def make_cluster(tmp: Path, tf: dict | None = None, **values: object) -> Path:
    """A cluster folder like clusters/example with some values changed, rendered by `hf-cache render`."""
    example = ROOT / "clusters" / "example"
    cluster = tmp / "cluster"
    cluster.mkdir()
    merged = {**json.loads((example / "values.json").read_text()), **values}
    (cluster / "values.json").write_text(json.dumps({k: v for k, v in merged.items() if v is not None}))
    outputs = json.loads((example / "terraform-output.json").read_text())
    outputs.update({k: {"value": v} for k, v in (tf or {}).items()})
    (cluster / "terraform-output.json").write_text(json.dumps(outputs))
    result = render_cluster(cluster)
    assert result.returncode == 0, result.stderr
    return cluster


def render_cluster(cluster: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["hf-cache", "render", str(cluster), "--root", str(ROOT)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict]]:
    """Every base, component and overlay, rendered; the example cluster re-rendered by `hf-cache render`."""
    tmp = tmp_path_factory.mktemp("k8s")
    app = tmp / "app"
    app.mkdir()
    (app / "workloads.yaml").write_text(JOB + "---" + DEPLOYMENT + "---" + UNLABELLED)
    (app / "kustomization.yaml").write_text(
        f"resources: [workloads.yaml]\ncomponents: [{rel(app, 'daemonset/job-pod')}]\n"
    )
    team = tmp / "team"
    team.mkdir()
    (team / "kustomization.yaml").write_text(
        f"resources: [{rel(team, 'daemonset/pvc')}]\nnamespace: team-a\nnameSuffix: -team-a\n"
    )
    monitor = tmp / "monitor"
    monitor.mkdir()
    (monitor / "kustomization.yaml").write_text(
        f"resources: [{rel(monitor, 'daemonset')}]\ncomponents: [{rel(monitor, 'daemonset/podmonitor')}]\n"
    )
    example = ROOT / "clusters" / "example"
    committed = (example / "kustomization.yaml").read_text()
    result = subprocess.run(["hf-cache", "render", str(example)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (example / "kustomization.yaml").read_text() == committed, "clusters/example is stale: re-render it"
    return {
        "daemonset": kustomize(ROOT / "daemonset"),
        "cronjob": kustomize(ROOT / "cronjob"),
        "pvc": kustomize(team),
        "podmonitor": kustomize(monitor),
        "job-pod": kustomize(app),
        "example": kustomize(ROOT / "clusters" / "example", "--load-restrictor", "LoadRestrictionsNone"),
    }


@pytest.fixture(scope="module")
def rendered_files(rendered: dict[str, list[dict]], tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("rendered")
    files = []
    for name, docs in rendered.items():
        docs = [d for d in docs if d["kind"] not in ("PodMonitor", "PrometheusRule")]  # CRDs: not in the core schemas
        path = out / f"{name}.yaml"
        path.write_text(yaml.safe_dump_all(docs))
        files.append(path)
    return files


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_strict_schema_validation(rendered_files: list[Path], version: str, tmp_path: Path) -> None:
    require_tool("kubernetes-validate")
    files = rendered_files
    if version == "1.29.0":  # ValidatingAdmissionPolicy is admissionregistration.k8s.io/v1 from 1.30 on
        files = []
        for f in rendered_files:
            docs = [d for d in yaml.safe_load_all(f.read_text()) if not d["kind"].startswith("ValidatingAdmission")]
            (tmp_path / f.name).write_text(yaml.safe_dump_all(docs))
            files.append(tmp_path / f.name)
    result = subprocess.run(
        ["kubernetes-validate", "--strict", "--quiet", "-k", version, *map(str, files)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_checkov_passes_with_every_skip_justified(rendered_files: list[Path], rendered) -> None:
    require_tool("checkov")
    args = ["checkov", "--framework", "kubernetes", "--skip-download", "--quiet", "--compact", "-o", "json"]
    for f in rendered_files:
        if f.stem != "job-pod":  # that render is the users' sample workloads around our patch, not our manifests
            args += ["-f", str(f)]
    result = subprocess.run(args, capture_output=True, text=True)
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed = [c for r in reports for c in r["results"]["failed_checks"]]
    assert not failed, [(c["check_id"], c["resource"]) for c in failed]
    assert sum(r["summary"]["passed"] for r in reports) > 100
    for docs in rendered.values():
        for doc in docs:
            for key, value in (doc["metadata"].get("annotations") or {}).items():
                if key.startswith("checkov.io/skip"):
                    check, _, reason = value.partition("=")
                    assert re.fullmatch(r"CKV2?_K8S_\d+", check) and len(reason) > 20, (key, value)


def test_every_checkov_skip_is_needed(rendered, tmp_path: Path) -> None:
    """A skip whose check would pass anyway only misleads: without the skip annotations, exactly the skipped checks
    fail, on exactly the resources that skip them."""
    require_tool("checkov")
    skipped, docs = set(), []
    for doc in rendered["example"]:
        doc = json.loads(json.dumps(doc))
        annotations = doc["metadata"].get("annotations") or {}
        for key in [k for k in annotations if k.startswith("checkov.io/skip")]:
            skipped.add((annotations.pop(key).partition("=")[0], doc["kind"], doc["metadata"]["name"]))
        docs.append(doc)
    path = tmp_path / "no-skips.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    args = ["checkov", "--framework", "kubernetes", "--skip-download", "--quiet", "--compact", "-o", "json"]
    report = json.loads(subprocess.run([*args, "-f", str(path)], capture_output=True, text=True).stdout)
    failed = {
        (c["check_id"], c["resource"].split(".")[0], c["resource"].split(".")[-1])
        for r in (report if isinstance(report, list) else [report])
        for c in r["results"]["failed_checks"]
    }
    assert failed == skipped


def test_only_the_mount_container_is_privileged(rendered) -> None:
    privileged = []
    for docs in rendered.values():
        for doc in docs:
            spec = doc.get("spec", {})
            pod = spec.get("template", {}).get("spec") or spec.get("jobTemplate", {}).get("spec", {}).get(
                "template", {}
            ).get("spec")
            for c in (pod or {}).get("containers", []):
                if (c.get("securityContext") or {}).get("privileged"):
                    privileged.append((doc["kind"], doc["metadata"]["name"], c["name"]))
    assert set(privileged) == {("DaemonSet", "hf-cache-mount", "mount")}


def test_daemonset_shape(rendered) -> None:
    (ns,) = by_kind(rendered["daemonset"], "Namespace")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    (ds,) = by_kind(rendered["example"], "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["args"] == ["mount"] and pod["priorityClassName"] == "system-node-critical"
    assert c["securityContext"]["readOnlyRootFilesystem"] is True  # see test_mount_runs_with_a_read_only_root...
    assert {"operator": "Exists"} in pod["tolerations"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["fuse"]["hostPath"]["path"] == "/dev/fuse"
    assert c["startupProbe"]["httpGet"]["path"] == c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert "fusermount3" in c["lifecycle"]["preStop"]["exec"]["command"]
    assert c["resources"]["requests"]["memory"] == c["resources"]["limits"]["memory"]
    assert pod["terminationGracePeriodSeconds"] >= 15
    assert ds["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == "9090"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["HFCACHE_CACHE_MAX_SIZE"] == "75%" and env["HFCACHE_MOUNTPOINT"] == NODE_PATH
    assert env["HFCACHE_TIER_DIR"] == NODE_TIER == os.path.dirname(NODE_PATH)  # pods mount the tier: links resolve
    assert NODE_PATH in c["lifecycle"]["preStop"]["exec"]["command"]
    (monitor,) = by_kind(rendered["podmonitor"], "PodMonitor")
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"


def test_cronjob_shape_and_models_from_the_repo_root(rendered) -> None:
    (cj,) = by_kind(rendered["example"], "CronJob")
    spec = cj["spec"]
    assert spec["concurrencyPolicy"] == "Forbid" and spec["startingDeadlineSeconds"] > 0
    job = spec["jobTemplate"]["spec"]
    assert job["backoffLimit"] >= 0 and job["activeDeadlineSeconds"] > 0
    pod = job["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (c,) = pod["containers"]
    assert c["args"] == ["refresh"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["hf-token"]["secret"]["optional"] is True
    models_cm = volumes["models"]["configMap"]["name"]
    (cm,) = [d for d in by_kind(rendered["example"], "ConfigMap") if d["metadata"]["name"] == models_cm]
    assert cm["data"]["models.txt"] == (ROOT / "models.txt").read_text()  # the one source, hash-suffixed name
    assert "sizeLimit" in volumes["scratch"]["emptyDir"]
    (config,) = [
        d for d in by_kind(rendered["example"], "ConfigMap") if d["metadata"]["name"].startswith("hf-cache-config")
    ]
    tf = json.loads((ROOT / "clusters/example/terraform-output.json").read_text())
    assert config["data"] == {
        "HFCACHE_BUCKET": tf["bucket"]["value"],
        "HFCACHE_PREFIX": tf["prefix"]["value"],
        "AWS_REGION": tf["region"]["value"],
    }
    sas = {d["metadata"]["name"]: d for d in by_kind(rendered["example"], "ServiceAccount")}
    assert (
        sas["hf-cache-mount"]["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == tf["mount_role_arn"]["value"]
    )
    assert (
        sas["hf-cache-refresh"]["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
        == tf["refresh_role_arn"]["value"]
    )


def test_job_pods_get_a_read_only_mount_and_the_reader_env_and_keep_their_own(rendered) -> None:
    docs = rendered["job-pod"]
    env = [{"name": k, "value": v} for k, v in reader_env().items()]  # `hf-cache env`: one source of truth
    mount = {"name": "hf-cache", "mountPath": "/mnt/hf_cache", "readOnly": True, "mountPropagation": "HostToContainer"}
    for kind, name in (("Job", "train"), ("Deployment", "serve")):
        (w,) = [d for d in by_kind(docs, kind) if d["metadata"]["name"] == name]
        pod = w["spec"]["template"]["spec"]
        for c in pod["containers"]:
            assert [m for m in c["volumeMounts"] if m["name"] == "hf-cache"] == [mount]
            assert c["env"][-len(env) :] == env
        assert {"name": "hf-cache", "hostPath": {"path": NODE_TIER, "type": "Directory"}} in pod["volumes"]
    # What the workloads declared themselves is all still there (the component appends, it never replaces).
    (train,) = [d for d in by_kind(docs, "Job") if d["metadata"]["name"] == "train"]
    assert train["spec"]["template"]["spec"]["containers"][0]["env"][0] == {"name": "KEEP_ME", "value": "1"}
    (serve,) = by_kind(docs, "Deployment")
    pod = serve["spec"]["template"]["spec"]
    assert {"name": "shm", "emptyDir": {"medium": "Memory"}} in pod["volumes"]
    vllm = pod["containers"][0]
    assert vllm["volumeMounts"][0] == {"name": "shm", "mountPath": "/dev/shm"}
    assert vllm["envFrom"] == [{"secretRef": {"name": "vllm-config"}}]
    assert vllm["env"][0] == {"name": "VLLM_PORT", "value": "8000"}
    (other,) = [d for d in by_kind(docs, "Job") if d["metadata"]["name"] == "other"]
    assert "volumes" not in other["spec"]["template"]["spec"]
    assert "HfCacheJobPod" not in {d["kind"] for d in docs}  # the component's local config stays out


def test_mount_parent_is_the_only_node_folder_shared_bidirectionally(rendered) -> None:
    (ds,) = by_kind(rendered["example"], "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    bidirectional = [m for m in c["volumeMounts"] if m.get("mountPropagation") == "Bidirectional"]
    assert len(bidirectional) == 1
    (parent,) = bidirectional
    node_parent = volumes[parent["name"]]["hostPath"]["path"]
    # Exactly the mountpoint's own parent folder: not /mnt, /var/lib or / of the node.
    assert node_parent == parent["mountPath"] == os.path.dirname(NODE_PATH) == "/var/lib/hf-cache"
    assert {v["hostPath"]["path"] for v in volumes.values() if "hostPath" in v} == {
        "/dev/fuse",
        "/var/lib/hf-cache",
        "/var/cache/hf-cache",
    }
    assert {v["name"] for v in volumes.values() if "emptyDir" in v} == {"tmp"}


def test_no_pod_gets_a_kubernetes_api_token(rendered) -> None:
    """Nothing calls the API; IRSA projects its own aws-iam-token volume, so no ServiceAccount token is mounted."""
    pods = 0
    for docs in (rendered["example"], rendered["daemonset"], rendered["cronjob"]):
        for doc in docs:
            spec = doc.get("spec", {})
            pod = spec.get("template", {}).get("spec") or spec.get("jobTemplate", {}).get("spec", {}).get(
                "template", {}
            ).get("spec")
            if doc["kind"] == "ServiceAccount":
                assert doc["automountServiceAccountToken"] is False, doc["metadata"]["name"]
            if pod:
                pods += 1
                assert pod["automountServiceAccountToken"] is False, doc["metadata"]["name"]
            for key, value in (doc["metadata"].get("annotations") or {}).items():
                assert not value.startswith("CKV_K8S_38="), (doc["metadata"]["name"], key)
    assert pods >= 4


def test_metrics_port_is_open_to_the_monitoring_namespace_only(rendered, tmp_path: Path) -> None:
    def ingress(docs: list[dict]) -> list[dict]:
        (np,) = [d for d in by_kind(docs, "NetworkPolicy") if d["metadata"]["name"] == "hf-cache-mount-metrics"]
        return np["spec"]["ingress"]

    def expected(ns: str) -> list[dict]:
        selector = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}}
        return [{"from": [selector], "ports": [{"port": 9090, "protocol": "TCP"}]}]

    assert ingress(rendered["daemonset"]) == expected("monitoring")
    assert ingress(rendered["example"]) == expected("monitoring")
    (deny,) = [d for d in by_kind(rendered["daemonset"], "NetworkPolicy") if d["spec"]["podSelector"] == {}]
    assert deny["spec"]["policyTypes"] == ["Ingress"] and "ingress" not in deny["spec"]
    cluster = make_cluster(tmp_path, monitoring_namespace="observability")
    assert ingress(kustomize(cluster, "--load-restrictor", "LoadRestrictionsNone")) == expected("observability")


def test_pvc_way_for_restricted_namespaces(rendered) -> None:
    (pv,) = by_kind(rendered["pvc"], "PersistentVolume")
    (pvc,) = by_kind(rendered["pvc"], "PersistentVolumeClaim")
    assert pv["spec"]["accessModes"] == ["ReadOnlyMany"]
    assert pvc["metadata"]["namespace"] == "team-a" and pvc["spec"]["volumeName"] == pv["metadata"]["name"]
    assert pv["metadata"]["name"] == "hf-cache-team-a"
    assert pv["spec"]["hostPath"]["path"] == NODE_TIER  # the node tier, with the DaemonSet's mountpoint below it


def test_pvc_way_refuses_pods_that_mount_the_claim_writable(rendered) -> None:
    (policy,) = by_kind(rendered["pvc"], "ValidatingAdmissionPolicy")
    (binding,) = by_kind(rendered["pvc"], "ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["policyName"] == policy["metadata"]["name"] and binding["spec"]["validationActions"] == [
        "Deny"
    ]
    (rule,) = policy["spec"]["matchConstraints"]["resourceRules"]
    assert rule["resources"] == ["pods"] and set(rule["operations"]) == {"CREATE", "UPDATE"}
    (check,) = policy["spec"]["validations"]
    assert "persistentVolumeClaim.readOnly" in check["expression"] and "startsWith('hf-cache')" in check["expression"]
    assert policy["spec"]["failurePolicy"] == "Fail"


def test_service_accounts_match_what_terraform_trusts(rendered) -> None:
    variables = (ROOT / "terraform" / "modules" / "cluster" / "variables.tf").read_text()

    def default(var: str) -> str:
        m = re.search(r'variable\s+"' + var + r'"\s*{[^}]*?default\s*=\s*"([^"]+)"', variables, re.S)
        assert m, f"terraform variable {var} has no default"
        return m.group(1)

    sas = {(d["metadata"]["namespace"], d["metadata"]["name"]) for d in by_kind(rendered["example"], "ServiceAccount")}
    assert sas == {
        (default("namespace"), default("mount_service_account")),
        (default("namespace"), default("refresh_service_account")),
    }
    (ds,) = by_kind(rendered["example"], "DaemonSet")
    (cj,) = by_kind(rendered["example"], "CronJob")
    assert ds["spec"]["template"]["spec"]["serviceAccountName"] == default("mount_service_account")
    assert cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["serviceAccountName"] == default(
        "refresh_service_account"
    )


def images(docs: list[dict]) -> set[str]:
    (ds,) = by_kind(docs, "DaemonSet")
    (cj,) = by_kind(docs, "CronJob")
    pods = (ds["spec"]["template"]["spec"], cj["spec"]["jobTemplate"]["spec"]["template"]["spec"])
    return {c["image"] for pod in pods for c in pod["containers"]}


@pytest.mark.parametrize(
    "image",
    [
        "myimage",
        "myimage:1.2",
        "registry.local:5000/team/hf-cache:0.2.0-rc1",
        "registry.local:5000/team/hf-cache@sha256:" + "a" * 64,
    ],
)
def test_render_takes_the_image_as_given(tmp_path: Path, image: str) -> None:
    cluster = make_cluster(tmp_path, image=image)
    assert images(kustomize(cluster, "--load-restrictor", "LoadRestrictionsNone")) == {image}


@pytest.mark.parametrize(
    ("values", "tf", "named"),
    [
        ({"cache_max_size": "75 percent"}, {}, "cache_max_size"),
        ({"cache_max_size": "75"}, {}, "no unit"),
        ({"cache_max_size": "150%"}, {}, "cache_max_size"),
        ({"refresh_schedule": "every 6 hours"}, {}, "refresh_schedule"),
        ({"refresh_schedule": "61 */6 * * *"}, {}, "minute '61'"),
        ({"refresh_schedule": "0 0 * * MON-FOO"}, {}, "day of week"),
        ({"image": "My Image:latest"}, {}, "image"),
        ({"node_selector": {"gpu type": "a100"}}, {}, "node_selector"),
        ({"node_selector": ["a"]}, {}, "node_selector"),
        ({"monitoring_namespace": "Monitoring"}, {}, "monitoring_namespace"),
        ({"cache_host_path": "cache"}, {}, "cache_host_path"),
        ({"cache_host_path": "/var/lib"}, {}, "cache_host_path"),
        ({"unknown_key": 1}, {}, "unknown keys unknown_key"),
        ({}, {"prefix": "clusters/*"}, "prefix"),
        ({}, {"bucket": "Acme_Models"}, "bucket"),
        ({}, {"region": "useast1"}, "region"),
        ({}, {"mount_role_arn": "hf-cache-mount"}, "mount_role_arn"),
    ],
)
def test_render_refuses_a_bad_value_in_one_line(tmp_path: Path, values: dict, tf: dict, named: str) -> None:
    """Values that would only fail on the node (or at apply) are refused by render, naming the key."""
    cluster = make_cluster(tmp_path)
    committed = (cluster / "kustomization.yaml").read_text()
    data = json.loads((cluster / "values.json").read_text())
    (cluster / "values.json").write_text(json.dumps({**data, **values}))
    outputs = json.loads((cluster / "terraform-output.json").read_text())
    outputs.update({k: {"value": v} for k, v in tf.items()})
    (cluster / "terraform-output.json").write_text(json.dumps(outputs))
    result = render_cluster(cluster)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hf-cache: error: "), result.stderr
    assert named in lines[0] and "Traceback" not in result.stderr
    assert (cluster / "kustomization.yaml").read_text() == committed  # nothing written


@pytest.mark.parametrize(
    "schedule", ["17 */6 * * *", "0 0 1,15 * *", "*/5 9-17 * JAN-MAR mon-fri", "@daily", "0 3 ? * 0"]
)
def test_render_accepts_what_a_cronjob_accepts(schedule: str) -> None:
    from hf_cache.deploy.values import check_cron

    assert check_cron(schedule, "values.json") == schedule


def test_mount_runs_with_a_read_only_root_filesystem(s3_server, bucket: str, s3_env: dict, tmp_path: Path) -> None:
    """The DaemonSet sets readOnlyRootFilesystem: the supervisor, rclone and fusermount3 write only to the mount
    parent and cache dir (hostPath volumes there). Run here in a private mount namespace whose / is read-only and
    where only tmp_path (standing in for those volumes) is writable: the mount must become ready and serve a file."""
    import signal
    import sys
    import time
    import urllib.request

    from hf_cache.lab.net import free_port

    require_tool("unshare")
    require_tool("fusermount3")
    s3_server.client().put_object(Bucket=bucket, Key="hub/hello.txt", Body=b"read through a read-only root")
    port, rc_port = free_port(), free_port()
    mountpoint = tmp_path / "node" / "mnt"
    (tmp_path / "node").mkdir()
    mount = [sys.executable, "-m", "hf_cache", "mount", "--bucket", bucket, "--mountpoint", str(mountpoint)]
    mount += ["--cache-dir", str(tmp_path / "cache"), "--health-addr", "127.0.0.1", "--health-port", str(port)]
    mount += ["--rc-port", str(rc_port)]
    script = (
        f"mount --bind {tmp_path} {tmp_path} && mount -o remount,bind,ro / && "
        "if touch /.hf-cache-ro-probe 2>/dev/null; then echo 'root still writable' >&2; exit 3; fi && "
        f"exec {' '.join(mount)}"
    )
    log = (tmp_path / "mount.log").open("wb")
    proc = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "bash", "-c", script],
        env={**os.environ, **s3_env},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline, ready = time.monotonic() + 60, False
        while time.monotonic() < deadline and proc.poll() is None and not ready:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=3) as resp:
                    ready = resp.status == 200
            except OSError:
                time.sleep(0.3)
        assert ready, (tmp_path / "mount.log").read_text()[-3000:]
        # The mount lives in that namespace only; /proc/PID/root looks through the supervisor's view of it.
        seen = Path(f"/proc/{proc.pid}/root") / str(mountpoint).lstrip("/") / "hub" / "hello.txt"
        assert seen.read_bytes() == b"read through a read-only root"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
    assert proc.returncode == 0, (tmp_path / "mount.log").read_text()[-3000:]
