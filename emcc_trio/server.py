"""The composition root: build every part from the config, then serve until a signal.

`__main__` parses the command line and calls `run`. Everything the server needs is built
here and passed down explicitly; nothing below this module reads the config.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shlex
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Final

import attrs
import trio

from emcc_trio.api import httpserver
from emcc_trio.api.app import ApiOptions, create_app
from emcc_trio.api.clients import parse_networks
from emcc_trio.api.cors import Cors
from emcc_trio.api.middleware import AccessLog
from emcc_trio.api.tokens import TokenBook, TokenFileError, load_tokens
from emcc_trio.compile.build import Clang
from emcc_trio.compile.builder import Builder
from emcc_trio.compile.compiler import Compiler
from emcc_trio.compile.gate import Budget, Gate, default_budget
from emcc_trio.compile.launcher import SCRIPT, Launcher, emscripten_root, install
from emcc_trio.compile.memos import Memos
from emcc_trio.compile.policy import make_policy
from emcc_trio.compile.quota import ArtifactQuota
from emcc_trio.compile.service import Service
from emcc_trio.compile.sources import ProjectLimits
from emcc_trio.config import Config, Paths, parse_addr, resolve_paths
from emcc_trio.execute.options import RunLimits
from emcc_trio.execute.runner import Runner
from emcc_trio.execute.runner import install as install_runner
from emcc_trio.isolation.cgroups import (
    BudgetGroup,
    Caps,
    CgroupError,
    Driver,
    instance_tag,
    open_driver,
    read_budget,
    read_mem_total,
)
from emcc_trio.isolation.runner import Limits
from emcc_trio.isolation.sandbox import JOB_MOUNT, RUN_CONFIG, Sandbox, SandboxError
from emcc_trio.jobs.manager import JobManager
from emcc_trio.metrics import Metrics
from emcc_trio.ports.install import EMSCRIPTEN as PORTS_EMSCRIPTEN
from emcc_trio.ports.installed import InstalledPorts, ManifestError
from emcc_trio.ports.installed import load as load_ports
from emcc_trio.storage.artifacts import ArtifactStore
from emcc_trio.storage.base import Store
from emcc_trio.storage.cache import ResultCache
from emcc_trio.storage.local import LocalStore
from emcc_trio.storage.objects import ObjectCache
from emcc_trio.storage.redis import RedisStore, connect
from emcc_trio.storage.redis_url import redact_url

log = logging.getLogger("emcc_trio")
MB: Final = 1024 * 1024
# More jobs than cores: a light client's job starts at once instead of waiting for a heavy
# client's to end, and the per-client CPU weights share the cores (the memory gate still
# bounds how many run).
DEFAULT_JOBS_PER_CPU: Final = 4


class StartupError(Exception):
    """The server must not start; the message says why."""


async def run(config: Config, start_dir: Path) -> None:
    """Serve until SIGINT or SIGTERM; then finish the requests in flight and return.
    Raises StartupError, before listening, when the server must not start."""
    paths = resolve_paths(config, start_dir)
    try:
        open_files = httpserver.raise_open_files_limit(config.max_connections)
    except ValueError as exc:
        raise StartupError(f"{exc}: lower maxConnections or raise the limit") from exc
    store = await open_store(config, paths)
    async with _opened_driver(config, paths) as driver:
        service = await build_service(config, paths, store, driver)
        options = api_options(config, paths)
        jobs = JobManager(store, config.job_ttl_seconds, service.metrics)
        async with store.session(), service.running(), jobs.running():
            await _serve_http(config, service, jobs, options, open_files, paths.api_tokens_file)
    log.info("stopped")


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
            max_file_bytes=config.max_artifact_mb * MB,
        )
    for directory in (paths.artifacts_dir, paths.cache_dir):
        directory.mkdir(parents=True, exist_ok=True)
    cache = None
    if config.cache_enabled:
        cache = ResultCache(paths.cache_dir, paths.artifacts_dir, config.cache_max_mb * MB)
        await trio.to_thread.run_sync(cache.load)
    objects = None
    if config.object_cache_max_mb:
        objects = ObjectCache(paths.cache_dir / "objects", config.object_cache_max_mb * MB)
        await trio.to_thread.run_sync(objects.load)
    return LocalStore(
        ArtifactStore(paths.artifacts_dir, config.max_artifact_mb * MB),
        cache,
        artifact_ttl_days=config.artifact_ttl_days,
        cleanup_interval_mins=config.cleanup_interval_mins,
        objects=objects,
    )


@contextlib.asynccontextmanager
async def _opened_driver(config: Config, paths: Paths) -> AsyncIterator[Driver | None]:
    """The cgroup driver for as long as the server runs; closed however the block ends."""
    try:
        driver = open_driver(config.cgroup_driver, paths.cgroup_root, instance_tag(paths.jobs_dir))
    except (CgroupError, OSError) as exc:
        raise StartupError(
            f"cgroupDriver {config.cgroup_driver!r}: per-job caps cannot be enforced: {exc}. "
            'Set "cgroupDriver": "none" to run without caps.'
        ) from exc
    try:
        yield driver
    finally:
        if driver is not None:
            driver.close()


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


def _find_program(name: str, missing: str, path: str | None = None) -> str:
    """The absolute path of program `name` (on `path`, else the server's PATH); StartupError
    with `missing` when there is none."""
    found = shutil.which(name, path=path)
    if found is None:
        raise StartupError(missing)
    return os.path.abspath(found)


def _which(setting: str, key: str) -> str:
    return _find_program(
        setting, f"{key}: cannot find the compiler {setting!r} (install emscripten)"
    )


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


async def _emscripten_root(emcc: str) -> str | None:
    """The emscripten root emcc's `em-config` names, if it holds emcc.py."""
    em_config = os.path.join(os.path.dirname(emcc), "em-config")
    try:
        done = await trio.run_process(
            [em_config, "EMSCRIPTEN_ROOT"], capture_stdout=True, capture_stderr=True, check=False
        )
    except OSError:
        return None
    return emscripten_root(done.stdout.decode(errors="replace"))


async def _open_ports(
    paths: Paths, emcc: str, root: str | None, sandbox: Sandbox | None
) -> InstalledPorts | None:
    """emscriptenCacheDir: the ports install there, if there is one and it was built for the
    emscripten that compiles (`root`, Debian's: the install builds from its recipes)."""
    cache_dir = paths.emscripten_cache_dir
    if cache_dir is None:
        return None
    try:
        ports = await trio.to_thread.run_sync(load_ports, cache_dir)
    except ManifestError as exc:
        raise StartupError(f"emscriptenCacheDir: {exc}") from exc
    if ports is None:
        log.info(
            f"emscriptenCacheDir: no ports installed in {cache_dir} (python -m "
            "emcc_trio.ports.install builds them); -sUSE_* ports are refused"
        )
        return None
    if root != str(PORTS_EMSCRIPTEN):
        log.warning(f"emscriptenCacheDir: built for {PORTS_EMSCRIPTEN}, not {emcc}; ports off")
        return None
    if sandbox is not None:
        _reachable(sandbox, cache_dir)
    return ports


async def _open_launcher(
    config: Config,
    paths: Paths,
    emcc: str,
    root: str | None,
    python: str,
    sandbox: Sandbox | None,
) -> Launcher | None:
    """emccLauncher: installed where the jail can read it; None (with a warning) when emcc's
    `em-config` names no emscripten `root` holding emcc.py."""
    if not config.emcc_launcher:
        return None
    if root is None:
        em_config = os.path.join(os.path.dirname(emcc), "em-config")
        log.warning(f"emccLauncher: {em_config} names no emscripten root; running emcc as is")
        return None
    directory = paths.base_dir / "launcher"
    compiled = await trio.to_thread.run_sync(install, directory, python)
    if sandbox is not None:
        _reachable(sandbox, directory)
    return Launcher(python, directory, root, compiled)


async def _open_runner(
    config: Config, paths: Paths, sandbox: Sandbox | None, driver: Driver | None
) -> Runner | None:
    """POST /run: the runner installed where the run jail can read it; None when runs are
    off, or (with a warning) when there is no jail to run them in."""
    if not config.enable_run:
        return None
    if sandbox is None:
        log.info("enableRun: runs need nsjailEnabled; POST /run answers 501")
        return None
    directory = await trio.to_thread.run_sync(install_runner, paths.base_dir / "runner")
    _reachable(sandbox, directory)
    return Runner(
        sandbox=attrs.evolve(sandbox, config_file=RUN_CONFIG, toolchain_mounts=()),
        driver=driver,
        jobs_dir=paths.jobs_dir,
        directory=directory,
        limits=RunLimits(
            memory_bytes=config.run_memory_mb * MB,
            cpu_seconds=config.run_cpu_seconds,
            timeout_seconds=config.run_timeout_seconds,
            pids_max=config.run_pids_max,
            output_bytes=config.run_output_bytes,
        ),
    )


def _reachable(sandbox: Sandbox, directory: Path) -> None:
    try:
        sandbox.check_reachable(directory)
    except SandboxError as exc:
        raise StartupError(str(exc)) from exc


async def _open_memos(
    config: Config,
    paths: Paths,
    toolchain: str,
    launcher: Launcher | None,
    store: Store,
    metrics: Metrics,
    clang: Clang | None,
) -> Memos | None:
    """glueMemoMaxMB, pchMaxMB: one directory per toolchain (the launcher and node are part
    of it); the directories of other toolchains are removed."""
    if launcher is None or not config.nsjail_enabled:
        return None
    if not config.glue_memo_max_mb and not (config.pch_max_mb and clang is not None):
        return None
    node = shutil.which("node", path=f"{os.path.dirname(launcher.python)}:/usr/bin:/bin")
    node_version = b""
    if node is not None:
        done = await trio.run_process([node, "--version"], capture_stdout=True, check=False)
        node_version = done.stdout
    identity = hashlib.sha256(
        toolchain.encode() + b"\0" + node_version + b"\0" + SCRIPT.read_bytes()
    ).hexdigest()

    async def cache(name: str, max_mb: int) -> ObjectCache | None:
        if not max_mb:
            return None
        parent = paths.cache_dir / name
        await trio.to_thread.run_sync(_remove_other_dirs, parent, identity[:16])
        entries = ObjectCache(parent / identity[:16], max_mb * MB)
        await trio.to_thread.run_sync(entries.load)
        return entries

    return Memos(
        glue=await cache("glue", config.glue_memo_max_mb),
        pch=await cache("pch", config.pch_max_mb if clang is not None else 0),
        toolchain=identity,
        compilers=() if clang is None else (clang.c, clang.cxx),
        cwd=JOB_MOUNT,
        shared=store if config.redis_url else None,
        metrics=metrics,
    )


def _remove_other_dirs(parent: Path, keep: str) -> None:
    parent.mkdir(parents=True, exist_ok=True)
    for path in parent.iterdir():
        if path.name != keep:
            shutil.rmtree(path, ignore_errors=True)


async def _find_clang(emcc: str, emxx: str) -> Clang | None:
    """The clang programs emcc and em++ run to compile (from `-v`, on a probe source of
    ours), so that a project's units compile without an emcc start each; None when emcc does
    not say (then each unit goes through emcc)."""
    found = []
    with tempfile.TemporaryDirectory(prefix="emcc-trio-probe-") as folder:
        for compiler, name in ((emcc, "probe.c"), (emxx, "probe.cpp")):
            (Path(folder) / name).write_text("int probe(void) { return 0; }\n")
            done = await trio.run_process(
                [compiler, "-v", "-c", name, "-o", "probe.o"],
                cwd=folder,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
            lines = (done.stdout + done.stderr).decode(errors="replace").splitlines()
            command = next((line for line in lines if line.startswith(' "')), None)
            if done.returncode != 0 or command is None:
                return None
            found.append(shlex.split(command)[0])
    return Clang(c=found[0], cxx=found[1])


def _open_sandbox(config: Config, paths: Paths) -> Sandbox | None:
    if not config.nsjail_enabled:
        return None
    try:
        sandbox = Sandbox.open(config.nsjail_path, config.nsjail_config, paths.working_dir)
        sandbox.check_reachable(paths.jobs_dir)
    except SandboxError as exc:
        raise StartupError(str(exc)) from exc
    return sandbox


async def build_service(
    config: Config, paths: Paths, store: Store, driver: Driver | None
) -> Service:
    """Prepare everything a compile needs; refuse to start rather than run unsafely."""
    for directory in (paths.working_dir, paths.jobs_dir, paths.artifacts_dir, paths.cache_dir):
        directory.mkdir(parents=True, exist_ok=True)
    # As emcc-sandboxd: the process runs in workingDir.
    os.chdir(paths.working_dir)
    emcc, emxx = _which(config.emcc_path, "emccPath"), _which(config.emxx_path, "emxxPath")
    sandbox = _open_sandbox(config, paths)

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

    limits = Limits(
        timeout_seconds=config.job_timeout_seconds,
        cpu_seconds=config.job_cpu_seconds,
        max_output_bytes=config.max_output_bytes,
        disk_bytes=config.job_disk_max_mb * MB,
        caps=Caps(
            memory_bytes=config.job_memory_max_mb * MB,
            cpu_max=config.job_cpu_max,
            pids_max=config.job_pids_max,
        ),
    )
    compiler_version = await _emscripten_version(emcc)
    root = await _emscripten_root(emcc)
    ports = await _open_ports(paths, emcc, root, sandbox)
    toolchain = compiler_version
    if ports is not None:
        # Every key of a compile (results, objects, memos) then names the ports build too.
        toolchain += f" ports {ports.digest}"
        if sandbox is not None:
            mount = (ports.cache_dir, str(PORTS_EMSCRIPTEN / "cache"))
            sandbox = attrs.evolve(sandbox, toolchain_mounts=(mount,))
    metrics = Metrics()
    # The python3 the compile environment finds first (compile_env's PATH), as emcc's does.
    search = f"{os.path.dirname(emcc)}:/usr/local/bin:/usr/bin:/bin"
    python = _find_program(
        "python3", "no python3 for the build driver (emcc needs one too)", path=search
    )
    builder = Builder(
        metrics=metrics,
        store=store,
        toolchain=toolchain,
        python=python,
        clang=await _find_clang(emcc, emxx),
        # Units compile side by side up to the job's CPU share.
        parallel=max(1, int(config.job_cpu_max)),
        reuse=config.object_cache_max_mb > 0,
        job_mount=JOB_MOUNT if sandbox is not None else None,
    )
    quota = None
    if config.artifact_quota_mb:
        quota = ArtifactQuota(
            store, config.artifact_quota_mb * MB, config.artifact_quota_window_minutes * 60
        )
    # Outside the jail, util-linux's prlimit sets the job's file size limit.
    prlimit = (
        ""
        if sandbox
        else _find_program(
            "prlimit", "maxArtifactMB: cannot find 'prlimit' to enforce it (install util-linux)"
        )
    )
    launcher = await _open_launcher(config, paths, emcc, root, python, sandbox)
    memos = await _open_memos(config, paths, toolchain, launcher, store, metrics, builder.clang)
    if memos is not None and sandbox is not None:
        for entries in (memos.glue, memos.pch):
            if entries is not None:
                _reachable(sandbox, entries.root)
    compiler = Compiler(
        launcher=launcher,
        memos=memos,
        builder=builder,
        objects_per_client=config.cache_scope == "client",
        emcc=emcc,
        emxx=emxx,
        default_args=config.default_args,
        node_path=config.node_path,
        jobs_dir=paths.jobs_dir,
        store=store,
        limits=limits,
        driver=driver,
        sandbox=sandbox,
        max_artifact_bytes=config.max_artifact_mb * MB,
        prlimit=prlimit,
        quota=quota,
        emscripten_cache=ports.cache_dir if ports is not None and sandbox is None else None,
    )
    runner = await _open_runner(config, paths, sandbox, driver)
    gate = Gate(
        estimate_bytes=config.job_memory_estimate_mb * MB,
        max_concurrent=config.max_concurrent_jobs or DEFAULT_JOBS_PER_CPU * (os.cpu_count() or 1),
        queue_max=config.queue_max,
        queue_timeout_seconds=config.queue_timeout_seconds,
        budget=_open_budget(config, paths, budget_group),
    )
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
                "clang": None if builder.clang is None else builder.clang.c,
                "ports": None if ports is None else [port.name for port in ports.ports],
            }
        },
    )
    return Service(
        metrics=metrics,
        cache_enabled=config.cache_enabled,
        emscripten_version=toolchain,
        compiler_version=compiler_version,
        driver=driver,
        compiler=compiler,
        gate=gate,
        store=store,
        policy=make_policy(
            config.argument_policy,
            config.job_memory_max_mb,
            config.extra_allowed_args,
            ports.ports if ports is not None else (),
        ),
        ports=ports,
        max_jobs_per_client=config.max_jobs_per_client,
        limits=ProjectLimits(
            max_files=config.max_files,
            max_depth=config.max_path_depth,
            max_path_length=config.max_path_length,
            max_total_bytes=config.max_project_mb * MB,
        ),
        max_held_bytes=config.max_queued_project_mb * MB,
        quota=quota,
        cache_scope=config.cache_scope,
        memos=memos,
        runner=runner,
    )


def api_options(config: Config, paths: Paths) -> ApiOptions:
    tokens = None
    if paths.api_tokens_file is not None:
        try:
            tokens = load_tokens(paths.api_tokens_file)
        except TokenFileError as exc:
            raise StartupError(f"apiTokensFile: {exc}") from exc
        log.info("api tokens", extra={"fields": {"api_tokens": len(tokens.entries)}})
    return ApiOptions(
        max_body_bytes=config.max_body_bytes,
        body_timeout_seconds=config.body_timeout_seconds,
        enable_static_artifacts=config.enable_static_artifacts,
        tokens=tokens,
        trusted_proxies=parse_networks(config.trusted_proxies),
    )


def _reload_tokens(options: ApiOptions, path: Path) -> None:
    """SIGHUP: take the token file anew; a broken file keeps the tokens in force."""
    try:
        tokens: TokenBook = load_tokens(path)
    except TokenFileError as exc:
        log.error("apiTokensFile not reloaded", extra={"fields": {"error": str(exc)}})
        return
    options.tokens = tokens
    log.info("apiTokensFile reloaded", extra={"fields": {"tokens": len(tokens.entries)}})


async def _serve_http(
    config: Config,
    service: Service,
    jobs: JobManager,
    options: ApiOptions,
    open_files: int,
    tokens_file: Path | None,
) -> None:
    """Listen until SIGINT/SIGTERM, then let the requests in flight finish."""
    hypercorn_config = httpserver.make_config(*parse_addr(config.addr))
    app = AccessLog(
        Cors(create_app(service, options, jobs), config.cors_allowed_origins), service.metrics
    )
    shutdown = trio.Event()

    async def watch_signals() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    if tokens_file is not None:
                        _reload_tokens(options, tokens_file)
                    continue
                log.info("shutting down", extra={"fields": {"signal": signum}})
                service.shutdown()
                jobs.shutdown()
                shutdown.set()
                return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch_signals)
        per_address = httpserver.ConnectionsPerAddress(
            config.max_connections_per_client,
            options.trusted_proxies,
            service.metrics.client_rejections.labels("connections_per_client").inc,
        )
        binds = await nursery.start(
            partial(
                httpserver.serve,
                app,
                hypercorn_config,
                config.max_connections,
                config.send_timeout_seconds,
                shutdown_trigger=shutdown.wait,
                per_address=per_address,
            )
        )
        log.info(
            "listening",
            extra={
                "fields": {
                    "urls": binds,
                    "max_connections": config.max_connections,
                    "max_connections_per_client": config.max_connections_per_client,
                    "open_files_limit": open_files,
                }
            },
        )
    # httpserver.serve returned: the requests in flight are done.
