"""Who may compile and how much: API tokens (401), maxJobsPerClient (429), and which address
a request counts for (X-Forwarded-For only from trustedProxies)."""

from __future__ import annotations

import http.client
import json
import signal
import socket
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from test_lifecycle import wait_for_compiler

from emcc_trio.__main__ import main
from emcc_trio.api.clients import client_address, parse_networks
from emcc_trio.api.tokens import TokenFileError, bearer_token, digest_of, new_token, parse_tokens
from emcc_trio.testing.harness import MakeServer, Server, eventually
from emcc_trio.testing.programs import HELLO_C, spin


@pytest.mark.unit
def test_a_new_token_line_admits_that_token_only() -> None:
    token, line = new_token("alice")
    other, _ = new_token("bob")
    book = parse_tokens(f"# tokens\n\n{line}\n")
    assert token not in line  # the file holds a hash, never the token
    assert book.identify(token) == "alice"
    assert book.identify(other) is None
    assert book.identify("") is None


@pytest.mark.unit
def test_token_file_errors_name_the_line() -> None:
    digest = digest_of("x")
    with pytest.raises(TokenFileError, match="line 2: expected the SHA-256"):
        parse_tokens(f"{digest} a\nnot-a-digest b\n")
    with pytest.raises(TokenFileError, match="line 2: the name 'a' is used twice"):
        parse_tokens(f"{digest} a\n{digest_of('y')} a\n")
    with pytest.raises(TokenFileError, match="line 1: a name is"):
        parse_tokens(f"{digest} bad/name\n")
    assert parse_tokens(f"{digest}\n").identify("x") == f"token-{digest[:8]}"


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer  abc ", "abc"),
        ("Basic abc", None),
        ("Bearer", None),
        ("", None),
        (None, None),
    ],
)
@pytest.mark.unit
def test_bearer_token(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


@pytest.mark.unit
def test_token_new_command_prints_a_token_and_its_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "new", "ci-runner"]) == 0
    token, line = capsys.readouterr().out.splitlines()
    assert parse_tokens(line).identify(token) == "ci-runner"
    assert main(["token", "new", "no spaces"]) == 2


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "client"),
    [
        # Untrusted peer: the header is ignored, whatever it says.
        ("127.0.0.1", ["203.0.113.7"], [], "127.0.0.1"),
        ("127.0.0.1", ["203.0.113.7"], ["127.0.0.2/32"], "127.0.0.1"),
        # Trusted peer: the right-most address that is not a trusted proxy.
        ("127.0.0.1", ["203.0.113.7"], ["127.0.0.0/8"], "203.0.113.7"),
        ("127.0.0.1", ["198.51.100.1, 203.0.113.7"], ["127.0.0.0/8"], "203.0.113.7"),
        ("127.0.0.1", ["198.51.100.1", "203.0.113.7, 127.0.0.9"], ["127.0.0.0/8"], "203.0.113.7"),
        # Only trusted hops, or junk where the proxy's entry should be: the last one known.
        ("127.0.0.1", ["127.0.0.9"], ["127.0.0.0/8"], "127.0.0.9"),
        ("127.0.0.1", ["203.0.113.7, junk"], ["127.0.0.0/8"], "127.0.0.1"),
        ("127.0.0.1", [], ["127.0.0.0/8"], "127.0.0.1"),
        ("::1", ["[2001:db8::1]:4711"], ["::1/128"], "2001:db8::1"),
    ],
)
@pytest.mark.unit
def test_forwarded_for_is_believed_from_trusted_proxies_only(
    peer: str, forwarded: list[str], trusted: list[str], client: str
) -> None:
    assert client_address(peer, forwarded, parse_networks(trusted)) == client


@pytest.mark.unit
def test_trusted_proxies_must_be_networks() -> None:
    with pytest.raises(ValueError, match=r"'10\.0\.0\.0/33'"):
        parse_networks(["127.0.0.1", "10.0.0.0/33"])


def _connect(server: Server, source: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection(server.address, source_address=(source, 0))


def _send(
    sock: socket.socket, server: Server, body: bytes, headers: dict[str, str] | None = None
) -> None:
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    head = (
        f"POST /compile HTTP/1.1\r\nHost: {urlsplit(server.url).netloc}\r\n{extra}"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock.sendall(head + body)


def _compile_body(code: str, kind: str = "c") -> bytes:
    return json.dumps({"code": code, "type": kind}).encode()


def _reply(sock: socket.socket) -> tuple[int, dict[str, str], dict[str, object]]:
    reply = http.client.HTTPResponse(sock)
    reply.begin()
    body = json.loads(reply.read())
    return reply.status, {k.lower(): v for k, v in reply.getheaders()}, body


def _compile(
    server: Server, code: str, headers: dict[str, str] | None = None, source: str = "127.0.0.1"
) -> tuple[int, dict[str, str], dict[str, object]]:
    with _connect(server, source) as sock:
        _send(sock, server, _compile_body(code), headers)
        return _reply(sock)


def test_tokens_guard_compile_only_and_reload_on_sighup(
    make_server: MakeServer, tmp_path: Path
) -> None:
    alice, alice_line = new_token("alice")
    bob, bob_line = new_token("bob")
    tokens = tmp_path / "tokens"
    tokens.write_text(alice_line + "\n")
    server = make_server(apiTokensFile=str(tokens))

    status, headers, body = _compile(server, HELLO_C)
    assert status == 401
    assert headers["www-authenticate"] == 'Bearer realm="emcc-trio"'
    assert body == {
        "ok": False,
        "error": "a valid API token is required: send Authorization: Bearer <token>",
    }
    status, _, body = _compile(server, HELLO_C, {"Authorization": f"Bearer {bob}"})
    assert (status, body["error"]) == (401, "the API token is not valid")
    status, _, body = _compile(server, HELLO_C, {"Authorization": f"Bearer {alice}"})
    assert status == 200, body
    # Everything but /compile stays open: artifact URLs are capabilities already.
    with server.client() as client:
        assert client.get(str(body["js"])).status_code == 200
        assert client.get("/healthz").text == "ok"
        assert 'emcc_trio_client_rejections_total{reason="unauthorized"} 2.0' in (
            client.get("/metrics").text
        )

    # A reload swaps alice for bob without dropping an open keep-alive connection.
    with _connect(server) as kept:
        _send(kept, server, _compile_body(HELLO_C), {"Authorization": f"Bearer {alice}"})
        assert _reply(kept)[0] == 200
        tokens.write_text(bob_line + "\n")
        server.proc.send_signal(signal.SIGHUP)
        eventually(
            lambda: any(e["event"] == "apiTokensFile reloaded" for e in server.log_events()),
            10,
            "the token file to be reloaded",
        )
        _send(kept, server, _compile_body(HELLO_C), {"Authorization": f"Bearer {bob}"})
        assert _reply(kept)[0] == 200
        _send(kept, server, _compile_body(HELLO_C), {"Authorization": f"Bearer {alice}"})
        assert _reply(kept)[0] == 401

    # A broken file keeps the tokens in force.
    tokens.write_text("garbage\n")
    server.proc.send_signal(signal.SIGHUP)
    eventually(
        lambda: any(e["event"] == "apiTokensFile not reloaded" for e in server.log_events()),
        10,
        "the broken token file to be refused",
    )
    assert _compile(server, HELLO_C, {"Authorization": f"Bearer {bob}"})[0] == 200

    logged = [e.get("client") for e in server.log_events() if e.get("path") == "/compile"]
    assert "alice" in logged
    assert "bob" in logged
    assert alice not in server.log()
    assert bob not in server.log()


def test_jobs_per_client_bound_is_a_429_per_address(make_server: MakeServer) -> None:
    server = make_server(maxJobsPerClient=1)
    with _connect(server) as running:
        _send(running, server, _compile_body(spin(), "cpp"))
        wait_for_compiler(server)
        # The same address again, whatever X-Forwarded-For says (no trusted proxies).
        status, headers, body = _compile(server, HELLO_C, {"X-Forwarded-For": "203.0.113.7"})
        assert status == 429
        assert headers["retry-after"] == "5"
        assert body == {
            "ok": False,
            "error": "this client already has 1 compiles running or waiting"
            " (maxJobsPerClient); try again when one has finished",
        }
        # Another address is another client.
        status, _, body = _compile(server, HELLO_C, source="127.0.0.2")
        assert status == 200, body
    server.assert_clean(timeout=10)
    with server.client() as client:
        metrics = client.get("/metrics").text
    assert 'emcc_trio_client_rejections_total{reason="jobs_per_client"} 1.0' in metrics
    assert 'emcc_trio_queue_wait_seconds_count{client_class="single"} 2.0' in metrics
    clients = [
        str(e.get("client"))
        for e in server.log_events()
        if e.get("path") == "/compile" and e.get("status") in (200, 429)
    ]
    assert sorted(clients) == ["127.0.0.1", "127.0.0.2"]


def test_forwarded_for_from_a_trusted_proxy_names_the_client(make_server: MakeServer) -> None:
    server = make_server(maxJobsPerClient=1, trustedProxies=["127.0.0.1/32"])
    with _connect(server) as running:
        _send(running, server, _compile_body(spin(), "cpp"), {"X-Forwarded-For": "203.0.113.7"})
        wait_for_compiler(server)
        status, _, _ = _compile(server, HELLO_C, {"X-Forwarded-For": "203.0.113.7"})
        assert status == 429
        status, _, body = _compile(server, HELLO_C, {"X-Forwarded-For": "198.51.100.1"})
        assert status == 200, body
    server.assert_clean(timeout=10)
    logged = {e.get("client") for e in server.log_events() if e.get("path") == "/compile"}
    assert logged == {"203.0.113.7", "198.51.100.1"}
