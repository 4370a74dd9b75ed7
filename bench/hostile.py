"""`nox -s bench -- --hostile`: one ordinary client alone, then beside two hostile ones.

The ordinary client (127.0.0.1) sends the load corpus two at a time; the hostile clients
(127.0.0.2 and 127.0.0.3, two connections each) send heavy `-O2` compiles back to back, each
made unique so nothing is shared. Same server, same run, cache off so every compile is real.
With three clients on the machine the ordinary one's fair share is a third of the CPU: the
targets are at least 0.28x its throughput alone (85 % of that share), at most 4x its p95
alone, and no 503 or 429 for it.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import attrs
import httpx

from load.mix import BOMBS_DIR

ORDINARY_ADDRESS = "127.0.0.1"
HOSTILE_ADDRESSES = ("127.0.0.2", "127.0.0.3")
CONNECTIONS_PER_HOSTILE = 2
ORDINARY_PROGRAMS = 60
ORDINARY_AT_ONCE = 2
# Thousands of generated functions at -O2: legitimate, but seconds of CPU and hundreds of MB.
HEAVY_SOURCE = BOMBS_DIR / "medium.c"
HEAVY_ARGS = ["-O2"]
TARGET_THROUGHPUT = 0.28
TARGET_P95 = 4.0


@attrs.frozen
class Run:
    seconds: list[float]
    wall: float
    statuses: dict[int, int]

    @property
    def per_second(self) -> float:
        return len(self.seconds) / self.wall

    @property
    def p95(self) -> float:
        ordered = sorted(self.seconds)
        return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


def _client(url: str, address: str) -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=url, timeout=600, transport=transport)


def ordinary(url: str, sources: list[Any], tag: str) -> Run:
    """ORDINARY_PROGRAMS compiles, ORDINARY_AT_ONCE at a time, from ORDINARY_ADDRESS."""
    bodies = [
        {"type": s.kind, "code": f"{s.code}\n// {tag} {i}\n"}
        for i, s in enumerate(sources[i % len(sources)] for i in range(ORDINARY_PROGRAMS))
    ]
    seconds: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()

    def worker(share: list[dict[str, str]]) -> None:
        with _client(url, ORDINARY_ADDRESS) as client:
            for body in share:
                start = time.perf_counter()
                status = client.post("/compile", json=body).status_code
                with lock:
                    seconds.append(time.perf_counter() - start)
                    statuses[status] = statuses.get(status, 0) + 1

    threads = [
        threading.Thread(target=worker, args=(bodies[n::ORDINARY_AT_ONCE],))
        for n in range(ORDINARY_AT_ONCE)
    ]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return Run(seconds, time.perf_counter() - start, statuses)


def hostile(url: str, stop: threading.Event, done: list[int]) -> list[threading.Thread]:
    heavy = HEAVY_SOURCE.read_text()

    def sender(address: str, n: int) -> None:
        with _client(url, address) as client:
            i = 0
            while not stop.is_set():
                body = {"code": f"{heavy}\n// {address} {n} {i}\n", "args": HEAVY_ARGS}
                client.post("/compile", json=body)
                done.append(1)
                i += 1

    return [
        threading.Thread(target=sender, args=(address, n))
        for address in HOSTILE_ADDRESSES
        for n in range(CONNECTIONS_PER_HOSTILE)
    ]


def bench(url: str, sources: list[Any], wait_for_running: Callable[[int], None]) -> None:
    ordinary(url, sources[:2], "warm-up")
    alone = ordinary(url, sources, "alone")
    stop = threading.Event()
    heavy_done: list[int] = []
    senders = hostile(url, stop, heavy_done)
    for sender in senders:
        sender.start()
    wait_for_running(len(senders))  # the hostile compiles hold the machine before we start
    try:
        crowded = ordinary(url, sources, "crowded")
    finally:
        stop.set()
        for sender in senders:
            sender.join()
    print(
        f"\nfair share: {ORDINARY_PROGRAMS} ordinary compiles, {ORDINARY_AT_ONCE} at a time,"
        f" alone and beside {len(HOSTILE_ADDRESSES)} hostile clients"
        f" ({CONNECTIONS_PER_HOSTILE} connections each, {HEAVY_SOURCE.name} {' '.join(HEAVY_ARGS)}"
        f" back to back: {len(heavy_done)} done meanwhile)"
    )
    print(f"{'ordinary client':<22} {'compiles/s':>10} {'p95 s':>7} {'answers':<24}")
    for label, run in (("alone", alone), ("beside hostile", crowded)):
        shown = ", ".join(f"{status} x{n}" for status, n in sorted(run.statuses.items()))
        print(f"{label:<22} {run.per_second:>10.2f} {run.p95:>7.2f} {shown:<24}")
    throughput = crowded.per_second / alone.per_second
    p95 = crowded.p95 / alone.p95
    refused = sum(n for status, n in crowded.statuses.items() if status in (429, 503))
    print(
        f"ratio: throughput {throughput:.2f}x (target >= {TARGET_THROUGHPUT}),"
        f" p95 {p95:.2f}x (target <= {TARGET_P95}), 503/429: {refused} (target 0),"
        f" median {statistics.median(crowded.seconds):.2f} s"
    )
    met = throughput >= TARGET_THROUGHPUT and p95 <= TARGET_P95 and refused == 0
    print("targets met" if met else "TARGETS MISSED")


def metrics_running(url: str) -> int:
    text = httpx.get(url + "/metrics", timeout=30).text
    for line in text.splitlines():
        if line.startswith("emcc_trio_jobs_running "):
            return int(float(line.split()[1]))
    return 0


def wait_for_running(url: str) -> Callable[[int], None]:
    def wait(count: int) -> None:
        end = time.monotonic() + 120
        while metrics_running(url) < count:
            if time.monotonic() > end:
                raise SystemExit(f"the {count} hostile compiles never ran together")
            time.sleep(0.1)

    return wait


def run(url: str, sources: list[Any]) -> None:
    bench(url, sources, wait_for_running(url))
