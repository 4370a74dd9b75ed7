"""Real redis-server processes of a test's own, on loopback: a single server (which can be
stopped and started again on its port: an outage) and a Sentinel setup (primary, replica,
Sentinel) that fails over."""

from __future__ import annotations

import subprocess
from pathlib import Path

import attrs

from emcc_trio.testing.harness import eventually, free_port

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
