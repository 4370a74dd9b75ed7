"""The HTTP server: hypercorn's trio worker, with a cap on open connections.

hypercorn accepts every connection it can, bounded only by the file descriptor limit, and its
`serve` has no hook on the accept loop. `serve` here runs hypercorn's own parts (the ASGI
lifespan, one `TCPServer` per connection, the graceful shutdown of `hypercorn.trio.run`) around
listeners that take a slot before each accept: past `max_connections`, new connections wait in
the kernel's listen backlog until one closes (and once the backlog is full the kernel drops new
attempts, which clients retry). Nothing in the server fails for want of a file descriptor.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import resource
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, Final, cast

import attrs
import h11
import h11._readers
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import (
    ASGIFramework,
    ASGIReceiveCallable,
    ASGISendCallable,
    ASGISendEvent,
    ConnectionState,
    LifespanState,
    Scope,
)
from hypercorn.utils import repr_socket_addr, wrap_app

from emcc_trio.api.clients import Network

# How long a connection the server has finished answering may still read what its client sends
# (see _LingeringStream): long enough for the rest of a refused body on any network, short
# enough that a client cannot hold the connection.
LINGER_SECONDS: Final = 5.0
# An answer is written in slices of this size, each of which must leave within the send
# timeout: a client that stops reading loses its connection instead of holding it for good.
SEND_SLICE_BYTES: Final = 64 * 1024
# Descriptors the server needs besides its connections: listeners, logs, the cache, cgroup
# files, and a few pipes and files per running compile.
RESERVED_FDS: Final = 256
# How long open requests get to finish after the shutdown trigger.
GRACEFUL_SECONDS: Final = 5.0
# A connection must send a whole request head within this, and is closed after this long idle
# between requests (hypercorn's keep_alive_timeout).
KEEP_ALIVE_SECONDS: Final = 5.0


def make_config(host: str, port: int) -> HypercornConfig:
    """hypercorn's settings for one plain-HTTP bind; access logging is ours (AccessLog)."""
    config = HypercornConfig()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.graceful_timeout = GRACEFUL_SECONDS
    config.keep_alive_timeout = KEEP_ALIVE_SECONDS
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    return config


class _CappedListener(trio.abc.Listener[trio.SocketStream]):
    """A listener that accepts only while a slot is free; the connection's handler frees it."""

    def __init__(self, listener: trio.SocketListener, slots: trio.Semaphore) -> None:
        self.listener = listener
        self.slots = slots

    async def accept(self) -> trio.SocketStream:
        await self.slots.acquire()
        try:
            return await self.listener.accept()
        except BaseException:
            self.slots.release()
            raise

    async def aclose(self) -> None:
        await self.listener.aclose()


@attrs.define
class ConnectionsPerAddress:
    """Open connections by the peer's address, `limit` at most (`maxConnectionsPerClient`).

    Counted when the connection is accepted, before any request, so the client is its address:
    an API token or `X-Forwarded-For` arrives only with a request. A trusted proxy's address is
    not counted (it carries many clients: the balancer bounds each source itself)."""

    limit: int
    trusted: Sequence[Network] = ()
    refused: Callable[[], None] = lambda: None  # a metric's inc
    _open: Counter[str] = attrs.field(factory=Counter)

    def take(self, peer: str) -> str | None:
        """The key counted for `peer` (release it when the connection ends), or None when
        the address already has `limit` connections open (then refuse the connection)."""
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            address = None
        if address is not None:
            mapped = getattr(address, "ipv4_mapped", None)
            if mapped is not None:
                address = mapped
            if any(address in network for network in self.trusted):
                return ""
        key = str(address) if address is not None else peer
        if self._open[key] >= self.limit:
            self.refused()
            return None
        self._open[key] += 1
        return key

    def release(self, key: str) -> None:
        if not key:
            return
        self._open[key] -= 1
        if not self._open[key]:
            del self._open[key]


class _LingeringStream(trio.abc.HalfCloseableStream):
    """A connection that, once the server has sent its last byte (`send_eof`), reads and drops
    whatever the client still sends until the client ends or LINGER_SECONDS pass, and only then
    closes (a lingering close, as nginx and Apache do).

    Closing a socket while the client is still sending makes the kernel answer with a reset,
    and the client then fails on its next send or loses the answer unread: a client still
    sending the body of a request refused before its body was read (413, 408, 401) would see
    "connection reset" instead of the JSON error. HAProxy reports it as a failed request.

    Sending gives up when the client takes nothing for `send_timeout` seconds, and then
    `abandon` ends the whole connection: hypercorn shields its writes from cancellation and,
    with further requests pipelined behind the stalled answer, waits for that answer to finish
    before it reads again, so a client that never reads would otherwise hold its connection
    (and delay a graceful shutdown) for as long as it likes.
    """

    def __init__(
        self, stream: trio.SocketStream, send_timeout: float, abandon: Callable[[], None]
    ) -> None:
        self.stream = stream
        self.socket = stream.socket
        self.send_timeout = send_timeout
        self.abandon = abandon
        self._finished_sending = False
        # hypercorn's reader and the drain in aclose take turns instead of colliding.
        self._receiving = trio.Lock()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        for start in range(0, len(view), SEND_SLICE_BYTES):
            with trio.move_on_after(self.send_timeout) as stalled:
                await self.stream.send_all(view[start : start + SEND_SLICE_BYTES])
            if stalled.cancelled_caught:
                # Part of a slice may have left: the connection cannot carry anything more.
                self.abandon()
                raise trio.BrokenResourceError(
                    f"the client read nothing for {self.send_timeout:g} s"
                )

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.stream.send_eof()
        self._finished_sending = True

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        async with self._receiving:
            while True:
                data = await self.stream.receive_some(max_bytes)
                if not data or not self._finished_sending:
                    return data

    async def aclose(self) -> None:
        if self._finished_sending:
            with (
                trio.CancelScope(shield=True),
                trio.move_on_after(LINGER_SECONDS),
                contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
            ):
                while await self.receive_some():
                    pass
        await self.stream.aclose()


def _shield_sends(app: ASGIFramework) -> ASGIFramework:
    """`app` with each `send` of an HTTP request shielded from cancellation.

    hypercorn does a connection's bookkeeping inside the app's `send`: the last body message
    recycles the connection for the next request and starts its keep-alive timer, or closes it
    when it cannot carry another request (a 408 or 413 with the body unread). quart-trio
    cancels the request's task as soon as hypercorn reports the request stream closed, which
    happens early in that same call, so unshielded, the timer never started (idle connections
    stayed open forever) and the close never ran (the connection stayed open until shutdown).
    hypercorn already shields the socket writes themselves, so this adds no new wait.
    """

    async def shielded_app(
        scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return

        async def shielded_send(message: ASGISendEvent) -> None:
            with trio.CancelScope(shield=True):
                await send(message)

        await app(scope, receive, shielded_send)

    return shielded_app


class _RecordedLines:
    """A request-head reader's view of h11's receive buffer that keeps the head's lines."""

    def __init__(self, buffer: Any) -> None:
        self.buffer = buffer
        self.lines: list[bytearray] | None = None

    def maybe_extract_lines(self) -> list[bytearray] | None:
        self.lines = self.buffer.maybe_extract_lines()
        return self.lines

    def __getattr__(self, name: str) -> Any:
        return getattr(self.buffer, name)


def framing_problem(header_lines: Sequence[bytes | bytearray]) -> str | None:
    """Why a request head's framing is ambiguous, from its raw header lines (RFC 9112 section
    6): Content-Length together with Transfer-Encoding, or Content-Length more than once (as
    two fields, or as a list in one). None when it is not."""
    lengths = encodings = 0
    for line in header_lines:
        if line[:1] in (b" ", b"\t"):
            continue  # an obsolete folded continuation: h11 joins it to the field above
        name, _, value = bytes(line).partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            lengths += len(value.split(b","))
        elif name == b"transfer-encoding":
            encodings += 1
    if lengths and encodings:
        return "both Content-Length and Transfer-Encoding"
    if lengths > 1:
        return "more than one Content-Length"
    return None


def install_strict_framing() -> None:
    """Refuse ambiguous request framing before hypercorn sees the request (idempotent).

    h11 frames a request with both Content-Length and Transfer-Encoding by the chunked body and
    keeps the connection open, and folds repeated equal Content-Length values into one: a
    balancer that frames by Content-Length would then pass a request hidden in the body, which
    this server answers (request smuggling). The request-head reader of every h11 server
    connection (h11's reader table is one per process) now refuses both with h11's own
    protocol error: hypercorn answers an empty-bodied 400 with `Connection: close` and closes
    the connection, so nothing after the head is read as a request. (h11 itself refuses
    conflicting Content-Length values the same way.)"""
    readers: dict[Any, Any] = h11._readers.READERS
    key = (h11.CLIENT, h11.IDLE)
    read_head = readers[key]
    if getattr(read_head, "strict_framing", False):
        return

    def read_strict_head(buffer: Any) -> h11.Request | None:
        recorded = _RecordedLines(buffer)
        request = read_head(recorded)
        if request is not None and recorded.lines is not None:
            problem = framing_problem(recorded.lines[1:])
            if problem is not None:
                raise h11.LocalProtocolError(f"ambiguous framing: {problem}", 400)
        return cast("h11.Request | None", request)

    read_strict_head.strict_framing = True  # type: ignore[attr-defined]
    readers[key] = read_strict_head


def _peer(stream: trio.SocketStream) -> str:
    try:
        return str(stream.socket.getpeername()[0])
    except OSError:  # already gone
        return ""


def raise_open_files_limit(max_connections: int) -> int:
    """Raise RLIMIT_NOFILE's soft limit to its hard limit; return the new soft limit.

    Raises ValueError when even the hard limit is too low for `max_connections` connections
    plus the server's own files.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = max_connections + RESERVED_FDS
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise ValueError(
            f"maxConnections {max_connections} needs {needed} open files "
            f"({RESERVED_FDS} for the server itself), but the hard RLIMIT_NOFILE is {hard}"
        )
    # An unlimited hard limit still has the kernel's nr_open above it: ask for what is needed.
    target = max(soft, needed) if hard == resource.RLIM_INFINITY else hard
    if soft != target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot raise RLIMIT_NOFILE to {target}: {exc}") from exc
    return target


async def serve(
    app: ASGIFramework,
    config: HypercornConfig,
    max_connections: int,
    send_timeout: float,
    *,
    shutdown_trigger: Callable[[], Awaitable[None]],
    per_address: ConnectionsPerAddress | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `app` on `config.bind` (plain HTTP) until `shutdown_trigger` returns. With
    `per_address`, a connection from an address that has its maximum open is closed at once.

    Then, as hypercorn does: stop accepting, give open requests `config.graceful_timeout`
    seconds, cancel what is left, and run the app's lifespan shutdown.
    """
    install_strict_framing()
    wrapped = wrap_app(_shield_sends(app), config.wsgi_max_body_size, "asgi")
    state: LifespanState = {}
    lifespan = Lifespan(wrapped, config, state)
    context = WorkerContext(None)
    slots = trio.Semaphore(max_connections)
    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        async with trio.open_nursery() as connections:
            sockets = config.create_sockets()
            listeners = []
            binds = []
            for sock in sockets.insecure_sockets:
                sock.listen(config.backlog)
                listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
                listeners.append(_CappedListener(listener, slots))
                binds.append(f"http://{repr_socket_addr(sock.family, sock.getsockname())}")
            connection = partial(TCPServer, wrapped, config, context, ConnectionState(state.copy()))

            async def handle(stream: trio.SocketStream) -> None:
                key: str | None = ""
                try:
                    if per_address is not None:
                        key = per_address.take(_peer(stream))
                    if key is None:
                        return  # past maxConnectionsPerClient: closed below, unread
                    with trio.CancelScope() as scope:
                        lingering = _LingeringStream(stream, send_timeout, scope.cancel)
                        # Annotated as an SSLStream; hypercorn.trio.run passes plain streams too.
                        await connection(lingering).run()  # type: ignore[arg-type]
                finally:
                    try:
                        # An abandoned connection skipped hypercorn's own close.
                        with trio.CancelScope(shield=True):
                            await stream.aclose()
                    finally:
                        slots.release()
                        if per_address is not None and key is not None:
                            per_address.release(key)

            accept = partial(trio.serve_listeners, handle, listeners, handler_nursery=connections)
            task_status.started(binds)
            try:
                async with trio.open_nursery() as accepting:
                    accepting.start_soon(accept)
                    await shutdown_trigger()
                    accepting.cancel_scope.cancel()
            finally:
                await context.terminated.set()
                connections.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()
