"""Test-only glue. The servers the tests start (S3, the link, the Hub, the mount) live in hf_cache.lab."""
