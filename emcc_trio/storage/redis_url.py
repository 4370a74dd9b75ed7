"""Parsing `redisUrl`: the Sentinel form, and a redacted copy for logs.

Pure functions: `config` validates with them, `storage.redis` connects with them.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import urlsplit, urlunsplit

import attrs

SENTINEL_SCHEME: Final = "redis+sentinel"
REDIS_SCHEMES: Final = ("redis", "rediss", "unix", SENTINEL_SCHEME)
SENTINEL_PORT: Final = 26379
_SERVICE_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")


@attrs.frozen
class SentinelUrl:
    """`redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]`: the
    Sentinels to ask, the name of the primary they watch, and how to talk to that primary."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int
    username: str | None
    password: str | None


def parse_sentinel_url(url: str) -> SentinelUrl:
    """Raises ValueError naming what is wrong (the password never appears in it)."""
    parts = urlsplit(url)
    if parts.scheme != SENTINEL_SCHEME:
        raise ValueError(f"not a {SENTINEL_SCHEME}:// URL")
    sentinels = tuple(
        _sentinel_location(item) for item in parts.netloc.rpartition("@")[2].split(",")
    )
    service, _, db = parts.path.removeprefix("/").partition("/")
    if not _SERVICE_NAME.fullmatch(service):
        raise ValueError("needs the name of the primary the Sentinels watch: .../<service>[/<db>]")
    if db and not db.isdigit():
        raise ValueError(f"the database after the service name must be a number (got {db!r})")
    return SentinelUrl(sentinels, service, int(db or 0), parts.username or None, parts.password)


def _sentinel_location(item: str) -> tuple[str, int]:
    host, port = item, ""
    if item.startswith("["):
        host, _, rest = item[1:].partition("]")
        port = rest.removeprefix(":")
    elif ":" in item:
        host, _, port = item.rpartition(":")
    if not host:
        raise ValueError(f"a Sentinel without a host ({item!r})")
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"a Sentinel port must be 1-65535 (got {port!r})")
    return host, int(port or SENTINEL_PORT)


def redact_url(url: str) -> str:
    """`url` without its password, fit for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
