"""``hf-cache inject``: add the node's hf-cache mount and the ``hf-cache env`` environment to labelled workloads.

Helm charts (vLLM, KServe, most GPU serving charts) cannot include a kustomize component, so the same wiring is
offered as a filter: manifests on stdin, the same manifests on stdout, with every workload labelled
``hf-cache.io/mount: "true"`` given the read-only mount and the reader environment. It works as a Helm 3
``--post-renderer`` and in any kustomize/CI pipe. It does what ``daemonset/job-pod`` does (a test renders both and
compares the pod specs): entries are matched by name and appended when absent, replaced when they are hf-cache's own,
so nothing a workload declares is dropped and a second run changes nothing. Where kustomize would silently replace a
workload's own setting (an ``HF_HOME`` of its own, another volume at the mountpoint), inject refuses with one line.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import click

from hf_cache import settings
from hf_cache.errors import ConfigError
from hf_cache.readers.envvars import DEFAULT_MOUNTPOINT, reader_env

LABEL = "hf-cache.io/mount"
CONTAINERS_ANNOTATION = "hf-cache.io/containers"
VOLUME = "hf-cache"
# The node folder the DaemonSet mounts the bucket on (HFCACHE_MOUNTPOINT in daemonset/daemonset.yaml).
NODE_PATH = settings.NODE_MOUNTPOINT
# The node tier (HFCACHE_TIER_DIR): a standard HF cache whose relative symlinks point at local blobs or into
# NODE_PATH below it. Job pods mount this folder, so both kinds of link resolve inside the pod (docs/node-tier.md).
NODE_TIER = settings.NODE_ROOT
# kind -> path of the pod spec inside it
POD_SPEC_PATHS: dict[str, tuple[str, ...]] = {
    "Pod": ("spec",),
    "Job": ("spec", "template", "spec"),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}


def wiring() -> dict[str, Any]:
    """What a job pod gets: one hostPath volume, its read-only mount and the reader environment.

    HostToContainer propagation lets a mount the DaemonSet repairs (at ``<tier>/mnt``) show through without
    restarting the pod; hot files are plain local files and need no mount at all.
    """
    return {
        "volume": {"name": VOLUME, "hostPath": {"path": NODE_TIER, "type": "Directory"}},
        "volumeMount": {
            "name": VOLUME,
            "mountPath": DEFAULT_MOUNTPOINT,
            "readOnly": True,
            "mountPropagation": "HostToContainer",
        },
        "env": [{"name": k, "value": v} for k, v in reader_env().items()],
    }


def component_replacements() -> list[dict[str, Any]]:
    """The kustomize replacements of ``daemonset/job-pod``: the same wiring, appended by name.

    A replacement with ``create: true`` into ``list.[name=X]`` appends the element when the list lacks it and
    creates the list when there is none, which JSON-patch ``add`` cannot do without replacing the list.
    """
    source = {"kind": "HfCacheJobPod", "name": "hf-cache-job-pod"}

    def targets(field: str) -> list[dict[str, Any]]:
        return [
            {
                "select": {"kind": kind, "labelSelector": f"{LABEL}=true"},
                "fieldPaths": [".".join((*path, field))],
                "options": {"create": True},
            }
            for kind, path in POD_SPEC_PATHS.items()
        ]

    out: list[dict[str, Any]] = [
        {"source": {**source, "fieldPath": "volume"}, "targets": targets(f"volumes.[name={VOLUME}]")},
        {
            "source": {**source, "fieldPath": "volumeMount"},
            "targets": targets(f"containers.*.volumeMounts.[name={VOLUME}]"),
        },
    ]
    for name in reader_env():
        out.append(
            {
                "source": {**source, "fieldPath": f"env.[name={name}]"},
                "targets": targets(f"containers.*.env.[name={name}]"),
            }
        )
    return out


def _upsert(items: list[Any], entry: dict[str, Any], where: str, what: str) -> None:
    """Append ``entry`` by name, or replace the element of that name if it is already hf-cache's."""
    for i, item in enumerate(items):
        if isinstance(item, dict) and item.get("name") == entry["name"]:
            if item != entry:
                raise ConfigError(
                    f"{where}: already has {what} {entry['name']!r} of its own ({item}); hf-cache would replace it:"
                    f" remove it from the workload, or drop the {LABEL} label and wire the pod by hand"
                )
            items[i] = entry
            return
    items.append(entry)


def _pod_spec(doc: dict[str, Any], where: str) -> dict[str, Any]:
    node: Any = doc
    for key in POD_SPEC_PATHS[doc["kind"]]:
        node = node.get(key) if isinstance(node, dict) else None
    if not isinstance(node, dict) or not isinstance(node.get("containers"), list) or not node["containers"]:
        raise ConfigError(f"{where}: has no pod spec with containers at {'.'.join(POD_SPEC_PATHS[doc['kind']])}")
    return node


def _chosen(doc: dict[str, Any], containers: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    names = (doc.get("metadata", {}).get("annotations") or {}).get(CONTAINERS_ANNOTATION)
    if names is None:
        return containers
    wanted = [n.strip() for n in str(names).split(",") if n.strip()]
    known = {c.get("name") for c in containers}
    unknown = [n for n in wanted if n not in known]
    if unknown or not wanted:
        raise ConfigError(
            f"{where}: annotation {CONTAINERS_ANNOTATION}={names!r} names no container"
            f" {', '.join(unknown) if unknown else ''} (containers: {', '.join(sorted(map(str, known)))})"
        )
    return [c for c in containers if c.get("name") in wanted]


def inject_doc(doc: dict[str, Any]) -> dict[str, Any]:
    """Wire one manifest in place if it carries the label; anything else passes through unchanged."""
    labels = (doc.get("metadata") or {}).get("labels") or {}
    if labels.get(LABEL) != "true":  # exactly what the component's labelSelector matches
        return doc
    where = f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"
    if doc.get("kind") not in POD_SPEC_PATHS:
        raise ConfigError(
            f"{where}: labelled {LABEL} but inject wires only {', '.join(POD_SPEC_PATHS)}; remove the label"
        )
    w = wiring()
    pod = _pod_spec(doc, where)
    if not isinstance(pod.setdefault("volumes", []), list):
        raise ConfigError(f"{where}: volumes is not a list")
    _upsert(pod["volumes"], w["volume"], where, "volume")
    for c in _chosen(
        doc,
        pod["containers"],
        f"{where}",
    ):
        here = f"{where} container {c.get('name')}"
        for key in ("volumeMounts", "env"):
            if not isinstance(c.setdefault(key, []), list):
                raise ConfigError(f"{here}: {key} is not a list")
        clash = [m for m in c["volumeMounts"] if m.get("mountPath") == DEFAULT_MOUNTPOINT and m.get("name") != VOLUME]
        if clash:
            raise ConfigError(f"{here}: volume {clash[0].get('name')!r} is already mounted at {DEFAULT_MOUNTPOINT}")
        _upsert(c["volumeMounts"], w["volumeMount"], here, "volumeMount")
        for entry in w["env"]:
            _upsert(c["env"], entry, here, "env var")
    return doc


def _documents(text: str) -> Iterator[Any]:
    import yaml

    try:
        yield from yaml.safe_load_all(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(
            f"stdin: not valid YAML{at} ({problem}); pass rendered manifests (helm template ...)"
        ) from exc


def inject_text(text: str) -> str:
    """The whole filter: multi-document YAML in, multi-document YAML out (``kind: List`` items wired too)."""
    import yaml

    out = []
    for i, doc in enumerate(_documents(text), start=1):
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise ConfigError(f"stdin: document {i} is not a Kubernetes object (a YAML mapping)")
        if doc.get("kind") == "List" and isinstance(doc.get("items"), list):
            doc["items"] = [inject_doc(item) if isinstance(item, dict) else item for item in doc["items"]]
        else:
            inject_doc(doc)
        out.append(doc)
    return yaml.safe_dump_all(out, sort_keys=False, default_flow_style=False, explicit_start=True)


@click.command()
def inject() -> None:
    """Add the hf-cache mount and `hf-cache env` to workloads labelled hf-cache.io/mount: "true".

    Reads manifests (multi-document YAML) on stdin and writes them to stdout. Every container of a labelled
    Job, Deployment, StatefulSet, DaemonSet, CronJob or Pod gets the read-only mount at /mnt/hf_cache and the
    environment, unless the annotation hf-cache.io/containers: "a,b" names the containers. Entries are appended,
    never replacing the workload's own; running it twice changes nothing. As a Helm 3 post-renderer:
    helm install NAME CHART --post-renderer hf-cache --post-renderer-args inject
    """
    sys.stdout.write(inject_text(sys.stdin.read()))
