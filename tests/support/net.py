"""Small helpers for loopback servers the tests start (the package's own, which `hf-cache demo` uses too)."""

from hf_cache.readers.loopback import free_port, wait_http

__all__ = ["free_port", "wait_http"]
