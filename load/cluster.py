"""`nox -s cluster`: three replicas, each on its own host, sharing one Redis, behind HAProxy.

Each replica runs in a network namespace of its own (a veth pair on a bridge this run makes),
with its own workingDir; redis-server and HAProxy (with deploy/haproxy.cfg) listen on the
bridge. The load mix of `nox -s load` goes through HAProxy while the run stops a replica with
SIGTERM (it drains: no request fails for it) and starts it again, SIGKILLs another and starts it
again, cuts the third one's link for a few seconds, and stops Redis for a few seconds. Then it
checks every answer, runs every compile's artifacts under node (fetched through
HAProxy), cache hits across replicas, that 6 identical requests at once on 3 replicas ran one
compile, that requests with ambiguous framing get a 400 and smuggle nothing (directly and
through HAProxy), and that nothing is left behind on any host. Everything it starts, it stops.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs
import httpx
import trio

from emcc_trio.testing.framing import ambiguous_requests, exchange, statuses
from emcc_trio.testing.harness import Server
from load import mix, run
from load.netns import Network
from load.server import STOP_SECONDS, load_config, start

REPO = mix.REPO
HAPROXY_CFG = REPO / "deploy" / "haproxy.cfg"
HAPROXY_503 = REPO / "deploy" / "emcc-trio-503.http"
# The backup server in HAProxy's config that answers 503 when no replica is ready.
FALLBACK_SERVER = "unavailable"
REPLICAS = 3
REPLICA_PORT = 8080
REDIS_PASSWORD = secrets.token_hex(12)
# Per replica: one compile at a time (three replicas share this machine's cores).
# The CPU cap is load's (see the margins in load.mix); the wall-clock cap is half of load's, so
# that a CPU bomb does not hold a replica's only slot for a minute (it may end by either cap).
REPLICA_CAPS: Mapping[str, Any] = {
    **mix.LOAD_CAPS,
    "maxConcurrentJobs": 1,
    "queueMax": 16,
    "jobTimeoutSeconds": 30,
}
OUTAGE_SECONDS = 4.0
WAIT_SECONDS = 60.0
RETRY_AFTER_MAX = 5.0
RECOVERY_EVENT = "cleaned up after an earlier run"
REDIS_CLI = ("redis-cli", "--no-auth-warning")


@attrs.frozen
class Timed:
    started: float
    ended: float
    answer: mix.Answer


@attrs.define
class Window:
    """A disruption: from the fault (`started`) to its repair (`repaired`: the replica restarted,
    the link back, Redis started), and until the cluster was whole again (`ended`)."""

    what: str
    started: float
    repaired: float = float("inf")
    ended: float = float("inf")


@attrs.define
class Seen:
    answers: list[Timed] = attrs.Factory(list)
    windows: list[Window] = attrs.Factory(list)
    issued: int = 0
    notes: list[str] = attrs.Factory(list)
    chaos_done: bool = False
    probe_failures: list[str] = attrs.Factory(list)
    drain_failures: list[str] = attrs.Factory(list)


@attrs.define
class Redis:
    workdir: Path
    bind: str
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://:{REDIS_PASSWORD}@{self.bind}:{self.port}/0"

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [*REDIS_CLI, "-h", self.bind, "-p", str(self.port), "-a", REDIS_PASSWORD, *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return done.stdout.strip()

    def start(self) -> None:
        command = ["redis-server", "--bind", self.bind, "--port", str(self.port)]
        command += ["--save", "", "--appendonly", "no", "--requirepass", REDIS_PASSWORD]
        command += ["--dir", str(self.workdir), "--maxmemory", "512mb"]
        command += ["--maxmemory-policy", "volatile-ttl"]
        log = (self.workdir / "redis.log").open("ab")
        self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_until(lambda: self.cli("ping") == "PONG", "redis-server to answer")

    def stop(self) -> None:
        """Shut down writing a snapshot (restarting it loads it: an outage loses nothing)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.cli("shutdown", "save")
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def wait_until(predicate: Any, what: str, timeout: float = WAIT_SECONDS) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def haproxy_config(bind: str, backends: Sequence[str], *, access_log: bool = True) -> str:
    """deploy/haproxy.cfg listening on `bind` and balancing over `backends` (host:port), with
    this checkout's error file and a fallback socket of its own (several may run at once)."""
    fallback = "abns@emcc-trio-unavailable"
    lines = []
    for line in HAPROXY_CFG.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("server replica"):
            continue
        if not access_log and (stripped.startswith("log ") or stripped == "option httplog"):
            continue
        if stripped == "bind :8080":
            line = f"    bind {bind}"
        line = line.replace("/etc/haproxy/errors/emcc-trio-503.http", str(HAPROXY_503))
        lines.append(line.replace(fallback, f"{fallback}-{bind}"))
        if stripped.startswith("http-response set-header X-Served-By"):
            lines += [
                f"    server replica{i} {backend} check" for i, backend in enumerate(backends, 1)
            ]
    config = "\n".join(lines) + "\n"
    if f"bind {bind}" not in config or config.count(f"{fallback}-{bind}") != 2:
        raise RuntimeError(f"{HAPROXY_CFG} no longer has the lines this rewrite expects")
    return config


@attrs.define
class Cluster:
    workdir: Path
    network: Network = attrs.Factory(Network)
    redis: Redis | None = None
    replicas: list[Server] = attrs.Factory(list)
    configs: list[dict[str, Any]] = attrs.Factory(list)
    haproxy: subprocess.Popen[bytes] | None = None
    url: str = ""

    @property
    def haproxy_log(self) -> Path:
        return self.workdir / "haproxy.log"

    def start(self) -> None:
        self.network.create(REPLICAS)
        redis_dir = self.workdir / "redis"
        redis_dir.mkdir()
        self.redis = Redis(redis_dir, self.network.gateway, free_port())
        self.redis.start()
        for index, host in enumerate(self.network.hosts, 1):
            workdir = self.workdir / f"replica{index}"
            workdir.mkdir(mode=0o711)
            config = load_config(workdir, REPLICA_CAPS)
            # HAProxy reaches the replicas from the bridge's address: its X-Forwarded-For
            # names the client (the clients' fair share and bounds count by it).
            config.update(
                addr=f"{host.address}:{REPLICA_PORT}",
                redisUrl=self.redis.url,
                trustedProxies=[f"{self.network.gateway}/32"],
            )
            self.configs.append(config)
            self.replicas.append(start(workdir, config, host.exec_prefix()))
        port = free_port()
        cfg = self.workdir / "haproxy.cfg"
        backends = [f"{host.address}:{REPLICA_PORT}" for host in self.network.hosts]
        cfg.write_text(haproxy_config(f"127.0.0.1:{port}", backends))
        with self.haproxy_log.open("ab") as log:
            self.haproxy = subprocess.Popen(
                ["haproxy", "-db", "-f", str(cfg)], stdout=log, stderr=subprocess.STDOUT
            )
        self.url = f"http://127.0.0.1:{port}"
        self.wait_whole()

    def ready(self, replica: Server) -> bool:
        try:
            return httpx.get(f"{replica.url}/readyz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_whole(self) -> None:
        """Every replica ready, and HAProxy sending to every one of them."""
        for replica in self.replicas:
            wait_until(lambda r=replica: self.ready(r), f"{replica.url} to be ready")
        wait_until(self.balancer_sees_all, "HAProxy to see every replica up")

    def balancer_sees_all(self) -> bool:
        """Every server's latest state change in HAProxy's log is UP (or it never went down)."""
        states: dict[str, str] = {}
        for line in self.haproxy_log.read_text(errors="replace").splitlines():
            if match := re.search(r"Server replicas/(\w+) is (UP|DOWN)", line):
                states[match[1]] = match[2]
        try:
            served = httpx.get(f"{self.url}/healthz", timeout=5).status_code == 200
        except httpx.HTTPError:
            served = False
        return served and all(state == "UP" for state in states.values())

    def haproxy_saw(self, server: str, state: str) -> bool:
        return self.haproxy_count(server, state) > 0

    def haproxy_count(self, server: str, state: str) -> int:
        """How often HAProxy's log says `server` went `state` (UP or DOWN)."""
        text = self.haproxy_log.read_text(errors="replace")
        return text.count(f"Server replicas/{server} is {state}")

    def restart(self, index: int) -> Server:
        host, config = self.network.hosts[index], self.configs[index]
        self.replicas[index] = start(self.replicas[index].workdir, config, host.exec_prefix())
        return self.replicas[index]

    def stop(self) -> list[str]:
        """Stop everything this run started and remove its network; return what failed."""
        problems = []
        if self.haproxy is not None and self.haproxy.poll() is None:
            self.haproxy.terminate()
            try:
                self.haproxy.wait(30)
            except subprocess.TimeoutExpired:
                self.haproxy.kill()
                self.haproxy.wait()
        for replica in self.replicas:
            code = replica.stop(timeout=STOP_SECONDS)
            if code != 0:
                problems.append(f"replica {replica.url} exited with {code} on SIGTERM")
        if self.redis is not None:
            self.redis.stop()
        problems += self.network.remove()
        return problems


async def worker(
    client: httpx.AsyncClient,
    url: str,
    budget: run.Budget,
    seen: Seen,
    seed: int,
    heavy: trio.Semaphore,
) -> None:
    """load.run's worker, with the time each answer was in flight."""
    rng = random.Random(seed)
    programs = mix.corpus()
    big = mix.static_8mb_source()
    deadline = trio.current_time() + budget.seconds
    kinds, weights = list(mix.MIX), list(mix.MIX.values())
    # The load goes on until every disruption is over, so that each one meets requests.
    while (
        trio.current_time() < deadline or not seen.chaos_done
    ) and seen.issued < budget.max_requests:
        seen.issued += 1
        kind = rng.choices(kinds, weights)[0]
        request = mix.make_request(kind, rng, programs, big)
        started = time.monotonic()
        if kind == "disconnect":
            answer = await run.hang_up(url, request, rng.choice(run.HANG_UPS))
        elif kind in mix.HEAVY:
            async with heavy:
                answer = await run.send(client, request, kind == "oversize" and rng.random() < 0.5)
        else:
            answer = await run.send(client, request)
        seen.answers.append(Timed(started, time.monotonic(), answer))
        if answer.status == 503 and answer.retry_after:
            # As a client should: wait as told, rather than spend the request budget on a
            # cluster that cannot take it now.
            await trio.sleep(min(float(answer.retry_after), RETRY_AFTER_MAX))


async def chaos(cluster: Cluster, seconds: float, seen: Seen) -> None:
    """A replica drained (SIGTERM) and restarted, another SIGKILLed and restarted, a link cut,
    Redis stopped: a quarter of the run apart."""
    await trio.sleep(seconds / 8)
    await drain(cluster, 0, seen)

    await trio.sleep(seconds / 8)
    victim = cluster.replicas[1]
    window = Window("SIGKILL replica2", time.monotonic())
    seen.windows.append(window)
    victim.proc.send_signal(signal.SIGKILL)
    await trio.to_thread.run_sync(victim.proc.wait)
    window.repaired = time.monotonic()
    restarted = await trio.to_thread.run_sync(cluster.restart, 1)
    await trio.to_thread.run_sync(cluster.wait_whole)
    window.ended = time.monotonic()
    recovered = [
        e for e in restarted.log_events() if e.get("event") == "cleaned up after an earlier run"
    ]
    seen.notes.append(f"replica2 restarted; recovery events: {len(recovered)}")

    await trio.sleep(seconds / 8)
    host = cluster.network.hosts[2]
    window = Window("link of replica3 cut", time.monotonic())
    seen.windows.append(window)
    host.cut()
    try:
        await trio.to_thread.run_sync(
            wait_until,
            lambda: cluster.haproxy_saw("replica3", "DOWN"),
            "HAProxy to take replica3 out",
        )
        await trio.sleep(OUTAGE_SECONDS)
    finally:
        host.mend()
        window.repaired = time.monotonic()
    await trio.to_thread.run_sync(cluster.wait_whole)
    window.ended = time.monotonic()

    await trio.sleep(seconds / 8)
    assert cluster.redis is not None
    window = Window("Redis stopped", time.monotonic())
    seen.windows.append(window)
    downs = cluster.haproxy_count("replica3", "DOWN")
    await trio.to_thread.run_sync(cluster.redis.stop)
    async with trio.open_nursery() as probes:
        probes.start_soon(probe_outage, cluster, seen)
        probes.start_soon(start_without_store, cluster, 2, downs, seen)
        await trio.sleep(OUTAGE_SECONDS)
    await trio.to_thread.run_sync(cluster.redis.start)
    window.repaired = time.monotonic()
    await trio.to_thread.run_sync(cluster.wait_whole)
    window.ended = time.monotonic()
    seen.chaos_done = True


async def drain(cluster: Cluster, index: int, seen: Seen) -> None:
    """SIGTERM a replica under load, as an operator stops one: it exits by itself with status
    0 and nothing left behind, HAProxy takes it out, and (judged with the answers) every request
    HAProxy could replay got its answer elsewhere. Then it starts again."""
    name = f"replica{index + 1}"
    replica = cluster.replicas[index]
    # Stopped while it compiles, so that there is something in flight to drain.
    await trio.to_thread.run_sync(
        wait_until,
        lambda: replica.leftovers(staging=True)["job_dirs"],
        f"a compile running on {name}",
    )
    window = Window(f"SIGTERM {name} (drain)", time.monotonic())
    seen.windows.append(window)
    code = await trio.to_thread.run_sync(partial(replica.stop, timeout=WAIT_SECONDS))
    window.repaired = time.monotonic()
    if code != 0:
        seen.drain_failures.append(
            f"{name} exited with {code} on SIGTERM (-9: still running after {WAIT_SECONDS:.0f} s)"
        )
    events = replica.log_events()
    since = next((i for i, e in enumerate(events) if e.get("event") == "shutting down"), 0)
    refused = [
        e
        for e in events[since:]
        if e.get("path") in ("/compile", "/run") and e.get("status") == 503
    ]
    seen.notes.append(f"{name} answered 503 to {len(refused)} compile(s) while it drained")
    left = replica.leftovers(staging=True)
    seen.drain_failures += [
        f"{name} left {what}: {x}" for what, items in left.items() for x in items
    ]
    if not any(e.get("event") == "stopped" for e in events):
        seen.drain_failures.append(f"{name} did not log that it stopped")
    await trio.to_thread.run_sync(
        wait_until, lambda: cluster.haproxy_saw(name, "DOWN"), f"HAProxy to take {name} out"
    )
    await trio.to_thread.run_sync(cluster.restart, index)
    await trio.to_thread.run_sync(cluster.wait_whole)
    window.ended = time.monotonic()
    seen.notes.append(f"{name} restarted")


async def start_without_store(cluster: Cluster, index: int, downs: int, seen: Seen) -> None:
    """A replica (re)started while Redis is down starts, says it is not ready, and becomes
    ready by itself once Redis is back (`wait_whole` after the outage waits for that).
    `downs`: how often HAProxy had taken it out before Redis stopped."""
    name = f"replica{index + 1}"
    # Once HAProxy has taken it out (not ready: no Redis), as an operator would restart it.
    # Before that, the connections it refuses while it restarts would be retried on it alone
    # (the other replicas are out too), and HAProxy 2.6 closes a keep-alive connection whose
    # retries all failed without an answer.
    await trio.to_thread.run_sync(
        wait_until,
        lambda: cluster.haproxy_count(name, "DOWN") > downs,
        f"HAProxy to take {name} out",
    )
    code = await trio.to_thread.run_sync(
        partial(cluster.replicas[index].stop, timeout=STOP_SECONDS)
    )
    if code != 0:
        seen.probe_failures.append(f"{name} exited with {code} on SIGTERM")
    replica = await trio.to_thread.run_sync(cluster.restart, index)
    response = await trio.to_thread.run_sync(
        partial(httpx.get, f"{replica.url}/readyz", timeout=run.CLIENT_TIMEOUT)
    )
    if response.status_code != 503 or "store is unreachable" not in response.text:
        seen.probe_failures.append(
            f"{name} started without Redis: /readyz {response.status_code} {response.text[:200]}"
        )
    seen.notes.append(f"{name} restarted while Redis was down")


async def probe_outage(cluster: Cluster, seen: Seen) -> None:
    """With Redis down: a compile on a replica and through HAProxy, an artifact read and
    /readyz are each a JSON 503 with Retry-After (one after the other: the failed compile is
    what tells the replica, if its ping has not yet)."""
    stored = next((t.answer for t in seen.answers if t.answer.status == 200), None)
    replica = cluster.replicas[0].url
    probes = [
        ("compile on replica1", "POST", f"{replica}/compile"),
        ("compile via HAProxy", "POST", f"{cluster.url}/compile"),
        ("readyz on replica1", "GET", f"{replica}/readyz"),
    ]
    if stored is not None:
        probes.append(("artifact on replica1", "GET", replica + str(stored.body["js"])))
    async with httpx.AsyncClient(timeout=run.CLIENT_TIMEOUT) as client:
        for what, method, url in probes:
            body = unique_program(what) if method == "POST" else None
            response = await client.request(method, url, content=body)
            if response.status_code != 503 or "retry-after" not in response.headers:
                seen.probe_failures.append(f"{what}: {response.status_code} {response.text[:200]}")
            elif response.json().get("ok") is not False:
                seen.probe_failures.append(f"{what}: not a JSON error: {response.text[:200]}")
    seen.notes.append(f"Redis down: {len(probes)} probes")


async def drive(cluster: Cluster, budget: run.Budget, seed: int) -> Seen:
    seen = Seen()
    limits = httpx.Limits(max_connections=budget.workers + 2)
    with trio.move_on_after(budget.seconds + run.CLIENT_TIMEOUT + 120):
        async with (
            httpx.AsyncClient(
                base_url=cluster.url, timeout=run.CLIENT_TIMEOUT, limits=limits
            ) as client,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(chaos, cluster, budget.seconds, seen)
            heavy = trio.Semaphore(1)
            for i in range(budget.workers):
                nursery.start_soon(worker, client, cluster.url, budget, seen, seed + i, heavy)
    return seen


def in_window(timed: Timed, windows: list[Window], *whats: str, faulty: bool = False) -> bool:
    """Whether `timed` overlapped a disruption (`faulty`: while the fault itself lasted)."""
    return any(
        timed.started <= (w.repaired if faulty else w.ended) and timed.ended >= w.started
        for w in windows
        if not whats or w.what.startswith(whats)
    )


def judge(timed: Timed, windows: list[Window]) -> str | None:
    """load.mix's verdict, except for the documented answers of a disruption: a 503 with
    Retry-After until the cluster is whole again, and a failed request (502, 504, a closed
    connection) in flight while a replica was dead or cut off, or, while one drained, a request
    too big for HAProxy to replay (over tune.bufsize). A draining replica's own 503 must never
    reach the client for a request HAProxy can replay."""
    answer = timed.answer
    draining = answer.status == 503 and "shutting down" in str(answer.body.get("error"))
    if draining and answer.kind not in mix.HEAVY:
        return "a draining replica's 503 reached the client: HAProxy should have replayed it"
    why = mix.judge(answer)
    if why is None:
        return None
    if answer.status == 503 and answer.retry_after and in_window(timed, windows):
        return None
    failed = answer.status in (502, 504, -1)
    if failed and in_window(timed, windows, "SIGKILL", "link", faulty=True):
        return None
    if failed and answer.kind in mix.HEAVY and in_window(timed, windows, "SIGTERM", faulty=True):
        return None
    return why


def compile_count(replica: Server) -> float:
    metrics = httpx.get(f"{replica.url}/metrics", timeout=10).text
    return run.metric_value(metrics, "emcc_trio_compile_duration_seconds_count")


def unique_program(tag: str) -> bytes:
    program = mix.corpus()[0]
    code = f"{program.code}\n// cluster {tag} {secrets.token_hex(8)}\n"
    return json.dumps({"type": program.kind, "code": code, "args": [mix.RUNNABLE]}).encode()


async def identical_at_once(cluster: Cluster) -> run.Check:
    """6 identical requests at once, 2 on each replica: one compile in the whole cluster."""
    body = unique_program("six")
    before = sum(compile_count(r) for r in cluster.replicas)
    answers: list[httpx.Response] = []

    async def one(url: str) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=run.CLIENT_TIMEOUT) as client:
            answers.append(await client.post("/compile", content=body))

    async with trio.open_nursery() as nursery:
        for replica in cluster.replicas * 2:
            nursery.start_soon(one, replica.url)
    after = sum(compile_count(r) for r in cluster.replicas)
    ids = {a.json().get("id") for a in answers}
    failures = [f"{a.status_code} {a.text[:200]}" for a in answers if a.status_code != 200]
    if len(ids) != 1:
        failures.append(f"{len(ids)} different ids")
    if after - before != 1:
        failures.append(f"{after - before:.0f} compiles ran")
    return run.Check(
        "6 identical at once on 3 replicas: 1 compile", f"{after - before:.0f}", failures
    )


def cache_across_replicas(cluster: Cluster) -> run.Check:
    """A compile on one replica is a cache hit on the others, with the same id."""
    body = unique_program("cache")
    first, *others = cluster.replicas
    built = httpx.post(f"{first.url}/compile", content=body, timeout=run.CLIENT_TIMEOUT)
    failures = [] if built.status_code == 200 else [f"compile: {built.text[:200]}"]
    hits = 0
    for replica in others:
        again = httpx.post(f"{replica.url}/compile", content=body, timeout=run.CLIENT_TIMEOUT)
        body_again = again.json()
        if (
            again.status_code == 200
            and body_again.get("cached")
            and (body_again.get("id") == built.json().get("id"))
        ):
            hits += 1
        else:
            failures.append(f"{replica.url}: {again.status_code} {again.text[:200]}")
    return run.Check("cache hits across replicas", f"{hits} of {len(others)}", failures)


def served_hits(seen: Seen) -> run.Check:
    """Through HAProxy: repeats answered from the cache, and by how many replicas."""
    hits = [t.answer for t in seen.answers if t.answer.body.get("cached") is True]
    return run.Check("cache hits through HAProxy", str(len(hits)), [] if hits else ["no hit"])


def artifacts_run(cluster: Cluster, seen: Seen, scratch: Path) -> run.Check:
    """Every compile's artifacts, fetched through HAProxy, run under node. A run's artifacts
    are built for the server's runner (MODULARIZE, no auto-run) and judged by its run body."""
    expected = mix.expected_lines()
    by_id = {
        str(t.answer.body["id"]): t.answer
        for t in seen.answers
        if t.answer.status == 200 and t.answer.body.get("ok") and t.answer.kind not in mix.RUNS
    }
    failures = []
    for job_id, answer in by_id.items():
        out = scratch / job_id
        out.mkdir(exist_ok=True)
        for key, name in (("js", "app.js"), ("wasm", "app.wasm")):
            fetched = httpx.get(cluster.url + str(answer.body[key]), timeout=60)
            if fetched.status_code != 200:
                failures.append(f"{answer.body[key]}: {fetched.status_code}")
            (out / name).write_bytes(fetched.content)
        ran = subprocess.run(
            ["node", str(run.RUN_ARTIFACT_JS), str(out / "app.js"), str(out / "app.wasm")],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        printed = ran.stdout.strip()
        if ran.returncode != 0 or not (printed in expected or printed.startswith("big ")):
            failures.append(f"{job_id} printed {printed!r} {ran.stderr[:200]!r}")
        shutil.rmtree(out, ignore_errors=True)
    return run.Check("every compile's artifacts run under node", str(len(by_id)), failures)


def framing(cluster: Cluster) -> run.Check:
    """Requests with ambiguous framing, each with a request hidden after it (see
    emcc_trio.testing.framing). Sent to a replica directly: one answer, a 400, and the
    connection closed. Through HAProxy: the first answer a 400, and no replica ever answers a
    request that HAProxy did not parse as a request of its own (HAProxy frames a request with
    both headers by its chunks and closes after it, and merges equal Content-Lengths: then the
    hidden request is simply the client's next one, seen and logged by HAProxy)."""
    url = urlsplit(cluster.url)
    assert url.hostname is not None
    assert url.port is not None
    routes = {"direct": cluster.replicas[0].address, "HAProxy": (url.hostname, url.port)}
    failures = []
    probes = 0
    for route, address in routes.items():
        for name in ambiguous_requests(b""):
            token = secrets.token_hex(16)
            hidden = f"GET /artifacts/{token}/app.js HTTP/1.1\r\nHost: test\r\n\r\n".encode()
            probes += 1
            try:
                answers = statuses(exchange(address, ambiguous_requests(hidden)[name], 30))
            except OSError as exc:
                failures.append(f"{route}, {name}: {exc!r}")
                continue
            if answers[:1] != [b"400"] or (route == "direct" and answers != [b"400"]):
                failures.append(f"{route}, {name}: answers {answers}")
            if not any(token in replica.log() for replica in cluster.replicas):
                continue
            if route == "direct":
                failures.append(f"direct, {name}: the hidden request was answered")
                continue
            try:
                wait_until(
                    lambda t=token: t in cluster.haproxy_log.read_text(errors="replace"),
                    "HAProxy to log the hidden request",
                    timeout=10,
                )
            except RuntimeError:
                failures.append(f"HAProxy, {name}: a replica answered a request HAProxy never saw")
    return run.Check("ambiguous framing: a 400, no hidden request answered", str(probes), failures)


def leftovers(cluster: Cluster) -> run.Check:
    found: list[str] = []
    for replica in cluster.replicas:
        replica.settle_memos()
        end = time.monotonic() + run.LEFTOVER_GRACE
        while any((left := replica.leftovers(staging=True)).values()) and time.monotonic() < end:
            time.sleep(0.2)
        found += [f"{replica.url} {what}: {x}" for what, items in left.items() for x in items]
    if cluster.redis is not None:
        # Every holder released its lock (a killed one's expired long ago).
        locks = cluster.redis.cli("--scan", "--pattern", "emcc-trio:lock:*").split()
        found += [f"Redis lock: {lock}" for lock in locks]
    return run.Check("nothing left behind on any host or in Redis", str(len(found)), found)


def print_answers(seen: Seen, windows: list[Window]) -> None:
    counts = Counter((t.answer.kind, run._label(t.answer)) for t in seen.answers)
    print(f"\n{'kind':<12} answers")
    for kind in mix.MIX:
        shown = ", ".join(f"{label} x{n}" for (k, label), n in sorted(counts.items()) if k == kind)
        print(f"{kind:<12} {shown}")
    origin = min((t.started for t in seen.answers), default=0.0)
    print("\ndisruptions (seconds into the run: fault, repaired, whole again):")
    for window in windows:
        during = [t for t in seen.answers if in_window(t, [window])]
        statuses = Counter(str(t.answer.status) for t in during)
        times = [window.started, window.repaired, window.ended]
        shown = " ".join(f"{t - origin:5.1f}" for t in times)
        print(f"  {window.what:<24} {shown}  answers {dict(statuses)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to send (60)")
    parser.add_argument("--max-requests", type=int, default=300)
    parser.add_argument("--workers", type=int, default=6)
    parser.add_argument("--seed", type=int, default=20261125)
    parser.add_argument("--keep", action="store_true", help="keep the logs and working dirs")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("cluster: needs root (network namespaces, cgroups)", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="emcc-trio-cluster-"))
    workdir.chmod(0o711)
    cluster = Cluster(workdir)
    budget = run.Budget(args.seconds, args.max_requests, args.workers, 0)
    results: list[run.Check] = []
    seen = Seen()
    try:
        cluster.start()
        print(f"cluster: HAProxy {cluster.url}, replicas {[r.url for r in cluster.replicas]}")
        print(f"sending for {budget.seconds:.0f} s, at most {budget.max_requests} requests")
        seen = trio.run(drive, cluster, budget, args.seed)
        cluster.wait_whole()
        broken = [
            f"{t.answer.kind}: {why}" for t in seen.answers if (why := judge(t, seen.windows))
        ]
        results.append(
            run.Check(
                "answers as promised",
                f"{len(seen.answers) - len(broken)}/{len(seen.answers)}",
                broken,
            )
        )
        outcomes = [w for w in seen.windows if w.ended != float("inf")]
        drained = any(w.what.startswith("SIGTERM") for w in outcomes)
        results.append(
            run.Check(
                "disruptions ended, cluster whole again",
                f"{len(outcomes)} of 4",
                [] if len(outcomes) == 4 else ["a disruption did not end"],
            )
        )
        results.append(
            run.Check(
                "SIGTERM: replica1 drained, exited 0, nothing left",
                "drained" if drained else "not drained",
                seen.drain_failures if drained else ["the drain did not happen"],
            )
        )
        results.append(
            run.Check(
                "HAProxy took the cut replica out and back in",
                str(cluster.haproxy_saw("replica3", "DOWN")),
                [] if cluster.haproxy_saw("replica3", "DOWN") else ["replica3 never went DOWN"],
            )
        )
        results.append(
            run.Check(
                "Redis down: every probe 503 + Retry-After",
                "probed" if seen.chaos_done else "not probed",
                seen.probe_failures if seen.chaos_done else ["the outage was not probed"],
            )
        )
        results.append(served_hits(seen))
        results.append(artifacts_run(cluster, seen, workdir))
        results.append(cache_across_replicas(cluster))
        results.append(trio.run(identical_at_once, cluster))
        results.append(framing(cluster))
        results.append(leftovers(cluster))
    except (Exception, SystemExit) as exc:  # load.server.start exits when a server does
        results.append(run.Check("the run", "crashed", [repr(exc)]))
    finally:
        problems = cluster.stop()
    results.append(run.Check("everything stopped and removed", str(len(problems)), problems))
    print_answers(seen, seen.windows)
    for note in seen.notes:
        print(note)
    run.print_checks(results)
    failures = [f"{c.name}: {f}" for c in results for f in c.failures]
    for failure in failures:
        print(f"FAIL {failure}")
    if failures or args.keep:
        print(f"kept {workdir} (replica*/server.log, haproxy.log, redis/redis.log)")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    print("cluster: OK" if not failures else f"cluster: {len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
