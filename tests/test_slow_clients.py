"""Slow clients are bounded: a body that does not arrive in time is a 408 and the connection
closes, idle connections close, open connections are capped, and the server's descriptors come
back. Every wait is for an event (an answer, an end of file, a descriptor count)."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import selectors
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from emcc_trio.testing.harness import MakeServer, Server, eventually
from emcc_trio.testing.programs import HELLO_C

SLOW_CLIENTS = 2000
SLOW_HEAD = (
    b"POST /compile HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
    b"Content-Length: 1000000\r\n\r\n"
)
SLOW_BODY_SENT = b" " * 1000  # of the 1 000 000 announced
CLOSE_WAIT_SECONDS = 120.0  # only a failure bound: each wait ends at an event
# The slow connections must outlast their own opening and one compile: on this project's
# 2-CPU machine under a load of 6, opening 2 000 took 20 s.
SLOW_BODY_TIMEOUT = 60
BUFFERS = ("tcp_rmem", "tcp_wmem")  # their largest sizes bound what the kernels buffer


@contextlib.contextmanager
def open_files_limit(soft: int) -> Iterator[None]:
    """This process's soft RLIMIT_NOFILE set to `soft` (children inherit it), then restored."""
    old = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, old)


def ensure_open_files(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        assert hard == resource.RLIM_INFINITY or hard >= needed, f"RLIMIT_NOFILE hard {hard}"
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def open_fds(server: Server) -> int:
    return len(os.listdir(f"/proc/{server.proc.pid}/fd"))


def slow_client(server: Server, source: str = "127.0.0.1") -> socket.socket:
    """The head of a 1 MB POST /compile and the first 1 000 bytes of its body, then nothing."""
    sock = socket.create_connection(server.address, source_address=(source, 0))
    sock.sendall(SLOW_HEAD + SLOW_BODY_SENT)
    return sock


def answered(socks: list[socket.socket]) -> list[socket.socket]:
    """The sockets that have something to read (an answer or an end of file) right now."""
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            selector.register(sock, selectors.EVENT_READ, data=sock)
        return [key.data for key, _ in selector.select(timeout=0)]


def read_until_closed(
    socks: list[socket.socket], timeout: float, *, close: bool = True
) -> list[bytes]:
    """Everything each socket receives until the server closes it (end of file)."""
    received = {sock: b"" for sock in socks}
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            selector.register(sock, selectors.EVENT_READ, data=sock)
        open_count = len(socks)
        while open_count:
            left = deadline - time.monotonic()
            assert left > 0, f"{open_count} of {len(socks)} connections still open"
            for key, _ in selector.select(timeout=left):
                sock = key.data
                data = sock.recv(65536)
                received[sock] += data
                if not data:
                    selector.unregister(sock)
                    open_count -= 1
    if close:
        for sock in socks:
            sock.close()
    return [received[sock] for sock in socks]


def parse_response(raw: bytes) -> tuple[str, dict[str, str], Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status_line, headers, json.loads(body) if body else None


def assert_408(raw: bytes, seconds: str) -> None:
    status_line, headers, body = parse_response(raw)
    assert status_line == "HTTP/1.1 408 ", raw[:500]
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert body == {
        "ok": False,
        "error": f"the request body did not arrive within bodyTimeoutSeconds ({seconds} s)",
    }


def test_2000_slow_bodies_get_a_408_and_their_descriptors_come_back(
    make_server: MakeServer,
) -> None:
    """The issue's scenario: while 2 000 connections trickle a body, /healthz and a real
    compile are served; then every slow connection gets a 408 and is closed by the server,
    and the server's open descriptors fall back to where they were."""
    # The server starts with a soft limit too low for 2 000 connections and raises it itself.
    with open_files_limit(1024):
        server = make_server(
            bodyTimeoutSeconds=SLOW_BODY_TIMEOUT,
            maxConnections=SLOW_CLIENTS + 100,
            # They all come from one address.
            maxConnectionsPerClient=SLOW_CLIENTS + 100,
        )
    ensure_open_files(SLOW_CLIENTS + 500)
    limits = Path(f"/proc/{server.proc.pid}/limits").read_text()
    soft_hard = next(line for line in limits.splitlines() if line.startswith("Max open files"))
    assert soft_hard.split()[3] == soft_hard.split()[4], soft_hard
    assert int(soft_hard.split()[3]) >= SLOW_CLIENTS + 100

    baseline = open_fds(server)  # no connection yet

    slow = [slow_client(server) for _ in range(SLOW_CLIENTS)]
    eventually(
        lambda: open_fds(server) >= baseline + SLOW_CLIENTS,
        CLOSE_WAIT_SECONDS,
        "the server to hold them all",
    )
    with server.client() as client:
        assert client.get("/healthz").text == "ok"
        compiled = client.post("/compile", json={"code": HELLO_C + "// meanwhile\n"})
    assert compiled.status_code == 200, compiled.text
    assert compiled.json()["cached"] is False
    # Served while every slow connection was still waiting for its body.
    assert answered(slow) == []

    for raw in read_until_closed(slow, CLOSE_WAIT_SECONDS):
        assert_408(raw, str(SLOW_BODY_TIMEOUT))
    eventually(
        lambda: open_fds(server) <= baseline,
        CLOSE_WAIT_SECONDS,
        f"the server's descriptors to fall back to {baseline}",
    )
    with server.client() as client:
        assert client.get("/healthz").text == "ok"
    server.assert_clean()


@pytest.fixture
def server(make_server: MakeServer) -> Server:
    """The seed's 1 MiB body bound: a refused body is quick to send, and still more than the
    kernels' socket buffers hold."""
    return make_server(maxBodyBytes=1 << 20)


def test_idle_and_half_sent_connections_are_closed(server: Server) -> None:
    """hypercorn's keep_alive_timeout: silent after connecting, a head that never ends, and
    idle after an answer all end in the server closing the connection; so does a 413, whose
    body is never read."""
    silent = socket.create_connection(server.address)
    half_head = socket.create_connection(server.address)
    half_head.sendall(b"GET /healthz HTTP/1.1\r\nHost: te")
    kept_alive = socket.create_connection(server.address)
    kept_alive.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
    too_large = socket.create_connection(server.address)
    too_large.sendall(SLOW_HEAD.replace(b"1000000", b"2000000") + SLOW_BODY_SENT)
    silent_got, half_got, kept_got, too_large_got = read_until_closed(
        [silent, half_head, kept_alive, too_large], CLOSE_WAIT_SECONDS
    )
    assert silent_got == b""
    assert half_got == b""
    assert kept_got.startswith(b"HTTP/1.1 200 ")
    assert kept_got.endswith(b"\r\n\r\nok")
    status_line, headers, body = parse_response(too_large_got)
    assert status_line == "HTTP/1.1 413 "
    assert headers["connection"] == "close"
    assert body == {"ok": False, "error": "request body too large (maxBodyBytes is 1048576)"}


def test_connections_past_max_connections_wait_for_a_free_slot(make_server: MakeServer) -> None:
    """With every slot held by a slow body, a new connection is not served until one of them
    has been answered (408) and closed."""
    cap = 8
    server = make_server(bodyTimeoutSeconds=3, maxConnections=cap)
    baseline = open_fds(server)
    slow = [slow_client(server) for _ in range(cap)]
    eventually(
        lambda: open_fds(server) >= baseline + cap, CLOSE_WAIT_SECONDS, "the server to hold them"
    )

    waiting = socket.create_connection(server.address)
    waiting.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
    (healthz,) = read_until_closed([waiting], CLOSE_WAIT_SECONDS)
    assert healthz.startswith(b"HTTP/1.1 200 ")
    assert healthz.endswith(b"\r\n\r\nok")
    # It got a slot only after a slow connection's 408 had been sent and the slot freed.
    assert answered(slow) != []

    for raw in read_until_closed(slow, CLOSE_WAIT_SECONDS):
        assert_408(raw, "3")
    eventually(lambda: open_fds(server) <= baseline, CLOSE_WAIT_SECONDS, "descriptors back")


def healthz_from(server: Server, source: str) -> bytes:
    """A /healthz from `source`, and whatever came back until the server closed."""
    sock = socket.create_connection(server.address, source_address=(source, 0))
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
    try:
        (received,) = read_until_closed([sock], CLOSE_WAIT_SECONDS)
    except ConnectionResetError:  # closed with the request unread
        sock.close()
        return b""
    return received


def test_one_address_cannot_take_every_connection(make_server: MakeServer) -> None:
    """The issue's scenario, scaled down: one address holds maxConnectionsPerClient slow
    connections; its next one is closed at once, unanswered, while another address is served,
    and the address may connect again once one of its connections has closed."""
    per_client = 8
    server = make_server(
        bodyTimeoutSeconds=120, maxConnections=4 * per_client, maxConnectionsPerClient=per_client
    )
    baseline = open_fds(server)
    slow = [slow_client(server) for _ in range(per_client)]
    eventually(
        lambda: open_fds(server) >= baseline + per_client,
        CLOSE_WAIT_SECONDS,
        "the server to hold them",
    )
    assert healthz_from(server, "127.0.0.1") == b""
    served = healthz_from(server, "127.0.0.2")
    assert served.startswith(b"HTTP/1.1 200 "), served
    assert served.endswith(b"\r\n\r\nok")
    assert answered(slow) == []  # the slow ones are held, not answered

    slow.pop().close()
    eventually(
        lambda: open_fds(server) <= baseline + per_client - 1,
        CLOSE_WAIT_SECONDS,
        "the server to close the one that went",
    )
    again = healthz_from(server, "127.0.0.1")
    assert again.startswith(b"HTTP/1.1 200 "), again
    with server.client() as client:
        metrics = client.get("/metrics").text
    assert 'emcc_trio_client_rejections_total{reason="connections_per_client"} 1.0' in metrics
    for sock in slow:
        sock.close()


def test_a_trusted_proxy_is_not_bound_by_connections_per_client(make_server: MakeServer) -> None:
    """A balancer carries many clients: its connections count against maxConnections only;
    any other address stays bound."""
    server = make_server(maxConnectionsPerClient=2, trustedProxies=["127.0.0.1/32"])
    baseline = open_fds(server)
    held = [slow_client(server, "127.0.0.2") for _ in range(2)]
    held += [slow_client(server) for _ in range(4)]
    eventually(
        lambda: open_fds(server) >= baseline + 6, CLOSE_WAIT_SECONDS, "the server to hold them"
    )
    assert healthz_from(server, "127.0.0.2") == b""
    served = healthz_from(server, "127.0.0.1")
    assert served.startswith(b"HTTP/1.1 200 "), served
    for sock in held:
        sock.close()


def test_a_refused_body_still_arriving_is_read_before_the_close(server: Server) -> None:
    """A client (HAProxy, httpx) goes on sending the body it announced while the 413 comes
    back, and fails the request if a send fails before it reads the answer. Closing the socket
    with that body still arriving makes the kernel answer it with a reset: the server reads and
    drops what still comes (lingering close) until the client ends, so every send succeeds."""
    # More than both kernels' socket buffers hold: sendall can only finish if the server reads.
    more = sum(int(Path(f"/proc/sys/net/ipv4/{n}").read_text().split()[2]) for n in BUFFERS)
    more += 1 << 20
    conn = socket.create_connection(server.address, timeout=CLOSE_WAIT_SECONDS)
    conn.sendall(SLOW_HEAD.replace(b"1000000", str(2 * more).encode()) + b" " * 65536)
    # The whole answer and the server's end of sending (its FIN) arrive first.
    (got,) = read_until_closed([conn], CLOSE_WAIT_SECONDS, close=False)
    status_line, headers, body = parse_response(got)
    assert status_line == "HTTP/1.1 413 "
    assert headers["connection"] == "close"
    assert body == {"ok": False, "error": "request body too large (maxBodyBytes is 1048576)"}
    # A reset raises BrokenPipeError or ConnectionResetError; a server that neither reads nor
    # closes, a timeout.
    conn.sendall(b" " * more)
    conn.shutdown(socket.SHUT_WR)
    assert read_until_closed([conn], CLOSE_WAIT_SECONDS) == [b""]


def holds_connection_from(server: Server, client_port: int) -> bool:
    """Whether the server process still has a socket open to `client_port` (from /proc: its
    descriptors' inodes, matched against the kernel's TCP table)."""
    server_port = server.address[1]
    inodes = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            ports = (int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16))
            if ports == (server_port, client_port) and inode != "0":
                inodes.add(f"socket:[{inode}]")
    fd_dir = Path(f"/proc/{server.proc.pid}/fd")
    return any(os.readlink(fd_dir / fd) in inodes for fd in os.listdir(fd_dir))


def test_a_client_that_stops_reading_loses_its_connection(make_server: MakeServer) -> None:
    """hypercorn writes an answer with no deadline of its own: a client that asks and never
    reads would hold its connection (and its maxConnections slot) for good."""
    server = make_server(sendTimeoutSeconds=2)
    built = server.compile(HELLO_C)
    assert built.status_code == 200, built.text
    js = built.json()["js"]
    with server.client() as client:
        size = len(client.get(js).content)
    # Pipelined requests for more than the server's send buffer and this socket's small receive
    # buffer can hold, so that the server's writes stall for want of a reader.
    stuck = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2]) + (1 << 20)
    requests = stuck // size + 2
    conn = socket.socket()
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    conn.connect(server.address)
    client_port = conn.getsockname()[1]
    conn.sendall(f"GET {js} HTTP/1.1\r\nHost: test\r\n\r\n".encode() * requests)
    eventually(lambda: holds_connection_from(server, client_port), 30, "the server to write")
    eventually(
        lambda: not holds_connection_from(server, client_port),
        CLOSE_WAIT_SECONDS,
        "the server to close the connection of a client that stopped reading",
    )
    assert server.compile(HELLO_C).status_code == 200
    conn.close()
