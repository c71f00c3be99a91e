"""The lab: real servers on 127.0.0.1 that the demo, the tests and the benchmarks share.

Loopback S3 (moto or ``rclone serve s3``: ``s3server``), an S3-like link with per-connection bandwidth, latency and
faults (``s3link``; ``python3 -m hf_cache.lab.s3link --upstream URL`` runs it alone), a proxy that refuses chosen S3
requests (``faultproxy``), a Hub-compatible server (``hubserver``), the real ``hf-cache mount`` run as a child
(``mounting``), a /metrics reader (``metrics``), free ports and readiness waits (``net``).

Not used by the product. Nothing heavy is imported here: moto and transformers load only when a server or a model
that needs them is started, so ``hf-cache --help`` does not pay for the lab.
"""
