"""The service's figures side by side, in one run: `nox -s bench` (`-- --quick` for a short one).

1. Latency: raw emcc vs the server (cache off) with no caps, with cgroups, with cgroups +
   nsjail. Runs are interleaved (raw, then each server variant, round after round) so that
   drift on a noisy machine hits every column alike. Medians and ratios against raw emcc.
2. Throughput on the load test's corpus at concurrency 1, 2, 4, 8: the full sandbox (cache
   off) against the same number of raw emcc runs in parallel; compiles per second and ratio.
3. Cache hits: one identical request repeated; p50/p99 latency and hits per second.
4. Cache bookkeeping: the cost of one put (which evicts one entry) and one hit in a full
   result cache of 100, 10 000 and 100 000 entries, in a tmpfs. The index costs the same at
   every size (a full scan per put, as before, would cost ~1000 times more at 100 000).
5. Projects (`--projects`: only that): Lua 5.4 and zstd (bench.projects), at -O0 and -O2, a
   cold build through a fresh server (full sandbox) against one raw emcc call with every
   source, and a rebuild after a one-unit edit against the cold build. Each round is raw,
   cold, rebuild, with -DBENCH_RUN=<round> on both sides (no object of one round serves
   another); medians, their ratios and the targets (1.5x, 5x).

6. With `--cluster` (only that): 2 replicas sharing Redis behind HAProxy vs 1 (bench.cluster).
7. With `--hostile` (only that): an ordinary client alone and beside two hostile ones
   (bench.hostile).

Usage: python -m bench.bench [--quick] [--rounds N] [--bookkeeping-only] [--projects]
                             [--library lua5.4|libzstd]... [--cluster] [--hostile]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs
import httpx

from bench import cluster, hostile, projects
from emcc_trio.storage.cache import ResultCache
from emcc_trio.testing.harness import Server, build_units
from emcc_trio.testing.results import stored_result
from load.server import start

REPO = Path(__file__).resolve().parent.parent
CORPUS_DIR = REPO / "load" / "corpus"
DEFAULT_ARGS = ["-sINVOKE_RUN=0", "-sENVIRONMENT=web", "-sALLOW_MEMORY_GROWTH=1", "-sMODULARIZE=1"]
RAW_ENV = {"PATH": "/usr/bin:/bin", "NODE_PATH": "/usr/share/nodejs", "EMCC_SKIP_SANITY_CHECK": "1"}
PROGRAMS = {
    "hello.c -O0": ("c", '#include <stdio.h>\nint main(void){printf("hi\\n");}\n', []),
    "hello.cpp -O0": ("cpp", '#include <iostream>\nint main(){std::cout<<"hi"<<std::endl;}\n', []),
    "iostream.cpp -O2": (
        "cpp",
        '#include <iostream>\nint main(){std::cout<<"hi"<<std::endl;}\n',
        ["-O2"],
    ),
}
# The latency and throughput columns measure compiles, so the result cache must be off:
# otherwise every repeat after the first is a cache hit. (Drop this key to bench a server
# that predates the cache: unknown keys stop it at start.)
CACHE_OFF: Mapping[str, Any] = {"cacheEnabled": False}
# Issue 22's levers (the launcher, the JS memo, the PCHs), all off: the service as it was.
LEVERS_OFF: Mapping[str, Any] = {"emccLauncher": False, "glueMemoMaxMB": 0, "pchMaxMB": 0}
VARIANTS: dict[str, dict[str, Any]] = {
    "server, no caps": {"cgroupDriver": "none", "nsjailEnabled": False, **CACHE_OFF},
    "server + cgroup": {"cgroupDriver": "auto", "nsjailEnabled": False, **CACHE_OFF},
    "full sandbox, levers off": {
        "cgroupDriver": "auto",
        "nsjailEnabled": True,
        **CACHE_OFF,
        **LEVERS_OFF,
    },
    "full sandbox": {"cgroupDriver": "auto", "nsjailEnabled": True, **CACHE_OFF},
}
FULL_SANDBOX = "full sandbox"
CACHE_ON: dict[str, Any] = {"cgroupDriver": "auto", "nsjailEnabled": True}
CONCURRENCY = (1, 2, 4, 8)
BOOKKEEPING_SIZES = (100, 10_000, 100_000)
BOOKKEEPING_BATCHES = 5
# What the service must beat, as a ratio of medians: raw emcc / cold build, cold / rebuild.
PROJECT_TARGETS = {"cold": 1.5, "rebuild": 5.0}


@attrs.frozen
class Settings:
    rounds: int  # latency rounds
    per_level: int  # compiles per concurrency level, per side
    cache_requests: int
    bookkeeping_ops: int  # puts and hits per batch, per cache size
    project_rounds: int  # timed rounds of the projects table (after one to warm up)


SETTINGS = {
    False: Settings(
        rounds=10, per_level=24, cache_requests=500, bookkeeping_ops=2000, project_rounds=3
    ),
    True: Settings(
        rounds=3, per_level=8, cache_requests=150, bookkeeping_ops=500, project_rounds=1
    ),
}


@attrs.frozen
class Source:
    kind: str
    code: str
    args: Sequence[str] = ()


def corpus() -> list[Source]:
    return [
        Source("c" if p.suffix == ".c" else "cpp", p.read_text())
        for p in sorted(CORPUS_DIR.iterdir())
    ]


def timed(action: Callable[[], None]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def raw_command(scratch: Path, argv: Sequence[str]) -> None:
    """Run emcc (or em++) in `scratch` with the environment the service gives it."""
    done = subprocess.run(
        argv,
        cwd=scratch,
        capture_output=True,  # the server keeps warnings in its answer, not on a terminal
        check=False,
        env={**RAW_ENV, "HOME": str(scratch)},
    )
    if done.returncode != 0:
        raise SystemExit(f"raw {argv[0]} failed:\n{done.stderr.decode()}")


def raw_emcc(scratch: Path, source: Source) -> Callable[[], None]:
    """One raw emcc run, as the service would run it (same arguments and environment)."""
    scratch.mkdir(parents=True, exist_ok=True)
    path = scratch / ("main.c" if source.kind == "c" else "main.cpp")
    compiler = "emcc" if source.kind == "c" else "em++"

    def run() -> None:
        path.write_text(source.code)
        raw_command(scratch, [compiler, path.name, *DEFAULT_ARGS, *source.args, "-o", "app.js"])

    return run


def via_server(client: httpx.Client, source: Source) -> Callable[[], None]:
    return posting(client, {"type": source.kind, "code": source.code, "args": list(source.args)})


def posting(client: httpx.Client, body: Mapping[str, Any]) -> Callable[[], None]:
    """One compile request; anything but a 200 stops the bench."""

    def run() -> None:
        response = client.post("/compile", json=body)
        if response.status_code != 200:
            raise SystemExit(f"compile failed: {response.text}")

    return run


def distinct(source: Source, tag: str) -> Source:
    """The same program made another one (the service shares work between programs, never
    a compile): a comment after the code, so its preamble and settings stay the same."""
    return Source(source.kind, f"{source.code}// {tag}\n", source.args)


def settle(clients: Mapping[str, httpx.Client]) -> None:
    """Wait until no server has memo entries still to compute (their first compiles made
    them): the timed rounds then measure the memos warm, as a running service has them."""
    for client in clients.values():
        deadline = time.monotonic() + 300
        while "emcc_trio_memo_fills_pending 0.0" not in client.get("/metrics").text:
            if time.monotonic() > deadline:
                raise SystemExit("the memos' fills never finished")
            time.sleep(0.1)


def latency(clients: Mapping[str, httpx.Client], scratch: Path, rounds: int) -> None:
    rows = []
    for label, (kind, code, args) in PROGRAMS.items():
        program = Source(kind, code, args)
        names = ["raw emcc", *clients]
        for name in names:  # warm the page cache, the server and its memos
            run_one(name, clients, scratch, distinct(program, "warm-up"))
        settle(clients)
        samples: dict[str, list[float]] = {name: [] for name in names}
        for index in range(rounds):
            for name in names:
                source = distinct(program, f"round {index}")
                samples[name].append(
                    timed(functools.partial(run_one, name, clients, scratch, source))
                )
        raw = statistics.median(samples["raw emcc"])
        for name, values in samples.items():
            median = statistics.median(values)
            rows.append((label, name, median, min(values), median / raw))
    print(f"\nlatency, cache off, a distinct program each round ({rounds} rounds)")
    print(f"{'program':<18} {'pipeline':<26} {'median s':>9} {'min s':>7} {'ratio':>6}")
    for label, name, median, fastest, ratio in rows:
        print(f"{label:<18} {name:<26} {median:>9.3f} {fastest:>7.3f} {ratio:>6.2f}")


def run_one(name: str, clients: Mapping[str, httpx.Client], scratch: Path, source: Source) -> None:
    if name == "raw emcc":
        raw_emcc(scratch, source)()
    else:
        via_server(clients[name], source)()


def rate(jobs: Sequence[Callable[[], None]], concurrency: int) -> float:
    """Compiles per second running `jobs` with `concurrency` at once."""
    with ThreadPoolExecutor(concurrency) as pool:
        start = time.perf_counter()
        for future in [pool.submit(job) for job in jobs]:
            future.result()
        return len(jobs) / (time.perf_counter() - start)


def throughput(urls: Mapping[str, str], scratch: Path, per_level: int, opt: str) -> None:
    """The corpus at each concurrency, each compile a distinct program: the servers (cache
    off) vs raw emcc. The memos are warm from one pass over the corpus, as on a service that
    has seen such programs."""
    sources = [Source(s.kind, s.code, [opt]) for s in corpus()]
    work = [sources[i % len(sources)] for i in range(per_level)]
    warm = {name: httpx.Client(base_url=url, timeout=600) for name, url in urls.items()}
    try:
        for client in warm.values():
            for source in sources:
                via_server(client, distinct(source, "warm-up"))()
        settle(warm)
    finally:
        for client in warm.values():
            client.close()
    print(
        f"\nthroughput on the corpus ({len(sources)} programs, {opt}), {per_level} distinct "
        "compiles per cell, compiles/s and ratio to raw emcc"
    )
    print(f"{'concurrency':>11} {'raw emcc':>9}" + "".join(f" {name:>26}" for name in urls))
    for level in CONCURRENCY:
        jobs = [distinct(s, f"c{level}-{i}") for i, s in enumerate(work)]
        # Each raw job gets its own dir, like the server's job dirs.
        raw = rate([raw_emcc(scratch / f"c{level}-{i}", s) for i, s in enumerate(jobs)], level)
        cells = []
        for url in urls.values():
            # One client per job: httpx.Client is not meant to be shared across threads.
            clients = [httpx.Client(base_url=url, timeout=600) for _ in jobs]
            try:
                served = rate([via_server(c, s) for c, s in zip(clients, jobs, strict=True)], level)
            finally:
                for client in clients:
                    client.close()
            cells.append(f"{served:>9.2f} {served / raw:>5.2f}x")
        print(f"{level:>11} {raw:>9.2f}" + "".join(f" {cell:>26}" for cell in cells))


def cache_hits(url: str, requests: int) -> None:
    """One identical request repeated: sequential latency, then hits/s at concurrency 4."""
    body = {"type": "c", "code": '#include <stdio.h>\nint main(void){puts("cached");}\n'}
    with httpx.Client(base_url=url, timeout=120) as client:
        first = client.post("/compile", json=body).json()
        if "cached" not in first:
            print("\ncache: not available")
            return
        seconds = []
        for _ in range(requests):
            start = time.perf_counter()
            answer = client.post("/compile", json=body).json()
            seconds.append(time.perf_counter() - start)
            if answer.get("cached") is not True:
                raise SystemExit(f"expected a cache hit: {answer}")
    clients = [httpx.Client(base_url=url, timeout=120) for _ in range(4)]
    try:

        def hit(client: httpx.Client) -> None:
            for _ in range(requests // 4):
                client.post("/compile", json=body).raise_for_status()

        with ThreadPoolExecutor(4) as pool:
            start = time.perf_counter()
            list(pool.map(hit, clients))
            per_second = 4 * (requests // 4) / (time.perf_counter() - start)
    finally:
        for client in clients:
            client.close()
    ordered = sorted(seconds)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    print(f"\ncache hits ({requests} sequential, then {4 * (requests // 4)} at concurrency 4)")
    print(
        f"p50 {statistics.median(seconds) * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms,"
        f" {per_second:.0f} hits/s"
    )


def cache_bookkeeping(ops: int) -> None:
    """Microseconds per put and per hit in a full ResultCache of each size in
    BOOKKEEPING_SIZES. The batches go round the sizes, so that drift on a noisy machine hits
    every row alike; each row is its best batch."""
    shm = Path("/dev/shm")
    parent = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    with contextlib.ExitStack() as stack:
        caches = [
            FullCache.filled(Path(stack.enter_context(_bench_dir(parent))), entries)
            for entries in BOOKKEEPING_SIZES
        ]
        puts: list[list[float]] = [[] for _ in caches]
        hits: list[list[float]] = [[] for _ in caches]
        for _ in range(BOOKKEEPING_BATCHES):
            for full, put_seconds, hit_seconds in zip(caches, puts, hits, strict=True):
                put_seconds.append(full.put_seconds(ops) / ops * 1e6)
                hit_seconds.append(full.hit_seconds(ops) / ops * 1e6)
    where = "tmpfs" if parent else "the temp dir's file system"
    print(f"\ncache bookkeeping (full cache in {where}; best of {BOOKKEEPING_BATCHES} x {ops} ops)")
    print(f"{'entries':>8} {'put+evict us':>13} {'ratio':>6} {'hit us':>7} {'ratio':>6}")
    base_put, base_hit = min(puts[0]), min(hits[0])
    for entries, put_us, hit_us in zip(BOOKKEEPING_SIZES, puts, hits, strict=True):
        put, hit = min(put_us), min(hit_us)
        ratios = f"{put / base_put:>6.2f} {hit:>7.1f} {hit / base_hit:>6.2f}"
        print(f"{entries:>8} {put:>13.1f} {ratios}")


def _bench_dir(parent: Path | None) -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="emcc-trio-bench-cache-", dir=parent)


@attrs.define
class FullCache:
    """A ResultCache kept full at `entries`: every entry has the same size (a compile error:
    one small file, no artifacts), so each put evicts exactly one."""

    root: Path
    entries: int
    cache: ResultCache
    keys: Iterator[str] = attrs.field(factory=lambda: (f"{i:064x}" for i in itertools.count()))
    pick: random.Random = attrs.field(factory=lambda: random.Random(0))

    @classmethod
    def filled(cls, root: Path, entries: int) -> FullCache:
        full = cls(root, entries, ResultCache(root / "cache", root / "artifacts", 1 << 62))
        full.cache.load()
        full.put_seconds(entries)
        full.cache.max_bytes = full.cache.total_bytes
        return full

    def put_seconds(self, count: int) -> float:
        batch = list(itertools.islice(self.keys, count))
        start = time.perf_counter()
        for key in batch:
            self.cache.put(
                key, stored_result(key[-32:], False, "error: expected ';'", cpu_seconds=0.1)
            )
        return time.perf_counter() - start

    def hit_seconds(self, count: int) -> float:
        live = [name.removesuffix(".json") for name in os.listdir(self.root / "cache")]
        if len(live) != self.entries or self.cache.total_bytes != self.cache.max_bytes:
            raise SystemExit("bench: the cache did not stay full at one eviction per put")
        wanted = self.pick.choices(live, k=count)
        start = time.perf_counter()
        for key in wanted:
            if self.cache.get(key) is None:
                raise SystemExit(f"bench: cache entry {key} is missing")
        return time.perf_counter() - start


def machine() -> str:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    emcc = subprocess.run(
        ["emcc", "--version"], capture_output=True, text=True, check=False, env=RAW_ENV
    ).stdout.splitlines()
    return (
        f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs ({model}), "
        f"{emcc[0] if emcc else 'emcc ?'}, {time.strftime('%Y-%m-%d')}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer rounds and compiles")
    parser.add_argument("--rounds", type=int, help="latency rounds (10; 3 with --quick)")
    parser.add_argument(
        "--bookkeeping-only", action="store_true", help="only the cache bookkeeping (no server)"
    )
    parser.add_argument(
        "--projects", action="store_true", help="only the projects tables (cold, rebuild)"
    )
    parser.add_argument(
        "--library",
        action="append",
        choices=projects.LIBRARIES,
        help="the projects tables of this library only (repeatable; default: all)",
    )
    parser.add_argument(
        "--cluster", action="store_true", help="2 replicas + Redis + HAProxy vs 1, only"
    )
    parser.add_argument(
        "--hostile", action="store_true", help="only the fair-share run (bench/hostile.py)"
    )
    options = parser.parse_args()
    if options.hostile:
        fair_share()
        return
    if options.cluster:
        print(machine())
        cluster.run(options.quick)
        return
    settings = SETTINGS[options.quick]
    print(machine())
    libraries = options.library or projects.LIBRARIES
    if options.projects:
        all_project_builds(settings.project_rounds, libraries)
        return
    if not options.bookkeeping_only:
        served(settings, options.rounds or settings.rounds)
        all_project_builds(settings.project_rounds, libraries)
    cache_bookkeeping(settings.bookkeeping_ops)


def served(settings: Settings, rounds: int) -> None:
    """Sections 1-3, against real servers."""
    base = Path(tempfile.mkdtemp(prefix="emcc-trio-bench-"))
    base.chmod(0o711)  # the jail's unprivileged outside user must traverse it
    configs = {**VARIANTS, "cache on": CACHE_ON}
    servers = {name: start_server(base / f"s{i}", o) for i, (name, o) in enumerate(configs.items())}
    try:
        clients = {name: httpx.Client(base_url=servers[name].url, timeout=300) for name in VARIANTS}
        try:
            latency(clients, base / "raw", rounds)
        finally:
            for client in clients.values():
                client.close()
        sandboxed = {name: servers[name].url for name in ("full sandbox, levers off", FULL_SANDBOX)}
        for opt in ("-O0", "-O2"):
            throughput(sandboxed, base / "parallel", settings.per_level, opt)
        cache_hits(servers["cache on"].url, settings.cache_requests)
    finally:
        for server in servers.values():
            server.stop(timeout=30)
        shutil.rmtree(base, ignore_errors=True)


def all_project_builds(rounds: int, libraries: Sequence[str]) -> None:
    for name in libraries:
        for opt in ("-O0", "-O2"):
            project_builds(name, rounds, opt)


def project_builds(name: str, rounds: int, opt: str = "-O0") -> None:
    """Section 5: a project's cold build through a fresh server (the full sandbox) vs one raw
    emcc call with every source, and a rebuild after a one-unit edit vs the cold build.

    Round n runs raw, cold, rebuild, all with -DBENCH_RUN=n (round 0 warms up, untimed): the
    raw call and the cold build do the same work, and no round's objects serve another. The
    server's unit counts check that a cold build compiles every unit and a rebuild one."""
    project = projects.Project.load(name)
    # The service's defaultArgs, on the server and in the raw call alike.
    default_args: list[str] = json.loads((REPO / "config.json").read_text())["defaultArgs"]
    base = Path(tempfile.mkdtemp(prefix="emcc-trio-bench-"))
    base.chmod(0o711)  # the jail's unprivileged outside user must traverse it
    raw_dir = base / "raw"
    raw_dir.mkdir()
    project.write(raw_dir)
    samples: dict[str, list[float]] = {"raw": [], "cold": [], "rebuild": []}
    server = start_server(base / "s", {**VARIANTS[FULL_SANDBOX], "defaultArgs": default_args})
    try:
        with httpx.Client(base_url=server.url, timeout=600) as client:
            for run in range(rounds + 1):
                raw_argv = project.raw_argv(run, default_args, opt)
                seconds = {"raw": timed(functools.partial(raw_command, raw_dir, raw_argv))}
                seconds["cold"] = project_build(
                    client, project.body(run, opt=opt), project.units, project.units
                )
                settle({"server": client})  # the developer edits meanwhile
                seconds["rebuild"] = project_build(
                    client, project.body(run, edit=run, opt=opt), project.units, 1
                )
                settle({"server": client})
                if run:
                    for name, value in seconds.items():
                        samples[name].append(value)
    finally:
        server.stop(timeout=30)
        shutil.rmtree(base, ignore_errors=True)
    raw, cold, rebuild = (statistics.median(samples[name]) for name in ("raw", "cold", "rebuild"))
    rows = [
        ("raw emcc, one call", "raw", None, None),
        (f"{FULL_SANDBOX}, cold", "cold", raw / cold, PROJECT_TARGETS["cold"]),
        (
            "same server, rebuild after 1 edit",
            "rebuild",
            cold / rebuild,
            PROJECT_TARGETS["rebuild"],
        ),
    ]
    print(
        f"\nprojects: {project.label()}, {opt}, median of {rounds} "
        "(ratio: raw / cold, cold / rebuild)"
    )
    print(f"{'build':<35} {'median s':>9} {'min s':>7} {'ratio':>6} {'target':>7} {'met':>4}")
    for label, name, ratio, target in rows:
        line = f"{label:<35} {statistics.median(samples[name]):>9.3f} {min(samples[name]):>7.3f}"
        if ratio is not None and target is not None:
            line += f" {ratio:>6.2f} {target:>7.1f} {'yes' if ratio >= target else 'no':>4}"
        print(line)


def project_build(
    client: httpx.Client, body: Mapping[str, Any], units: int, compiled: int
) -> float:
    """Seconds for one build of a project of `units` units through the service; stops the
    bench unless exactly `compiled` of them were compiled (the others reused)."""
    before = build_units(str(client.base_url))
    seconds = timed(posting(client, body))
    after = build_units(str(client.base_url))
    done = {how: after[how] - before[how] for how in after}
    if done != {"compiled": compiled, "reused": units - compiled}:
        raise SystemExit(f"bench: expected {compiled} of {units} units compiled, got {done}")
    return seconds


def fair_share() -> None:
    """The top-level config's server (nsjail, cgroups, gating), with the cache off."""
    base = Path(tempfile.mkdtemp(prefix="emcc-trio-bench-"))
    base.chmod(0o711)
    config = json.loads((REPO / "config.json").read_text())
    for own in ("workingDir", "addr"):
        del config[own]
    server = start_server(base / "s", {**config, **CACHE_OFF})
    print(machine())
    try:
        hostile.run(server.url, corpus())
    finally:
        server.stop(timeout=30)
        shutil.rmtree(base, ignore_errors=True)


def start_server(workdir: Path, overrides: Mapping[str, Any]) -> Server:
    """A server with the defaults plus `overrides` (not the top-level config: the variants
    differ only in what they name)."""
    workdir.mkdir(parents=True)
    return start(workdir, {"workingDir": str(workdir), "addr": "127.0.0.1:0", **overrides})


if __name__ == "__main__":
    main()
