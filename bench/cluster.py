"""`nox -s bench -- --cluster`: 2 replicas sharing Redis behind HAProxy vs 1, in one run.

Both setups run at once on this machine: Redis, two replicas on loopback, and two HAProxy
instances with deploy/haproxy.cfg, one sending to replica 1 only, one to both. Measured in
turns (one setup, then the other, round after round) so drift hits both alike:
- cache hits: one identical compile request, repeated by wrk (C, keep-alive connections)
  for a few seconds; hits per second;
- cold compiles: the load corpus with a unique comment each (never a hit), `concurrency` at
  once; compiles per second.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx

from emcc_trio.testing.harness import Server
from load.cluster import FALLBACK_SERVER, free_port, haproxy_config
from load.server import start

REPO = Path(__file__).resolve().parent.parent
CORPUS_DIR = REPO / "load" / "corpus"
HIT_BODY = {"type": "c", "code": '#include <stdio.h>\nint main(void){puts("cached");}\n'}
# Enough to keep two replicas busy: with 8 connections each, each replica's event loop wakes for
# fewer requests at a time and spends more CPU per hit (2 replicas got 1.6x the hits of 1 at 16
# connections, 1.9x at 64); one replica is saturated from 16 on (575 hits/s at 16, 561 at 64).
HIT_CONNECTIONS = 64
WRK_SCRIPT = """wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
"""


@contextmanager
def redis(workdir: Path) -> Iterator[str]:
    port = free_port()
    command = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
    proc = subprocess.Popen(
        [*command, "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        end = time.monotonic() + 30
        while (
            subprocess.run(
                ["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True, check=False
            ).stdout.strip()
            != "PONG"
        ):
            if time.monotonic() > end:
                raise SystemExit("redis-server did not start")
            time.sleep(0.1)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.kill()
        proc.wait()


@contextmanager
def haproxy(workdir: Path, name: str, backends: Sequence[str]) -> Iterator[str]:
    """deploy/haproxy.cfg on a loopback port, sending to `backends` (host:port)."""
    port = free_port()
    config = workdir / f"{name}.cfg"
    config.write_text(haproxy_config(f"127.0.0.1:{port}", backends, access_log=False))
    proc = subprocess.Popen(
        ["haproxy", "-db", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        end = time.monotonic() + 30
        while not _serves_all(url, len(backends)):
            if time.monotonic() > end:
                raise SystemExit(f"HAProxy {name} did not come up")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def _serves_all(url: str, count: int) -> bool:
    """Every backend answers through HAProxy (its checks have passed)."""
    seen = set()
    try:
        for _ in range(4 * count):
            seen.add(httpx.get(f"{url}/healthz", timeout=5).headers.get("x-served-by"))
    except httpx.HTTPError:
        return False
    return len(seen - {None, FALLBACK_SERVER}) == count


def hits_per_second(url: str, seconds: float, connections: int, scratch: Path) -> float:
    first = httpx.post(f"{url}/compile", json=HIT_BODY, timeout=120)
    first.raise_for_status()
    script = scratch / "hit.lua"
    script.write_text(WRK_SCRIPT.format(body=json.dumps(json.dumps(HIT_BODY))))
    done = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{seconds:.0f}s",
            "-s",
            str(script),
            f"{url}/compile",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    if "Non-2xx" in done.stdout:
        raise SystemExit(f"cache hits answered non-2xx:\n{done.stdout}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", done.stdout)
    if match is None:
        raise SystemExit(f"cannot read wrk's output:\n{done.stdout}")
    return float(match[1])


def cold_per_second(url: str, compiles: int, concurrency: int) -> float:
    sources = sorted(CORPUS_DIR.iterdir())
    bodies = [
        {
            "type": "c" if path.suffix == ".c" else "cpp",
            "code": path.read_text() + f"\n// bench {secrets.token_hex(8)}\n",
        }
        for path in (sources[i % len(sources)] for i in range(compiles))
    ]

    def one(body: dict[str, str]) -> None:
        with httpx.Client(base_url=url, timeout=600) as client:
            answer = client.post("/compile", json=body)
            if answer.status_code != 200 or answer.json().get("cached"):
                raise SystemExit(f"cold compile failed: {answer.text[:300]}")

    with ThreadPoolExecutor(concurrency) as pool:
        start = time.perf_counter()
        list(pool.map(one, bodies))
        return compiles / (time.perf_counter() - start)


def run(quick: bool) -> None:
    rounds = 1 if quick else 3
    hit_seconds = 3.0 if quick else 5.0
    compiles = 8 if quick else 16
    base = Path(tempfile.mkdtemp(prefix="emcc-trio-bench-cluster-"))
    base.chmod(0o711)
    replicas: list[Server] = []
    try:
        with ExitStack() as stack:
            url = stack.enter_context(redis(base))
            for i in range(2):
                workdir = base / f"replica{i + 1}"
                workdir.mkdir()
                config = {
                    "workingDir": str(workdir),
                    "addr": "127.0.0.1:0",
                    "cgroupDriver": "auto",
                    "nsjailEnabled": True,
                    "redisUrl": url,
                    # wrk is one client with HIT_CONNECTIONS connections: above the default
                    # bound of 8.
                    "maxJobsPerClient": 2 * HIT_CONNECTIONS,
                }
                replicas.append(start(workdir, config))
            backends = [r.url.removeprefix("http://") for r in replicas]
            setups = {
                "1 replica": stack.enter_context(haproxy(base, "one", backends[:1])),
                "2 replicas": stack.enter_context(haproxy(base, "two", backends)),
            }
            hits: dict[str, list[float]] = {name: [] for name in setups}
            cold: dict[str, list[float]] = {name: [] for name in setups}
            for _ in range(rounds):
                for name, lb in setups.items():
                    hits[name].append(hits_per_second(lb, hit_seconds, HIT_CONNECTIONS, base))
                for name, lb in setups.items():
                    cold[name].append(cold_per_second(lb, compiles, 4))
    finally:
        for replica in replicas:
            replica.stop(timeout=30)
        shutil.rmtree(base, ignore_errors=True)
    print(
        f"\ncluster: HAProxy + Redis, {rounds} round(s); best of rounds"
        f" (cache hits: wrk, {HIT_CONNECTIONS} connections, {hit_seconds:.0f} s; cold: {compiles}"
        " corpus compiles, 4 at once)"
    )
    print(f"{'':<24} {'1 replica':>10} {'2 replicas':>11} {'ratio':>6}")
    for label, values in (("cache hits /s", hits), ("cold compiles /s", cold)):
        one, two = max(values["1 replica"]), max(values["2 replicas"])
        print(f"{label:<24} {one:>10.2f} {two:>11.2f} {two / one:>6.2f}")
