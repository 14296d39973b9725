"""Secrets never leave in text: every configured key is cut out of upstream text.

Upstreams are untrusted input: one that echoes its own key in an error body or a mid-stream
error would otherwise show ``Bearer sk-…`` to the client and write it to the log. The gateway
registers what it knows to be secret (the master key, and the environment variables that hold
provider keys, read at scrub time so rotated keys are covered), and ``scrub`` replaces each
occurrence with ``[redacted]``. ``UpstreamError`` scrubs its message and detail when it is
built, so every path to a client or a log line is covered at the source.

Only values of 8 characters or more are scrubbed (shorter ones would match ordinary words).
"""

from __future__ import annotations

import os
import threading
from urllib.parse import parse_qsl, urlencode, urlsplit

__all__ = ["REDACTED", "redact_url", "register_env", "register_value", "scrub"]

REDACTED = "[redacted]"
_MIN_CHARS = 8

_lock = threading.Lock()
_env_names: set[str] = set()
_values: set[str] = set()


def register_env(*names: str) -> None:
    """Environment variables whose values are secret (provider API keys)."""
    with _lock:
        _env_names.update(names)


def register_value(value: str | None) -> None:
    """A secret value known at start-up (the master key)."""
    if value and len(value) >= _MIN_CHARS:
        with _lock:
            _values.add(value)


def scrub(text: str) -> str:
    """``text`` with every registered secret replaced by ``[redacted]``."""
    secrets = set(_values)
    for name in tuple(_env_names):
        value = os.environ.get(name)
        if value and len(value) >= _MIN_CHARS:
            secrets.add(value)
    for secret in sorted(secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (``redis://user:***@host:6379/0``), in the
    user info and in a ``password=`` query parameter; otherwise unchanged."""
    parts = urlsplit(url)
    userinfo, at, _ = parts.netloc.rpartition("@")
    if at and ":" in userinfo:
        url = url.replace(f"{userinfo}@", f"{userinfo.partition(':')[0]}:***@", 1)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    if any(name == "password" for name, _ in pairs):
        query = urlencode([(n, "***" if n == "password" else v) for n, v in pairs], safe="*")
        url = url.replace(f"?{parts.query}", f"?{query}", 1)
    return url
