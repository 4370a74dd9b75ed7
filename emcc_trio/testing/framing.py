"""Requests whose framing is ambiguous (RFC 9112 section 6), each with a request hidden where
one framer sees a body and another a request of its own; tests/ and the cluster run send them
to a server directly and through HAProxy."""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping

CHUNKED_END = b"0\r\n\r\n"


def head(method: str, path: str, *fields: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: test", *fields, "", ""]
    return "\r\n".join(lines).encode()


def ambiguous_requests(hidden: bytes) -> Mapping[str, bytes]:
    """By name: a POST whose framing is ambiguous, with `hidden` (a whole request) after it."""
    smuggled = CHUNKED_END + hidden
    return {
        # A Content-Length framer reads one request, a chunked framer two.
        "content-length and chunked": head(
            "POST", "/compile", f"Content-Length: {len(smuggled)}", "Transfer-Encoding: chunked"
        )
        + smuggled,
        "chunked and content-length": head(
            "POST", "/compile", "Transfer-Encoding: chunked", "Content-Length: 0"
        )
        + smuggled,
        "content-length twice": head("POST", "/compile", "Content-Length: 2", "Content-Length: 2")
        + b"{}"
        + hidden,
        "content-length as a list": head("POST", "/compile", "Content-Length: 2, 2")
        + b"{}"
        + hidden,
        "conflicting content-lengths": head(
            "POST", "/compile", "Content-Length: 2", "Content-Length: 40"
        )
        + b"{}"
        + hidden,
    }


def exchange(address: tuple[str, int], raw: bytes, timeout: float = 60.0) -> bytes:
    """Send `raw` on a new connection and read until the other end closes it."""
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(raw)
        received = b""
        while data := sock.recv(65536):
            received += data
    return received


def statuses(received: bytes) -> list[bytes]:
    """The status of every answer in `received` (a body may run into the next status line)."""
    return re.findall(rb"HTTP/1\.[01] (\d{3}) ", received)
