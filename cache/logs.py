"""Logging set-up, with secrets kept out of every line.

Tokens and keys reach us through the environment (``HF_TOKEN``, AWS keys); a redacting filter on the root
handler replaces their values, and anything shaped like a Hugging Face token, wherever a message came from
(our code, boto3, huggingface_hub, an exception text).
"""

from __future__ import annotations

import logging
import os
import re
import sys
from urllib.parse import unquote, urlsplit

SECRET_ENV_VARS = (
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "RCLONE_CONFIG_S3_SECRET_ACCESS_KEY",
    "RCLONE_CONFIG_S3_SESSION_TOKEN",
)
URL_ENV_VARS = ("HF_ENDPOINT", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")
_TOKEN_RE = re.compile(r"\bhf_[A-Za-z0-9]{8,}\b")
_BEARER_RE = re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?(?:bearer|basic)\s+)[^\s'\"]+")
# scheme://user:password@host: userinfo of any URL, wherever it appears in a message.
_USERINFO_RE = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@'\"<>]*@")
MASK = "***"


def redact_url(url: str) -> str:
    """``url`` without its userinfo: what is recorded (manifests, status.json) or printed about an endpoint.

    ``HF_ENDPOINT=http://user:pass@mirror`` is a valid way to reach a mirror, and every job pod can read what refresh
    records, so the credentials part of a URL never leaves the process.
    """
    return _USERINFO_RE.sub(r"\1", url)


def _url_passwords() -> tuple[str, ...]:
    """Passwords inside endpoint URLs of the environment: they may also show up on their own (a server echoing them)."""
    out = []
    for name in URL_ENV_VARS:
        try:
            password = urlsplit(os.environ.get(name, "")).password
        except ValueError:
            continue
        if password:
            out.append(unquote(password))
            out.append(password)
    return tuple(out)


def redact(text: str, extra_secrets: tuple[str, ...] = ()) -> str:
    """Remove secret values from ``text``: the ones in the environment, ``extra_secrets``, token shapes and the
    userinfo of URLs (one function, so a new place that records or prints text cannot forget one kind)."""
    for value in (*(os.environ.get(name, "") for name in SECRET_ENV_VARS), *_url_passwords(), *extra_secrets):
        if value and len(value) >= 4:
            text = text.replace(value, MASK)
    text = _TOKEN_RE.sub(MASK, text)
    text = redact_url(text)
    return _BEARER_RE.sub(lambda m: m.group(1) + MASK, text)


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info:
            # Render the traceback now so that it is redacted too, then drop the raw exception.
            message += "\n" + logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
            record.exc_text = None
        record.msg = redact(message)
        record.args = None
        return True


def setup_logging(verbose: bool = False) -> None:
    """One stderr handler for the whole process; idempotent so tests can call the CLI many times."""
    root = logging.getLogger()
    level = logging.DEBUG if verbose else logging.INFO
    for handler in root.handlers:
        if getattr(handler, "_hf_cache", False):
            root.setLevel(level)
            return
    handler = logging.StreamHandler(sys.stderr)
    handler._hf_cache = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer", "httpx", "httpcore", "httpx2", "httpcore2", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
