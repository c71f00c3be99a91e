"""``hf-cache render CLUSTER_DIR``: write a cluster's kustomize overlay from its values and Terraform outputs.

A cluster folder holds ``values.json`` (cache size, node selection, image, schedule) and the JSON of
``terraform output -json`` for that cluster; the overlay this writes (``kustomization.yaml`` beside them) sets the
bucket/prefix/region ConfigMap, the two IRSA role annotations, the cache settings and node selection on top of the
repo-root kustomization, so ``kubectl apply -k CLUSTER_DIR`` deploys everything.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from hf_cache import settings
from hf_cache.deploy.values import (
    check_cron,
    check_host_path,
    check_image,
    check_namespace,
    check_node_selector,
    check_size,
    check_terraform_outputs,
)
from hf_cache.errors import ConfigError

DEPLOY_HINT = "kubectl kustomize --load-restrictor LoadRestrictionsNone CLUSTER_DIR | kubectl apply -f -"
TF_OUTPUTS = ("bucket", "prefix", "region", "mount_role_arn", "refresh_role_arn")
VALUE_KEYS = {
    "cache_max_size",
    "cache_host_path",
    "node_selector",
    "image",
    "refresh_schedule",
    "monitoring_namespace",
    "terraform_output",
}
DEFAULT_IMAGE = "ghcr.io/hf-cache/hf-cache:0.1.0"


def _load_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: missing {what}") from exc
    except ValueError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return data


def terraform_values(outputs: dict[str, Any], path: Path) -> dict[str, str]:
    """The five outputs the overlay needs, from ``terraform output -json`` (``{"name": {"value": ...}}``)."""
    missing = [k for k in TF_OUTPUTS if k not in outputs]
    if missing:
        raise ConfigError(
            f"{path}: terraform outputs {', '.join(missing)} missing; run `terraform output -json > {path}`"
        )
    values = {k: str(outputs[k]["value"] if isinstance(outputs[k], dict) else outputs[k]) for k in TF_OUTPUTS}
    return check_terraform_outputs(values, str(path))


def render_overlay(cluster_dir: Path, root: Path) -> str:
    where = str(cluster_dir / "values.json")
    values = _load_json(cluster_dir / "values.json", "values.json (see clusters/example)")
    unknown = set(values) - VALUE_KEYS
    if unknown:
        raise ConfigError(
            f"{where}: unknown keys {', '.join(sorted(unknown))}; the keys are {', '.join(sorted(VALUE_KEYS))}"
        )
    tf_name = values.get("terraform_output", "terraform-output.json")
    if not isinstance(tf_name, str) or "/" in tf_name or tf_name in ("", ".", ".."):
        raise ConfigError(f"{where}: terraform_output {tf_name!r}: name a file beside values.json")
    tf_path = cluster_dir / tf_name
    tf = terraform_values(_load_json(tf_path, "terraform output"), tf_path)
    image = check_image(values.get("image", DEFAULT_IMAGE), where)
    cache_max_size = check_size(values.get("cache_max_size", settings.CACHE_MAX_SIZE), where)
    cache_host_path = check_host_path(values.get("cache_host_path", settings.CACHE_DIR), where, "cache_host_path")
    schedule = check_cron(values.get("refresh_schedule", "17 */6 * * *"), where)
    monitoring = check_namespace(values.get("monitoring_namespace", "monitoring"), where, "monitoring_namespace")
    node_selector = check_node_selector(values.get("node_selector"), where)
    rel = os.path.relpath(root, cluster_dir)
    ds_patch = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "hf-cache-mount", "namespace": "hf-cache"},
        "spec": {
            "template": {
                "spec": {
                    **({"nodeSelector": node_selector} if node_selector else {}),
                    "containers": [
                        {
                            "name": "mount",
                            "image": image,
                            "env": [{"name": "HFCACHE_CACHE_MAX_SIZE", "value": cache_max_size}],
                        }
                    ],
                    "volumes": [
                        {
                            "name": "cache",
                            "hostPath": {
                                "path": cache_host_path,
                                "type": "DirectoryOrCreate",
                            },
                        }
                    ],
                }
            }
        },
    }
    cron_patch = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "hf-cache-refresh", "namespace": "hf-cache"},
        "spec": {
            "schedule": schedule,
            "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "refresh", "image": image}]}}}},
        },
    }
    # Prometheus in the monitoring namespace is the only client of the metrics port (kubelet probes come from the
    # node, which NetworkPolicy always admits).
    netpol_patch = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "hf-cache-mount-metrics", "namespace": "hf-cache"},
        "spec": {
            "ingress": [
                {
                    "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": monitoring}}}],
                    "ports": [{"port": settings.HEALTH_PORT, "protocol": "TCP"}],
                }
            ]
        },
    }

    def sa_patch(sa: str, arn: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": sa, "namespace": "hf-cache", "annotations": {"eks.amazonaws.com/role-arn": arn}},
        }

    overlay = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": "hf-cache",
        "resources": [f"{rel}/daemonset", f"{rel}/cronjob"],
        "configMapGenerator": [
            {
                "name": "hf-cache-config",
                "literals": [
                    f"HFCACHE_BUCKET={tf['bucket']}",
                    f"HFCACHE_PREFIX={tf['prefix']}",
                    f"AWS_REGION={tf['region']}",
                ],
            },
            # models.txt at the repo root stays the one source: editing it and re-applying rolls the ConfigMap.
            {"name": "hf-cache-models", "files": [f"models.txt={rel}/models.txt"]},
        ],
        "patches": [
            {"patch": json.dumps(p)}
            for p in (
                sa_patch("hf-cache-mount", tf["mount_role_arn"]),
                sa_patch("hf-cache-refresh", tf["refresh_role_arn"]),
                ds_patch,
                cron_patch,
                netpol_patch,
            )
        ],
    }
    header = (
        f"# Rendered by `hf-cache render {os.path.relpath(cluster_dir, root)}` from values.json and"
        f" {tf_path.name}: do not edit,\n# change those and render again. Deploy: {DEPLOY_HINT}\n"
    )
    return header + json.dumps(overlay, indent=2) + "\n"  # JSON is YAML: kustomize reads it as is


@click.command()
@click.argument("cluster_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The repo root holding kustomization.yaml (default: two folders above CLUSTER_DIR).",
)
def render(cluster_dir: Path, root: Path | None) -> None:
    """Write CLUSTER_DIR/kustomization.yaml from CLUSTER_DIR/values.json and its Terraform outputs.

    The overlay generates the models ConfigMap from the repo root's models.txt (the one source). kustomize's
    default load restrictor refuses files outside an overlay's folder, and a root-level kustomization cannot be
    a base of an overlay below it (kustomize sees a cycle), so the documented deploy lifts the restrictor.
    """
    root = (root or cluster_dir.resolve().parent.parent).resolve()
    if not (root / "models.txt").is_file() or not (root / "daemonset").is_dir():
        raise ConfigError(f"{root} is not the hf-cache repo root (no models.txt / daemonset/); pass --root")
    text = render_overlay(cluster_dir.resolve(), root)
    out = cluster_dir / "kustomization.yaml"
    out.write_text(text)
    click.echo(f"wrote {out}; deploy with: {DEPLOY_HINT.replace('CLUSTER_DIR', str(cluster_dir))}")
