# hf-cache developer tasks. `just --list` shows them all.
set shell := ["bash", "-euo", "pipefail", "-c"]

python := env_var_or_default("PYTHON", "python3")

# Install everything a fresh machine lacks (fuse3, the package with test extras).
setup:
    bash scripts/setup.sh

# The whole test suite (what CI runs).
test *ARGS:
    {{python}} -m pytest {{ARGS}}

# ruff lint and format check, terraform fmt.
lint:
    ruff check .
    ruff format --check .
    {{python}} scripts/typecheck.py
    terraform fmt -check -recursive terraform

# Run the whole pipeline locally: loopback S3, publish a tiny model, mount it, load it with transformers.
demo *ARGS:
    hf-cache demo {{ARGS}}

# Every benchmark, one after the other.
bench: bench-refresh bench-mount bench-load bench-cold bench-tier

# hf-cache refresh vs rclone copy to the same loopback S3.
bench-refresh *ARGS:
    {{python}} -m benchmarks.refresh {{ARGS}}

# Reads through the mount (cold/warm) vs boto3 and local disk.
bench-mount *ARGS:
    {{python}} -m benchmarks.mount {{ARGS}}

# from_pretrained through the mount (cold/warm) vs a local folder.
bench-load *ARGS:
    {{python}} -m benchmarks.load {{ARGS}}

# The cold path over an S3-like link (90 MB/s per connection, +30 ms per request): mount vs boto3, every pattern.
bench-cold *ARGS:
    {{python}} -m benchmarks.cold {{ARGS}}

# Warm reads through HF_HOME at the node tier (hf-cache mount --tier-dir) vs local files: read() and from_pretrained.
bench-tier *ARGS:
    {{python}} -m benchmarks.tier {{ARGS}}

# Render a cluster's overlay from its values and Terraform outputs: `just render example`.
render CLUSTER:
    hf-cache render clusters/{{CLUSTER}}

# Print a cluster's manifests (what `just deploy` applies).
manifests CLUSTER:
    kubectl kustomize --load-restrictor LoadRestrictionsNone clusters/{{CLUSTER}}

# Apply a cluster's manifests with the current kubectl context.
deploy CLUSTER:
    kubectl kustomize --load-restrictor LoadRestrictionsNone clusters/{{CLUSTER}} | kubectl apply -f -
