"""`emcc-trio serve [--config PATH]`: the server and its background tasks in one nursery;
`emcc-trio compile ...` is the client (cli.py); `emcc-trio token new NAME`: a new API token
and its line for `apiTokensFile`."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
from functools import partial
from pathlib import Path
from typing import Final

import trio
from hypercorn.config import Config as HypercornConfig

from emcc_trio import logs
from emcc_trio.api import httpserver
from emcc_trio.api.app import AccessLog, create_app
from emcc_trio.api.clients import parse_networks
from emcc_trio.api.cors import Cors
from emcc_trio.api.tokens import TokenBook, TokenFileError, new_token, parse_tokens
from emcc_trio.client import cli
from emcc_trio.compile.compiler import Compiler
from emcc_trio.compile.gate import Budget, Gate, default_budget
from emcc_trio.compile.policy import make_policy
from emcc_trio.compile.service import Service
from emcc_trio.config import Config, ConfigError, Paths, load, parse_addr, redact_url, resolve_paths
from emcc_trio.isolation.cgroups import (
    BudgetGroup,
    Caps,
    CgroupError,
    instance_tag,
    open_driver,
    read_budget,
    read_mem_total,
)
from emcc_trio.isolation.runner import Limits
from emcc_trio.isolation.sandbox import Sandbox, SandboxError
from emcc_trio.storage.artifacts import ArtifactStore
from emcc_trio.storage.base import LocalStore, Store
from emcc_trio.storage.cache import ResultCache
from emcc_trio.storage.redis import RedisStore, connect

log = logging.getLogger("emcc_trio")
_GRACEFUL_SECONDS: Final = 5.0
# A connection must send a whole request head within this, and is closed after this long idle
# between requests (hypercorn's keep_alive_timeout).
_KEEP_ALIVE_SECONDS: Final = 5.0
MB: Final = 1024 * 1024
# More jobs than cores: a light client's job starts at once instead of waiting for a heavy
# client's to end, and the per-client CPU weights share the cores (the memory gate still
# bounds how many run).
DEFAULT_JOBS_PER_CPU: Final = 4


class StartupError(Exception):
    """The server must not start; the message says why."""


def _which(setting: str, key: str) -> str:
    found = shutil.which(setting)
    if found is None:
        raise StartupError(f"{key}: cannot find the compiler {setting!r} (install emscripten)")
    return os.path.abspath(found)


def _remove_leftover_jobs(jobs_dir: Path) -> list[str]:
    """Job dirs are never kept across runs: anything here was left by a killed server."""
    leftovers = sorted(p.name for p in jobs_dir.iterdir())
    for name in leftovers:
        path = jobs_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return leftovers


async def _emscripten_version(emcc: str) -> str:
    """Part of every cache key: a new emscripten must not serve old results."""
    try:
        done = await trio.run_process([emcc, "--version"], capture_stdout=True, check=False)
    except OSError as exc:
        raise StartupError(f"emccPath: cannot run {emcc}: {exc.strerror}") from exc
    return f"{emcc} " + done.stdout.decode(errors="replace").partition("\n")[0]


async def open_store(config: Config, paths: Paths) -> Store:
    """The one place that knows which store runs: Redis when a URL is set, else local disk."""
    if config.redis_url:
        log.info("store", extra={"fields": {"redis": redact_url(config.redis_url)}})
        client, sentinel = connect(config.redis_url)
        return RedisStore(
            client,
            sentinel=sentinel,
            artifact_ttl_days=config.artifact_ttl_days,
            # A holder's lock lasts its queue wait plus its run; then waiters give up.
            max_wait_seconds=config.queue_timeout_seconds + config.job_timeout_seconds + 30,
        )
    for directory in (paths.artifacts_dir, paths.cache_dir):
        directory.mkdir(parents=True, exist_ok=True)
    cache = None
    if config.cache_enabled:
        cache = ResultCache(paths.cache_dir, paths.artifacts_dir, config.cache_max_mb * MB)
        await trio.to_thread.run_sync(cache.load)
    return LocalStore(
        ArtifactStore(paths.artifacts_dir),
        cache,
        artifact_ttl_days=config.artifact_ttl_days,
        cleanup_interval_mins=config.cleanup_interval_mins,
    )


def apply_budget(config: Config, group: BudgetGroup) -> int | None:
    """Write `memoryBudgetMB` (or its default) as the limit of the group holding every job;
    return what was written (None: no limit)."""
    setting = config.memory_budget_mb
    machine = read_mem_total()
    enclosing = group.enclosing_limit()
    bound = machine if enclosing is None else min(machine, enclosing)
    if setting == 0:
        limit = None
    elif setting is not None:
        limit = setting * MB
        if limit > bound:
            log.warning(
                "memoryBudgetMB is more than the machine or the enclosing cgroup has",
                extra={"fields": {"budget_bytes": limit, "available_bytes": bound}},
            )
    else:
        limit = default_budget(machine, enclosing)
        floor = max(config.job_memory_max_mb, config.job_memory_estimate_mb) * MB
        if limit < floor:
            # One job must be able to reach its own cap, and the gate to admit one.
            log.warning(
                "the default memory budget is below jobMemoryMaxMB or jobMemoryEstimateMB: "
                "raised to the larger",
                extra={"fields": {"default_bytes": limit, "budget_bytes": floor}},
            )
            limit = floor
    try:
        group.set_limit(limit)
    except CgroupError as exc:
        raise StartupError(f"memoryBudgetMB: {exc}") from exc
    return limit


def _open_budget(config: Config, paths: Paths, group: BudgetGroup | None) -> Budget | None:
    """What the gate reads: the budget group's files, or with `memoryBudgetMB` 0 (or no
    driver) the seed's: `cgroupV2Root`, else the server's own memory group."""
    if not config.enable_resource_gating:
        return None
    seed_v2 = (paths.cgroup_root / "memory.max", paths.cgroup_root / "memory.current")
    if group is not None and config.memory_budget_mb != 0:
        files = group.files
    elif group is None or seed_v2[0].exists():
        files = seed_v2
    else:
        files = group.parent_files() or group.files
    if read_budget(*files) is None:
        log.warning(
            "enableResourceGating is on but the budget group has no memory limit: compiles "
            "are admitted by maxConcurrentJobs only",
            extra={"fields": {"limit_file": str(files[0])}},
        )
    return partial(read_budget, *files)


def load_tokens(path: Path) -> TokenBook:
    try:
        return parse_tokens(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TokenFileError(f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise TokenFileError(f"{path} is not UTF-8 text") from exc


def reload_tokens(service: Service, path: Path) -> None:
    """SIGHUP: take the token file anew; a broken file keeps the tokens in force."""
    try:
        service.tokens = load_tokens(path)
    except TokenFileError as exc:
        log.error("apiTokensFile not reloaded", extra={"fields": {"error": str(exc)}})
        return
    log.info("apiTokensFile reloaded", extra={"fields": {"tokens": len(service.tokens.entries)}})


async def build_service(config: Config, paths: Paths, store: Store) -> Service:
    """Prepare everything a request needs; refuse to start rather than run unsafely."""
    for directory in (paths.working_dir, paths.jobs_dir, paths.artifacts_dir, paths.cache_dir):
        directory.mkdir(parents=True, exist_ok=True)
    os.chdir(paths.working_dir)
    emcc, emxx = _which(config.emcc_path, "emccPath"), _which(config.emxx_path, "emxxPath")
    try:
        driver = open_driver(config.cgroup_driver, paths.cgroup_root, instance_tag(paths.jobs_dir))
    except (CgroupError, OSError) as exc:
        raise StartupError(
            f"cgroupDriver {config.cgroup_driver!r}: per-job caps cannot be enforced: {exc}. "
            'Set "cgroupDriver": "none" to run without caps.'
        ) from exc
    sandbox = None
    if config.nsjail_enabled:
        try:
            sandbox = Sandbox.open(config.nsjail_path, config.nsjail_config, paths.working_dir)
            sandbox.check_reachable(paths.jobs_dir)
        except SandboxError as exc:
            raise StartupError(str(exc)) from exc

    recovered_groups = await driver.recover() if driver else []
    recovered_dirs = _remove_leftover_jobs(paths.jobs_dir)
    if recovered_groups or recovered_dirs:
        log.warning(
            "cleaned up after an earlier run",
            extra={"fields": {"cgroups": recovered_groups, "job_dirs": recovered_dirs}},
        )

    budget_group = driver.budget_group() if driver else None
    if budget_group is not None:
        apply_budget(config, budget_group)
    elif config.memory_budget_mb:
        log.warning('memoryBudgetMB: no cgroup to enforce it with "cgroupDriver": "none"')
    budget = _open_budget(config, paths, budget_group)

    limits = Limits(
        timeout_seconds=config.job_timeout_seconds,
        cpu_seconds=config.job_cpu_seconds,
        max_output_bytes=config.max_output_bytes,
        caps=Caps(
            memory_bytes=config.job_memory_max_mb * MB,
            cpu_max=config.job_cpu_max,
            pids_max=config.job_pids_max,
        ),
    )
    compiler = Compiler(
        emcc=emcc,
        emxx=emxx,
        default_args=config.default_args,
        node_path=config.node_path,
        jobs_dir=paths.jobs_dir,
        store=store,
        limits=limits,
        driver=driver,
        sandbox=sandbox,
    )
    gate = Gate(
        estimate_bytes=config.job_memory_estimate_mb * MB,
        max_concurrent=config.max_concurrent_jobs or DEFAULT_JOBS_PER_CPU * (os.cpu_count() or 1),
        queue_max=config.queue_max,
        queue_timeout_seconds=config.queue_timeout_seconds,
        budget=budget,
    )
    tokens = None
    if paths.api_tokens_file is not None:
        try:
            tokens = load_tokens(paths.api_tokens_file)
        except TokenFileError as exc:
            raise StartupError(f"apiTokensFile: {exc}") from exc
    log.info(
        "configured",
        extra={
            "fields": {
                "working_dir": str(paths.working_dir),
                "cgroups": driver.name if driver else "none",
                "nsjail": str(sandbox.nsjail) if sandbox else None,
                "gating": gate.last_budget is not None,
                "memory_budget_bytes": gate.last_budget[0] if gate.last_budget else None,
                "max_concurrent": gate.max_concurrent,
                "api_tokens": None if tokens is None else len(tokens.entries),
            }
        },
    )
    return Service(
        cache_enabled=config.cache_enabled,
        emscripten_version=await _emscripten_version(emcc),
        driver=driver,
        compiler=compiler,
        gate=gate,
        store=store,
        enable_static_artifacts=config.enable_static_artifacts,
        max_body_bytes=config.max_body_bytes,
        policy=make_policy(
            config.argument_policy, config.job_memory_max_mb, config.extra_allowed_args
        ),
        body_timeout_seconds=config.body_timeout_seconds,
        max_jobs_per_client=config.max_jobs_per_client,
        tokens=tokens,
        trusted_proxies=parse_networks(config.trusted_proxies),
    )


async def serve(config: Config, start_dir: Path) -> None:
    paths = resolve_paths(config, start_dir)
    try:
        open_files = httpserver.raise_open_files_limit(config.max_connections)
    except ValueError as exc:
        raise StartupError(f"{exc}: lower maxConnections or raise the limit") from exc
    store = await open_store(config, paths)
    service = await build_service(config, paths, store)
    async with store.session():
        await _serve(config, service, open_files, paths.api_tokens_file)
    if service.driver is not None:
        service.driver.close()
    log.info("stopped")


async def _serve(
    config: Config, service: Service, open_files: int, tokens_file: Path | None
) -> None:
    host, port = parse_addr(config.addr)
    hypercorn_config = HypercornConfig()
    hypercorn_config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    hypercorn_config.graceful_timeout = _GRACEFUL_SECONDS
    hypercorn_config.keep_alive_timeout = _KEEP_ALIVE_SECONDS
    hypercorn_config.accesslog = None
    hypercorn_config.errorlog = logging.getLogger("hypercorn.error")
    app = AccessLog(Cors(create_app(service), config.cors_allowed_origins), service.metrics)
    shutdown = trio.Event()

    async def watch_signals() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    if tokens_file is not None:
                        reload_tokens(service, tokens_file)
                    continue
                log.info("shutting down", extra={"fields": {"signal": signum}})
                service.shutdown()
                shutdown.set()
                return

    async with trio.open_nursery() as nursery:

        async def run_http(task_status: trio.TaskStatus[list[str]]) -> None:
            await httpserver.serve(
                app,
                hypercorn_config,
                config.max_connections,
                config.send_timeout_seconds,
                shutdown_trigger=shutdown.wait,
                task_status=task_status,
            )
            # In-flight requests are done: stop the background tasks too.
            nursery.cancel_scope.cancel()

        nursery.start_soon(watch_signals)
        nursery.start_soon(service.gate.run_poller)
        nursery.start_soon(service.store.run)
        service.start(nursery)
        binds = await nursery.start(run_http)
        log.info(
            "listening",
            extra={
                "fields": {
                    "urls": binds,
                    "max_connections": config.max_connections,
                    "open_files_limit": open_files,
                }
            },
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="emcc-trio", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    serve_parser = sub.add_parser("serve", help="run the HTTP service")
    serve_parser.add_argument("--config", default="config.json", help="path to config.json")
    sub.add_parser("compile", help="compile files on a server: emcc-trio compile --help")
    token_parser = sub.add_parser("token", help="API tokens")
    token_sub = token_parser.add_subparsers(dest="token_command", required=True)
    new_parser = token_sub.add_parser(
        "new", help="print a new token, then its line for apiTokensFile (a hash, never the token)"
    )
    new_parser.add_argument("name", help="a name for logs: 1-64 letters, digits or ._-")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["compile"]:
        return cli.main(argv[1:])
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["serve", *argv])
    if args.command == "token":
        try:
            token, line = new_token(args.name)
        except ValueError as exc:
            print(f"emcc-trio: {exc}", file=sys.stderr)
            return 2
        print(
            "emcc-trio: line 1 is the token: hand it to the client, it is stored nowhere;"
            " line 2 goes into apiTokensFile (then send the server SIGHUP)",
            file=sys.stderr,
        )
        print(f"{token}\n{line}")
        return 0
    logs.configure()
    try:
        config = load(Path(args.config))
    except ConfigError as exc:
        print(f"emcc-trio: config error: {exc}", file=sys.stderr)
        return 2
    try:
        trio.run(serve, config, Path.cwd())
    except StartupError as exc:
        print(f"emcc-trio: refusing to start: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
