"""Per-job cost of the service on top of emcc: raw emcc vs the server, in one run.

Runs are interleaved (raw, then each server variant, round after round) so that drift on a
noisy machine hits every column alike. Prints a table of medians and ratios against raw emcc.
Usage: python bench/bench.py [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

DEFAULT_ARGS = ["-sINVOKE_RUN=0", "-sENVIRONMENT=web", "-sALLOW_MEMORY_GROWTH=1", "-sMODULARIZE=1"]
PROGRAMS = {
    "hello.c -O0": ("c", '#include <stdio.h>\nint main(void){printf("hi\\n");}\n', []),
    "iostream.cpp -O2": (
        "cpp",
        '#include <iostream>\nint main(){std::cout<<"hi"<<std::endl;}\n',
        ["-O2"],
    ),
}
VARIANTS: dict[str, dict[str, Any]] = {
    "server, no caps": {"cgroupDriver": "none", "nsjailEnabled": False},
    "server + cgroup": {"cgroupDriver": "auto", "nsjailEnabled": False},
    "server + cgroup + nsjail": {"cgroupDriver": "auto", "nsjailEnabled": True},
}


def start_server(workdir: Path, overrides: dict[str, Any]) -> tuple[subprocess.Popen[bytes], str]:
    workdir.mkdir(parents=True)
    config = {"workingDir": str(workdir), "addr": "127.0.0.1:0", **overrides}
    (workdir / "config.json").write_text(json.dumps(config))
    log = workdir / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "emcc_trio", "serve", "--config", str(workdir / "config.json")],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    end = time.monotonic() + 60
    while time.monotonic() < end:
        for line in log.read_text().splitlines():
            if '"listening"' in line:
                return proc, str(json.loads(line)["urls"][0])
        if proc.poll() is not None:
            raise SystemExit(f"server failed:\n{log.read_text()}")
        time.sleep(0.05)
    raise SystemExit("server did not start")


def timed(action: Callable[[], None]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def raw_emcc(scratch: Path, kind: str, code: str, args: list[str]) -> Callable[[], None]:
    source = scratch / ("main.c" if kind == "c" else "main.cpp")
    compiler = "emcc" if kind == "c" else "em++"

    def run() -> None:
        source.write_text(code)
        subprocess.run(
            [compiler, source.name, *DEFAULT_ARGS, *args, "-o", "app.js"],
            cwd=scratch,
            check=True,
            env={"PATH": "/usr/bin:/bin", "NODE_PATH": "/usr/share/nodejs", "HOME": str(scratch)},
        )

    return run


def via_server(client: httpx.Client, kind: str, code: str, args: list[str]) -> Callable[[], None]:
    def run() -> None:
        response = client.post("/compile", json={"type": kind, "code": code, "args": args})
        if response.status_code != 200:
            raise SystemExit(f"compile failed: {response.text}")

    return run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10)
    rounds = parser.parse_args().rounds
    base = Path(tempfile.mkdtemp(prefix="emcc-trio-bench-"))
    base.chmod(0o711)  # the jail's unprivileged outside user must traverse it
    servers = {
        name: start_server(base / f"s{i}", o) for i, (name, o) in enumerate(VARIANTS.items())
    }
    clients = {name: httpx.Client(base_url=url, timeout=300) for name, (_, url) in servers.items()}
    scratch = base / "raw"
    scratch.mkdir()
    rows = []
    try:
        for label, (kind, code, args) in PROGRAMS.items():
            runners = {"raw emcc": raw_emcc(scratch, kind, code, args)}
            runners.update({name: via_server(c, kind, code, args) for name, c in clients.items()})
            for run in runners.values():
                run()  # warm caches
            samples: dict[str, list[float]] = {name: [] for name in runners}
            for _ in range(rounds):
                for name, run in runners.items():
                    samples[name].append(timed(run))
            raw = statistics.median(samples["raw emcc"])
            for name, values in samples.items():
                median = statistics.median(values)
                rows.append((label, name, median, min(values), median / raw))
    finally:
        for client in clients.values():
            client.close()
        for proc, _ in servers.values():
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        shutil.rmtree(base, ignore_errors=True)
    print(f"\n{platform.node()} {platform.machine()}, {time.strftime('%Y-%m-%d')}, {rounds} rounds")
    print(f"{'program':<18} {'pipeline':<26} {'median s':>9} {'min s':>7} {'ratio':>6}")
    for label, name, median, fastest, ratio in rows:
        print(f"{label:<18} {name:<26} {median:>9.3f} {fastest:>7.3f} {ratio:>6.2f}")


if __name__ == "__main__":
    main()
