"""Logging set-up, with secrets kept out of every line.

Tokens and keys reach us through the environment (``HF_TOKEN``, AWS keys); a redacting filter on the root
handler replaces their values, and anything shaped like a Hugging Face token, wherever a message came from
(our code, boto3, huggingface_hub, an exception text).
"""

from __future__ import annotations

import importlib
import json
import logging
import re
import sys
from collections.abc import Callable
from typing import TextIO
from urllib.parse import unquote, urlsplit

from hf_cache.settings import SECRET_ENV_VARS, URL_ENV_VARS, env

_TOKEN_RE = re.compile(r"\bhf_[A-Za-z0-9]{8,}\b")
# A presigned URL's credentials (the mount's S3 endpoint sends rclone to S3 with one; rclone's errors quote URLs).
_PRESIGNED_RE = re.compile(r"(?i)(X-Amz-(?:Signature|Security-Token|Credential)=)[^&\s'\"<>]+")
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
            password = urlsplit(env(name) or "").password
        except ValueError:
            continue
        if password:
            out.append(unquote(password))
            out.append(password)
    return tuple(out)


def redact(text: str, extra_secrets: tuple[str, ...] = ()) -> str:
    """Remove secret values from ``text``: the ones in the environment, ``extra_secrets``, token shapes and the
    userinfo of URLs (one function, so a new place that records or prints text cannot forget one kind)."""
    for value in (*(env(name) or "" for name in SECRET_ENV_VARS), *_url_passwords(), *extra_secrets):
        if value and len(value) >= 4:
            text = text.replace(value, MASK)
    text = _TOKEN_RE.sub(MASK, text)
    text = _PRESIGNED_RE.sub(lambda m: m.group(1) + MASK, text)
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


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for pod log pipelines (Loki, Fluent Bit, CloudWatch): time, level, logger, message.

    The message is redacted before it gets here (RedactingFilter), so the JSON carries no secrets either.
    """

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {
                "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
                "level": record.levelname.lower(),
                "logger": record.name,
                "message": record.getMessage(),
            }
        )


LOG_FORMATS = ("text", "json")
_bar_writer: Callable[[str], None] | None = None
_quiet = False


def quiet() -> bool:
    """``-q`` was given: no progress bar either."""
    return _quiet


def set_bar_writer(writer: Callable[[str], None] | None) -> None:
    """While a progress bar is drawn, log lines go through ``writer`` (above the bar) instead of into it."""
    global _bar_writer
    _bar_writer = writer


class _Handler(logging.StreamHandler[TextIO]):
    _hf_cache = True  # how setup() finds the handler it installed, also one made by an earlier import of this module

    def emit(self, record: logging.LogRecord) -> None:
        writer = _bar_writer
        if writer is None:
            super().emit(record)
            return
        try:
            writer(self.format(record))
        except Exception:
            self.handleError(record)


_TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _RetryNotice(logging.Filter):
    """botocore says it is retrying only at DEBUG: let exactly that line through, as a warning an operator sees
    while S3 is slow to answer (instead of silence until the last retry gives up)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("Retry needed, retrying"):
            return False
        first = record.args[0] if isinstance(record.args, tuple) and record.args else None
        try:
            delay = f"{float(first):.1f}" if isinstance(first, int | float | str) else "a moment, "
        except ValueError:
            delay = "a moment, "
        record.msg, record.args = f"S3 did not answer or asked to slow down: retrying in {delay}s", None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def _silence_library_handler(library: str) -> None:
    """huggingface_hub adds its own stderr handler on import: its lines (retries, with URLs) would print a second
    time, unredacted and never as JSON. Import its logging set-up now (cheap) and drop that handler, so every line
    goes through ours."""
    try:
        importlib.import_module(f"{library}.utils.logging")
    except ImportError:
        return
    logger = logging.getLogger(library)
    for h in list(logger.handlers):
        if not getattr(h, "_hf_cache", False):
            logger.removeHandler(h)


def setup_logging(verbose: bool = False, *, quiet: bool = False, fmt: str | None = None) -> None:
    """One stderr handler for the whole process; idempotent (each call may change level and format), so ``-v``
    after a subcommand and tests calling the CLI many times both work. ``fmt`` None keeps the current format."""
    global _quiet
    root = logging.getLogger()
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    _quiet = quiet
    handler = next((h for h in root.handlers if getattr(h, "_hf_cache", False)), None)
    if handler is None:
        handler = _Handler(sys.stderr)
        handler.addFilter(RedactingFilter())
        handler.setFormatter(logging.Formatter(_TEXT))
        root.addHandler(handler)
        retries = logging.getLogger("botocore.retries.standard")
        retries.setLevel(logging.DEBUG)
        retries.addFilter(_RetryNotice())
    _silence_library_handler("huggingface_hub")
    if fmt is not None:
        handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(_TEXT))
    root.setLevel(level)
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer", "httpx", "httpcore", "httpx2", "httpcore2", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def set_log_format(fmt: str) -> None:
    """Switch the format of our handler, keeping the level (``--log-format`` may come after ``-v``)."""
    root = logging.getLogger()
    level = root.level
    setup_logging(quiet=_quiet, fmt=fmt)
    root.setLevel(level)
