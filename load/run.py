"""A bounded load test that proves the caps hold: `nox -s load`, or `python -m load.run`.

Starts a real server with the top-level config.json (nsjail, cgroups, gating as configured
there; smaller caps from load.mix.LOAD_CAPS so bombs end quickly), sends a concurrent mix of
compiles, bombs, malformed requests and hang-ups for a bounded time and request count, then
checks what the service promises, prints a table and exits 1 on any failure.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import Any, Final

import attrs
import httpx
import trio

from emcc_trio.testing.harness import Server
from load import mix
from load.server import STOP_SECONDS, load_config, start

RUN_ARTIFACT_JS = mix.REPO / "tests" / "run_artifact.js"
# What "responsive" means: an event loop that a compile never blocks. Measured here at a p99
# of about 14 ms under full load; the bound is far above that so a slower machine passes too,
# and still fails a server whose loop stalls.
HEALTH_P99_MAX_MS = 1000.0
HEALTH_PERIOD = 0.1
# Kinds every run sends at least once (the first requests), for the checks that need them.
REQUIRED_KINDS: Final = (
    "normal",
    "bomb_memory",
    "bomb_flood",
    "malformed",
    "run",
    "run_memory",
    "port",
)
HEALTH_TIMEOUT = 5.0
RSS_GROWTH_MAX_MB = 150.0
HANG_UP_AFTER = 0.3
LEFTOVER_GRACE = 10.0  # a job's cleanup may still be running when its answer arrives
# The longest a compile answer can take: queue wait, then the wall-clock cap, plus slack.
CLIENT_TIMEOUT = 30 + int(mix.LOAD_CAPS["jobTimeoutSeconds"]) + 30
ARTIFACTS_TO_RUN = 6
PORT_ARTIFACTS_TO_RUN = 2


@attrs.define
class Observed:
    """What the run saw; appended to by the workers and the watcher."""

    answers: list[mix.Answer] = attrs.Factory(list)
    health_ms: list[float] = attrs.Factory(list)
    health_errors: list[str] = attrs.Factory(list)
    rss_mb: list[float] = attrs.Factory(list)
    issued: int = 0
    finished_in_time: bool = False


@attrs.frozen
class Budget:
    seconds: float
    max_requests: int
    workers: int
    burst: int  # normal compiles sent at once, a third into the run (0: none)


async def _chunks(body: bytes, size: int = 1 << 16) -> AsyncIterator[bytes]:
    for offset in range(0, len(body), size):
        yield body[offset : offset + size]


async def send(
    client: httpx.AsyncClient, request: mix.Request, chunked: bool = False
) -> mix.Answer:
    """POST the request; `chunked` sends it without a Content-Length, so the server can only
    find out it is too big while reading it."""
    started = time.perf_counter()
    content: bytes | AsyncIterator[bytes] = _chunks(request.body) if chunked else request.body
    try:
        response = await client.post(
            request.path, content=content, headers={"Content-Type": "application/json"}
        )
    except httpx.HTTPError as exc:
        seconds = time.perf_counter() - started
        return mix.Answer(request.kind, -1, seconds, {"transport": repr(exc)}, None, request.names)
    seconds = time.perf_counter() - started
    try:
        body = response.json()
    except ValueError:
        body = {"not_json": response.text[:200]}
    retry_after = response.headers.get("retry-after")
    return mix.Answer(
        request.kind,
        response.status_code,
        seconds,
        body,
        retry_after,
        request.names,
        request.program,
    )


HANG_UPS = ("socket", "partial", "httpx")


async def hang_up(url: str, request: mix.Request, how: str) -> mix.Answer:
    """Send a compile and go away after HANG_UP_AFTER: a raw socket that closes after the
    whole request ("socket") or half its body ("partial"), or an httpx request that is
    cancelled; unless the server answers first (a full queue answers 503 at once). Each uses its
    own connection: a cancelled request can leave a pooled connection unusable, and a shared
    pool would then starve the other workers."""
    started = time.perf_counter()
    if how in ("socket", "partial"):
        target = httpx.URL(url)
        assert target.port is not None
        stream = await trio.open_tcp_stream(target.host, target.port)
        head = (
            f"POST /compile HTTP/1.1\r\nHost: {target.host}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(request.body)}\r\n\r\n"
        )
        body = request.body if how == "socket" else request.body[: len(request.body) // 2]
        async with stream:
            await stream.send_all(head.encode() + body)
            with trio.move_on_after(HANG_UP_AFTER):
                return _answer_before_hang_up(request, started, await _read_response(stream))
    else:
        async with httpx.AsyncClient(base_url=url) as client:
            with trio.move_on_after(HANG_UP_AFTER):
                response = await client.post("/compile", content=request.body)
                return _answer_before_hang_up(
                    request, started, (response.status_code, response.headers.get("retry-after"))
                )
    return mix.Answer(request.kind, None, time.perf_counter() - started, {})


async def _read_response(stream: trio.SocketStream) -> tuple[int, str | None]:
    """The status and Retry-After of the response head arriving on `stream`."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = await stream.receive_some()
        if not chunk:
            return -1, None  # closed without an answer: reported as a transport error
        received += chunk
    status_line, *header_lines = received.split(b"\r\n\r\n")[0].decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in header_lines if ": " in line)
    return int(status_line.split()[1]), headers.get("retry-after")


def _answer_before_hang_up(
    request: mix.Request, started: float, response: tuple[int, str | None]
) -> mix.Answer:
    """The server answered before the client went away (a full queue answers 503 at once)."""
    status, retry_after = response
    seconds = time.perf_counter() - started
    return mix.Answer(request.kind, status, seconds, {}, retry_after, request.names)


async def worker(
    client: httpx.AsyncClient,
    url: str,
    budget: Budget,
    seen: Observed,
    seed: int,
    heavy: trio.Semaphore,
    first: list[str],
) -> None:
    """Send mix requests until the deadline or the request budget: the kinds left in `first`
    (shared by the workers, so that each is sent however few requests a slow machine
    manages), then kinds drawn by their weights. `heavy` lets one
    multi-megabyte body be in flight at a time: the server briefly holds about three copies of
    a body while it parses it, so several at once would make the RSS check measure how they
    happened to coincide rather than whether memory leaks."""
    rng = random.Random(seed)
    programs = mix.corpus()
    big = mix.static_8mb_source()
    deadline = trio.current_time() + budget.seconds
    kinds, weights = list(mix.MIX), list(mix.MIX.values())
    while trio.current_time() < deadline and seen.issued < budget.max_requests:
        seen.issued += 1
        kind = first.pop() if first else rng.choices(kinds, weights)[0]
        request = mix.make_request(kind, rng, programs, big)
        if kind == "disconnect":
            seen.answers.append(await hang_up(url, request, rng.choice(HANG_UPS)))
        elif kind in mix.HEAVY:
            async with heavy:
                chunked = kind == "oversize" and rng.random() < 0.5
                seen.answers.append(await send(client, request, chunked))
        else:
            seen.answers.append(await send(client, request))


async def burst(url: str, size: int, seen: Observed, seed: int) -> None:
    """`size` normal compiles at once, more than the queue holds: the overflow must get a 503
    with Retry-After (and /healthz must stay fast while the queue is full)."""
    rng = random.Random(seed)
    programs = mix.corpus()
    requests = [mix.make_request("normal", rng, programs, "") for _ in range(size)]
    limits = httpx.Limits(max_connections=size)
    async with httpx.AsyncClient(base_url=url, timeout=CLIENT_TIMEOUT, limits=limits) as client:

        async def one(request: mix.Request) -> None:
            answer = await send(client, request)
            seen.answers.append(attrs.evolve(answer, kind="burst"))

        async with trio.open_nursery() as nursery:
            for request in requests:
                nursery.start_soon(one, request)


async def watch(url: str, server: Server, seen: Observed, done: trio.Event) -> None:
    """Probe /healthz and sample the server's RSS every HEALTH_PERIOD until `done`."""
    async with httpx.AsyncClient(base_url=url, timeout=HEALTH_TIMEOUT) as client:
        while not done.is_set():
            seen.rss_mb.append(server.rss_mb())
            started = time.perf_counter()
            try:
                response = await client.get("/healthz")
                ok = response.status_code == 200 and response.text == "ok"
                problem = "" if ok else f"{response.status_code} {response.text[:80]}"
            except httpx.HTTPError as exc:
                problem = repr(exc)
            elapsed = (time.perf_counter() - started) * 1000
            # A failed probe counts as the worst case, so it cannot flatter the percentiles.
            seen.health_ms.append(HEALTH_TIMEOUT * 1000 if problem else elapsed)
            if problem:
                seen.health_errors.append(problem)
            await trio.sleep(HEALTH_PERIOD)


async def drive(server: Server, budget: Budget, seed: int) -> tuple[Observed, str]:
    """Run the mix; return what was seen and the /metrics text scraped at the end."""
    seen = Observed()
    limits = httpx.Limits(max_connections=budget.workers + 2)
    # Bounded whatever happens: issuing stops at the deadline, and every answer is bounded.
    with trio.move_on_after(budget.seconds + CLIENT_TIMEOUT + 30):
        async with httpx.AsyncClient(
            base_url=server.url, timeout=CLIENT_TIMEOUT, limits=limits
        ) as client:
            done = trio.Event()
            heavy = trio.Semaphore(1)
            first = list(REQUIRED_KINDS)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch, server.url, server, seen, done)
                async with trio.open_nursery() as workers:
                    for i in range(budget.workers):
                        workers.start_soon(
                            worker, client, server.url, budget, seen, seed + i, heavy, first
                        )
                    if budget.burst:
                        await trio.sleep(budget.seconds / 3)
                        workers.start_soon(burst, server.url, budget.burst, seen, seed - 1)
                done.set()
            metrics = (await client.get("/metrics")).text
            seen.finished_in_time = True
            return seen, metrics
    return seen, ""


def percentile(values: Iterable[float], fraction: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def run_artifacts(url: str, answers: list[mix.Answer], scratch: Path) -> tuple[int, list[str]]:
    """Run a few normal and port compiles' artifacts under node: (how many ran, failures)."""
    expected = mix.expected_lines()
    ok = [a for a in answers if a.status == 200]
    # The port compiles' too (a few), so a port's artifact is proven to run as well.
    chosen = [a for a in ok if a.kind == "normal"][:ARTIFACTS_TO_RUN]
    chosen += [a for a in ok if a.kind == "port"][:PORT_ARTIFACTS_TO_RUN]
    failures = []
    for answer in chosen:
        out = scratch / str(answer.body["id"])
        out.mkdir(exist_ok=True)
        for key, name in (("js", "app.js"), ("wasm", "app.wasm")):
            fetched = httpx.get(url + str(answer.body[key]), timeout=30)
            if fetched.status_code != 200:
                failures.append(f"artifact {answer.body[key]}: {fetched.status_code}")
            (out / name).write_bytes(fetched.content)
        ran = subprocess.run(
            ["node", str(RUN_ARTIFACT_JS), str(out / "app.js"), str(out / "app.wasm")],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if ran.returncode != 0 or ran.stdout.strip() not in expected:
            failures.append(f"artifact {answer.body['id']} printed {ran.stdout!r} {ran.stderr!r}")
    return len(chosen), failures


def wait_for_no_leftovers(server: Server) -> dict[str, list[str]]:
    server.settle_memos()
    end = time.monotonic() + LEFTOVER_GRACE
    while any((found := server.leftovers(staging=True)).values()) and time.monotonic() < end:
        time.sleep(0.2)
    return found


def print_kinds(answers: list[mix.Answer]) -> None:
    by_kind: dict[str, list[mix.Answer]] = defaultdict(list)
    for answer in answers:
        by_kind[answer.kind].append(answer)
    print(f"\n{'kind':<12} {'n':>4}  {'answers':<36} {'p50 s':>6} {'max s':>6} {'bad':>4}")
    for kind in [*mix.MIX, "burst"]:
        group = by_kind.get(kind, [])
        statuses = Counter(_label(a) for a in group)
        shown = ", ".join(f"{label} x{n}" for label, n in sorted(statuses.items()))
        times = [a.seconds for a in group] or [0.0]
        bad = sum(1 for a in group if mix.judge(a))
        print(
            f"{kind:<12} {len(group):>4}  {shown:<36} {statistics.median(times):>6.2f}"
            f" {max(times):>6.2f} {bad:>4}"
        )


def _label(answer: mix.Answer) -> str:
    if answer.status is None:
        return "hung up"
    if answer.status == 422:
        return f"422 {answer.body.get('limit')}"
    ran = answer.body.get("run")
    if answer.status == 200 and isinstance(ran, dict):
        return f"200 run {ran.get('limit') or 'exited'}"
    if answer.kind == "repeat" and answer.status == 200 and "cached" in answer.body:
        return "200 cached" if answer.body["cached"] else "200 compiled"
    return str(answer.status)


def metric_lines(metrics: str) -> list[str]:
    """The few /metrics series worth printing (non-zero ones)."""
    wanted = (
        "emcc_trio_requests_total",
        "emcc_trio_cap_kills_total",
        "emcc_trio_cancellations_total",
        "emcc_trio_cache_requests_total",
        "emcc_trio_queue_waiting",
        "emcc_trio_jobs_running",
    )
    gauges = ("emcc_trio_queue_waiting", "emcc_trio_jobs_running")
    lines = []
    for line in metrics.splitlines():
        # Zero counters are noise; the gauges are worth seeing at zero (nothing stuck).
        if line.startswith(wanted) and (line.startswith(gauges) or not line.endswith(" 0.0")):
            lines.append(line)
    return lines


def metric_value(metrics: str, series: str) -> float:
    """One sample of the Prometheus text, e.g. `emcc_trio_cap_kills_total{limit="cpu"}`."""
    for line in metrics.splitlines():
        if line.startswith(series + " "):
            return float(line.removeprefix(series + " "))
    return 0.0


def cap_kill_count(metrics: str, limit: str) -> float:
    return metric_value(metrics, f'emcc_trio_cap_kills_total{{limit="{limit}"}}')


@attrs.frozen
class Check:
    name: str
    shown: str
    failures: list[str]


def checks(seen: Observed, metrics: str) -> list[Check]:
    answers = seen.answers
    kinds = Counter(a.kind for a in answers)
    broken = [f"{a.kind}: {why}" for a in answers if (why := mix.judge(a))]
    p50, p99 = percentile(seen.health_ms, 0.5), percentile(seen.health_ms, 0.99)
    rss = seen.rss_mb or [0.0]
    growth = max(rss) - rss[0]
    peaks = [
        int(a.body["usage"]["peakMemoryBytes"])
        for a in answers
        if isinstance(a.body.get("usage"), dict) and a.body["usage"].get("peakMemoryBytes")
    ]
    memory_422 = sum(1 for a in answers if a.status == 422 and a.body.get("limit") == "memory")
    result = [
        Check("run finished within its bound", str(seen.finished_in_time), []),
        Check("answers as promised", f"{len(answers) - len(broken)}/{len(answers)}", broken),
        Check(
            "peak job memory <= jobMemoryMaxMB",
            f"max {max(peaks, default=0) / 2**20:.0f} MB of {mix.LOAD_CAPS['jobMemoryMaxMB']}",
            [],  # each answer's peak is judged above
        ),
        Check(
            "/healthz p50 / p99",
            f"{p50:.1f} / {p99:.1f} ms ({len(seen.health_ms)} probes)",
            [f"/healthz p99 {p99:.0f} ms > {HEALTH_P99_MAX_MS:.0f} ms"]
            if p99 > HEALTH_P99_MAX_MS
            else [],
        ),
        Check("/healthz errors", str(len(seen.health_errors)), seen.health_errors[:5]),
        Check(
            "server RSS",
            f"{rss[0]:.0f} -> max {max(rss):.0f}, end {rss[-1]:.0f} MB (+{growth:.0f})",
            [f"server RSS grew {growth:.0f} MB > {RSS_GROWTH_MAX_MB:.0f}"]
            if growth > RSS_GROWTH_MAX_MB
            else [],
        ),
        Check(
            "memory cap kills in /metrics >= 422 memory answers",
            f"{cap_kill_count(metrics, 'memory'):.0f} >= {memory_422}",
            ["/metrics counts fewer memory cap kills than were answered"]
            if cap_kill_count(metrics, "memory") < memory_422
            else [],
        ),
    ]
    overflow = [a for a in answers if a.kind == "burst" and a.status == 503]
    result.append(
        Check(
            "burst: overflow answered 503 + Retry-After",
            f"{len(overflow)} of {kinds['burst']}",
            ["the burst overflowed the queue but nothing got a 503"]
            if kinds["burst"] and not overflow
            else [],
        )
    )
    scraped = "emcc_trio_requests_total" in metrics
    result.append(
        Check("/metrics scraped at the end", str(scraped), [] if scraped else ["no metrics"])
    )
    missing = [k for k in REQUIRED_KINDS if not kinds[k]]
    if missing:
        result.append(Check("mix coverage", "", [f"no {k} request was sent" for k in missing]))
    return result


def log_checks(server: Server, answers: list[mix.Answer], metrics: str) -> list[Check]:
    """What the server's own log says: the driver in use, every hang-up seen, no errors;
    and that /metrics counts a cancellation for each hang-up that had a compile (one that
    hung up halfway through its body never had one)."""
    events = server.log_events()
    cancelled = sum(1 for e in events if e.get("status") == 499 and e.get("job"))
    counted = metric_value(metrics, 'emcc_trio_cancellations_total{cause="client"}')
    configured = next((e for e in events if e.get("event") == "configured"), {})
    hung_up = sum(1 for a in answers if a.status is None)
    logged_499 = sum(1 for e in events if e.get("status") == 499)
    loud = [json.dumps(e)[:200] for e in events if e.get("level") not in ("info", "debug")]
    return [
        Check(
            "server setup (cgroups, nsjail, gating)",
            f"{configured.get('cgroups')}, {'on' if configured.get('nsjail') else 'off'},"
            f" {configured.get('gating')}",
            [] if configured.get("cgroups") not in (None, "none") else ["no cgroup driver"],
        ),
        Check(
            "hang-ups logged as 499",
            f"{logged_499} of {hung_up}",
            [] if logged_499 == hung_up else [f"{hung_up} hang-ups, {logged_499} logged 499"],
        ),
        Check("log lines above info", str(len(loud)), loud[:5]),
        Check(
            "/metrics client cancellations = 499s with a job",
            f"{counted:.0f} = {cancelled}",
            [] if counted == cancelled else ["/metrics and the log disagree on cancellations"],
        ),
    ]


def print_checks(results: list[Check]) -> None:
    print(f"\n{'check':<50} {'result':<40} verdict")
    for check in results:
        verdict = "FAIL" if check.failures else "ok"
        print(f"{check.name:<50} {check.shown:<40} {verdict}")


def cache_check(answers: list[mix.Answer]) -> Check:
    """Repeats of one program are one compile: a cache hit, or a share of the compile in
    flight (single-flight), answers with the same id. Before the cache: nothing to check."""
    repeats = [a for a in answers if a.kind == "repeat" and a.status == 200]
    if not repeats or "cached" not in repeats[0].body:
        return Check("cache", 'not available (no "cached" in the answers)', [])
    hits = sum(1 for a in repeats if a.body.get("cached") is True)
    ids: dict[str, set[str]] = defaultdict(set)
    for answer in repeats:
        ids[answer.program].add(str(answer.body.get("id")))
    split = [
        f"{name} answered with {len(found)} ids" for name, found in ids.items() if len(found) > 1
    ]
    shown = f"{hits}/{len(repeats)} hits, {sum(map(len, ids.values()))} ids, {len(ids)} programs"
    return Check("cache: one id per repeated program", shown, split)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=90.0, help="how long to send (90)")
    parser.add_argument("--max-requests", type=int, default=600, help="at most this many (600)")
    parser.add_argument("--workers", type=int, default=8, help="concurrent clients (8)")
    parser.add_argument(
        "--burst",
        type=int,
        default=-1,
        help="compiles sent at once a third into the run (default: queueMax + CPUs + 16; 0: none)",
    )
    parser.add_argument("--seed", type=int, default=20261125)
    parser.add_argument("--keep", action="store_true", help="keep the server's working dir")
    return parser.parse_args(argv)


def burst_size(asked: int, config: Mapping[str, Any]) -> int:
    """More than can be running plus waiting, so some of the burst must be turned away."""
    if asked >= 0:
        return asked
    running = int(config.get("maxConcurrentJobs", 0)) or (os.cpu_count() or 1)
    return int(config.get("queueMax", 64)) + running + 16


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="emcc-trio-load-"))
    workdir.chmod(0o711)  # the jail's unprivileged outside user must traverse it
    config = load_config(workdir, mix.LOAD_CAPS)
    budget = Budget(args.seconds, args.max_requests, args.workers, burst_size(args.burst, config))
    server = start(workdir, config)
    print(
        f"server {server.url} pid {server.proc.pid} in {workdir}; caps {json.dumps(mix.LOAD_CAPS)}"
    )
    print(
        f"sending for {budget.seconds:.0f} s, at most {budget.max_requests} requests,"
        f" {budget.workers} at once, plus a burst of {budget.burst}"
    )
    failures: list[str] = []
    try:
        seen, metrics = trio.run(drive, server, budget, args.seed)
        ran, artifact_failures = run_artifacts(server.url, seen.answers, workdir)
        leftovers = wait_for_no_leftovers(server)
    finally:
        exit_code = server.stop(timeout=STOP_SECONDS)
    results = checks(seen, metrics) + log_checks(server, seen.answers, metrics)
    results.append(cache_check(seen.answers))
    results.append(Check(f"artifacts run under node ({ran})", "", artifact_failures))
    results.append(
        Check("nothing left behind", str(sum(map(len, leftovers.values()))), _flatten(leftovers))
    )
    results.append(
        Check("SIGTERM: server exits 0", str(exit_code), [] if exit_code == 0 else ["exit code"])
    )
    print_kinds(seen.answers)
    print_checks(results)
    print("\n/metrics at the end:")
    for line in metric_lines(metrics):
        print(f"  {line}")
    for check in results:
        failures += [f"{check.name}: {f}" for f in check.failures]
    print(f"\n{len(seen.answers)} requests")
    for failure in failures:
        print(f"FAIL {failure}")
    if not args.keep and not failures:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"kept {workdir} (server.log, config.json)")
    print("load: OK" if not failures else f"load: {len(failures)} failure(s)")
    return 1 if failures else 0


def _flatten(found: Mapping[str, list[str]]) -> list[str]:
    return [f"{what}: {item}" for what, items in found.items() for item in items]


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
