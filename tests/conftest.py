"""Real servers, real emcc: start the service as a subprocess and inspect what it leaves."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import attrs
import httpx
import pytest

from emcc_trio.isolation.leftovers import job_cgroups, job_processes

T = TypeVar("T")
REPO = Path(__file__).resolve().parent.parent
PROGRAMS = Path(__file__).resolve().parent / "programs"
RUN_ARTIFACT_JS = Path(__file__).resolve().parent / "run_artifact.js"
# Under the cgroup v2 VM's emulated CPU (nox -s cgroup2) the server starts far slower.
START_SECONDS = 600.0 if os.environ.get("RUN_IN_VM") else 60.0

HELLO_C = '#include <stdio.h>\nint main(void) { printf("hello from C\\n"); return 0; }\n'
HELLO_CPP = '#include <iostream>\nint main() { std::cout << "hello from C++" << std::endl; }\n'


def eventually(predicate: Callable[[], T], timeout: float, what: str) -> T:
    """Poll `predicate` until it returns something truthy; fail naming `what`."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def serve_once(
    tmp_path: Path, config: dict[str, Any], **popen: Any
) -> subprocess.CompletedProcess[str]:
    """Run `emcc-trio serve` with `config` in the foreground (for servers that must refuse to
    start); `popen` goes to subprocess.run."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return subprocess.run(
        [sys.executable, "-m", "emcc_trio", "serve", "--config", str(path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        **popen,
    )


def program(name: str) -> str:
    return (PROGRAMS / name).read_text()


def spin() -> str:
    """A C++ compile that only a CPU, wall-clock or hang-up can end (constant memory)."""
    return program("spin.cpp")


@attrs.define
class FifoGate:
    """A compile that waits for the test: its source includes a FIFO, and clang blocks
    reading it until `open` writes the header. An in-flight compile without a race against
    the machine's speed."""

    path: Path

    def __attrs_post_init__(self) -> None:
        os.mkfifo(self.path)

    @property
    def code(self) -> str:
        return (
            f'#include "{self.path}"\n#include <stdio.h>\n'
            'int main(void) { printf("gated %d\\n", GATED); return 0; }\n'
        )

    def open(self) -> None:
        """Let the waiting compile go on (fails if no compiler is reading the FIFO)."""

        def writer() -> list[int]:
            try:
                return [os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)]
            except OSError:  # ENXIO: the compiler has not opened it yet
                return []

        [fd] = eventually(writer, 60, "the compiler to read the gate FIFO")
        with os.fdopen(fd, "w") as fifo:
            fifo.write("#define GATED 42\n")


@attrs.define
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    workdir: Path
    log_path: Path
    config: dict[str, Any] = attrs.field(factory=dict)

    @property
    def v2_root(self) -> Path | None:
        """The delegated root of a server on the v2 driver (its job groups are below it)."""
        if self.config.get("cgroupDriver") != "v2":
            return None
        return Path(os.path.normpath(self.workdir / str(self.config["cgroupV2Root"])))

    @property
    def jobs_dir(self) -> Path:
        return self.workdir / "jobs"

    @property
    def address(self) -> tuple[str, int]:
        """Where to open a raw socket to the server."""
        url = urlsplit(self.url)
        assert url.hostname is not None
        assert url.port is not None
        return url.hostname, url.port

    @property
    def artifacts_dir(self) -> Path:
        return self.workdir / "artifacts"

    def log(self) -> str:
        return self.log_path.read_text()

    def log_events(self) -> list[dict[str, Any]]:
        events = []
        for line in self.log().splitlines():
            if line.startswith("{"):
                events.append(json.loads(line))
        return events

    def client(self, timeout: float = 180.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)

    def compile(
        self, code: str, kind: str = "c", args: list[str] | None = None, timeout: float = 180.0
    ) -> httpx.Response:
        body: dict[str, Any] = {"code": code, "type": kind}
        if args is not None:
            body["args"] = args
        with self.client(timeout) as client:
            return client.post("/compile", json=body)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def job_processes(self) -> list[str]:
        return job_processes(self.proc.pid, self.jobs_dir)

    def leftovers(self) -> dict[str, list[str]]:
        """Everything a finished job must not leave behind."""
        dirs = sorted(p.name for p in self.jobs_dir.iterdir()) if self.jobs_dir.exists() else []
        return {
            "processes": self.job_processes(),
            "job_dirs": dirs,
            "cgroups": [str(p) for p in job_cgroups(self.jobs_dir, self.v2_root)],
        }

    def assert_clean(self, timeout: float = 2.0) -> None:
        eventually(
            lambda: not any(self.leftovers().values()),
            timeout,
            f"no leftovers (still: {self.leftovers()})",
        )


def server_config(workdir: Path, **overrides: Any) -> dict[str, Any]:
    """The settings tests run with unless they say otherwise: real cgroups, no jail."""
    config: dict[str, Any] = {
        "workingDir": str(workdir),
        "addr": "127.0.0.1:0",
        # In the cgroup v2 VM (`nox -s cgroup2`) the servers use the v2 driver.
        "cgroupDriver": os.environ.get("EMCC_TRIO_TEST_DRIVER", "auto"),
        "cgroupV2Root": os.environ.get("EMCC_TRIO_TEST_V2_ROOT", "cgroup"),
        "nsjailEnabled": False,
        "artifactTTLDays": 3,
    }
    config.update(overrides)
    return config


def start_server(workdir: Path, config: dict[str, Any], config_name: str = "config.json") -> Server:
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / config_name
    config_path.write_text(json.dumps(config))
    # One log per start, so a restarted server is not mistaken for the earlier one.
    log_path = workdir / f"server-{len(list(workdir.glob('server-*.log')))}.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "emcc_trio", "serve", "--config", str(config_path)],
            cwd=workdir,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )

    def listening() -> str:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{log_path.read_text()}")
        for line in log_path.read_text().splitlines():
            if '"listening"' in line:
                return str(json.loads(line)["urls"][0])
        return ""

    url = eventually(listening, START_SECONDS, "the server to listen")
    return Server(proc=proc, url=url, workdir=workdir, log_path=log_path, config=config)


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []
    counter = iter(range(1000))

    def make(workdir: Path | None = None, **overrides: Any) -> Server:
        """A server in a new dir, or restarted in `workdir` (for crash recovery)."""
        workdir = workdir or tmp_path / f"server{next(counter)}"
        server = start_server(workdir, server_config(workdir, **overrides))
        servers.append(server)
        return server

    yield make
    for server in servers:
        if server.proc.poll() is None:
            server.proc.send_signal(signal.SIGTERM)
            try:
                server.proc.wait(30)
            except subprocess.TimeoutExpired:
                server.proc.kill()
                server.proc.wait()


@pytest.fixture
def server(make_server: Callable[..., Server]) -> Server:
    return make_server()


def run_artifact(server: Server, response: httpx.Response, tmp_path: Path) -> str:
    """Fetch the artifact pair over HTTP and run main under node; return what it prints."""
    body = response.json()
    assert body["ok"] is True, body
    out = tmp_path / body["id"]
    out.mkdir()
    with server.client() as client:
        for key, name in (("js", "app.js"), ("wasm", "app.wasm")):
            fetched = client.get(body[key])
            assert fetched.status_code == 200, fetched.text
            (out / name).write_bytes(fetched.content)
    done = run_node(out)
    assert done.returncode == 0, done.stderr
    return done.stdout


def run_node(out: Path, *, single_file: bool = False) -> subprocess.CompletedProcess[str]:
    """Run main of the `app.js` + `app.wasm` in `out` under node (`app.js` alone for a
    -sSINGLE_FILE build)."""
    wasm = "-" if single_file else str(out / "app.wasm")
    return subprocess.run(
        ["node", str(RUN_ARTIFACT_JS), str(out / "app.js"), wasm],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


MakeServer = Callable[..., Server]


REDIS_PASSWORD = "s3cret-pa55"


@attrs.define
class RedisServer:
    """A real redis-server of the test's own, on loopback, with a password; it can be
    stopped and started again on the same port (an outage)."""

    workdir: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    extra_args: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return f"redis://:{REDIS_PASSWORD}@127.0.0.1:{self.port}/0"

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["redis-cli", "-p", str(self.port), "--no-auth-warning", "-a", REDIS_PASSWORD, *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )

    def start(self) -> None:
        self.port = self.port or free_port()
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--requirepass",
                REDIS_PASSWORD,
                "--dir",
                str(self.workdir),
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        eventually(lambda: self.cli("ping").stdout.strip() == "PONG", 30, "redis-server")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        self.proc = None


SENTINEL_SERVICE = "emcc-trio"


@attrs.define
class SentinelSetup:
    """A real primary, a replica of it and a Sentinel (`redis-server --sentinel`) that watches
    them and promotes the replica when the primary is gone (quorum 1, down after 1 s)."""

    workdir: Path
    primary: RedisServer = attrs.field(
        default=attrs.Factory(lambda self: RedisServer(self.workdir / "primary"), takes_self=True)
    )
    replica: RedisServer = attrs.field(
        default=attrs.Factory(lambda self: RedisServer(self.workdir / "replica"), takes_self=True)
    )
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis+sentinel://:{REDIS_PASSWORD}@127.0.0.1:{self.port}/{SENTINEL_SERVICE}/0"

    def sentinel(self, *args: str) -> str:
        return subprocess.run(
            ["redis-cli", "-p", str(self.port), "sentinel", *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout

    def primary_port(self) -> int:
        """The primary's port, as the Sentinel names it now (0 while it names none)."""
        answer = self.sentinel("get-master-addr-by-name", SENTINEL_SERVICE).split()
        return int(answer[1]) if len(answer) == 2 else 0

    def start(self) -> None:
        for name in ("primary", "replica", "sentinel"):
            (self.workdir / name).mkdir()
        self.primary.start()
        self.replica.extra_args = (
            "--replicaof",
            f"127.0.0.1 {self.primary.port}",
            "--masterauth",
            REDIS_PASSWORD,
        )
        self.replica.start()
        self.port = free_port()
        config = self.workdir / "sentinel" / "sentinel.conf"  # Sentinel rewrites it: its own
        config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {config.parent}\n"
            f"sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {self.primary.port} 1\n"
            f"sentinel auth-pass {SENTINEL_SERVICE} {REDIS_PASSWORD}\n"
            f"sentinel down-after-milliseconds {SENTINEL_SERVICE} 1000\n"
            f"sentinel failover-timeout {SENTINEL_SERVICE} 5000\n"
        )
        self.proc = subprocess.Popen(
            ["redis-server", str(config), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        eventually(self.watches_replica, 60, "the Sentinel to watch the replica")

    def watches_replica(self) -> bool:
        """Whether the Sentinel knows the replica, up and in sync with the primary."""
        listed = self.sentinel("replicas", SENTINEL_SERVICE).split()
        fields = dict(zip(listed[::2], listed[1::2], strict=False))
        return (
            fields.get("name") == f"127.0.0.1:{self.replica.port}"
            and fields.get("flags") == "slave"
            and fields.get("master-link-status") == "ok"
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        self.replica.stop()
        self.primary.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def redis_sentinel(tmp_path: Path) -> Iterator[SentinelSetup]:
    setup = SentinelSetup(tmp_path / "sentinel-setup")
    setup.workdir.mkdir()
    try:
        setup.start()
        yield setup
    finally:
        setup.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
