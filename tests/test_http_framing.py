"""Ambiguous request framing (RFC 9112 section 6) is refused, at the socket: a request with
both Content-Length and Transfer-Encoding, or with Content-Length twice, gets a 400 and the
connection is closed, so a request hidden in its body (request smuggling, behind a balancer
that frames by Content-Length) is never answered. Plain and chunked requests still work, also
pipelined."""

from __future__ import annotations

import json

import pytest

from emcc_trio.api.httpserver import framing_problem
from emcc_trio.testing.framing import CHUNKED_END, ambiguous_requests, exchange, head, statuses
from emcc_trio.testing.harness import Server
from emcc_trio.testing.programs import HELLO_C

# Answered only if it is read as a request of its own.
HIDDEN = b"GET /readyz HTTP/1.1\r\nHost: test\r\n\r\n"
AMBIGUOUS = ambiguous_requests(HIDDEN)
COMPILE = json.dumps({"code": HELLO_C}).encode()


@pytest.mark.parametrize("name", sorted(AMBIGUOUS))
def test_ambiguous_framing_is_a_400_and_the_connection_closes(server: Server, name: str) -> None:
    received = exchange(server.address, AMBIGUOUS[name])
    assert statuses(received) == [b"400"], received
    assert b"\r\nconnection: close\r\n" in received.lower()
    # The app never saw the request: nothing reached the access log.
    assert not [e for e in server.log_events() if e.get("event") == "request"]


def test_plain_and_chunked_requests_are_framed_and_pipelined(server: Server) -> None:
    """The control: a Content-Length request and a chunked one, each with a pipelined request
    behind it, are both answered, and the connection stays open until the last one."""
    chunked = f"{len(COMPILE):x}\r\n".encode() + COMPILE + b"\r\n" + CHUNKED_END
    raw = (
        head(
            "POST", "/compile", f"Content-Length: {len(COMPILE)}", "Content-Type: application/json"
        )
        + COMPILE
        + head("POST", "/compile", "Transfer-Encoding: chunked", "Content-Type: application/json")
        + chunked
        + head("GET", "/healthz", "Connection: close")
    )
    received = exchange(server.address, raw)
    assert statuses(received) == [b"200", b"200", b"200"], received
    assert received.endswith(b"\r\n\r\nok")


@pytest.mark.unit
def test_framing_problems_are_read_from_the_raw_header_lines() -> None:
    assert framing_problem([b"Content-Length: 5"]) is None
    assert framing_problem([b"Transfer-Encoding: chunked"]) is None
    assert framing_problem([b"content-length: 5", b"TRANSFER-ENCODING: chunked"]) == (
        "both Content-Length and Transfer-Encoding"
    )
    assert framing_problem([b"Content-Length: 5", b"X-A: b", b"Content-Length: 5"]) == (
        "more than one Content-Length"
    )
    assert framing_problem([b"Content-Length: 5,5"]) == "more than one Content-Length"
    # A folded continuation line is part of the field above it, not a field.
    assert framing_problem([b"X-Note: a", b" Content-Length: 5", b"Content-Length: 5"]) is None
