"""config.json: defaults, validation naming the key, path resolution, refusing to start."""

from __future__ import annotations

import json
import re
import resource
from pathlib import Path

import attrs
import pytest

from emcc_trio.config import (
    DEFAULT_ARGS,
    KEYS,
    REDIS_URL_ENV,
    Config,
    ConfigError,
    load,
    parse,
    resolve_paths,
)
from emcc_trio.storage.redis_url import SentinelUrl, parse_sentinel_url, redact_url
from emcc_trio.testing.harness import REPO, serve_once

SEED_DEFAULTS = {
    "workingDir": "/srv/emcc-sandboxd",
    "addr": ":8080",
    "baseDir": ".",
    "jobsDir": "jobs",
    "artifactsDir": "artifacts",
    "enableStaticArtifacts": True,
    "artifactTTLDays": 3,
    "cleanupIntervalMins": 30,
    "defaultArgs": [
        "-sINVOKE_RUN=0",
        "-sENVIRONMENT=web",
        "-sALLOW_MEMORY_GROWTH=1",
        "-sMODULARIZE=1",
    ],
    "nsjailEnabled": False,
    "nsjailPath": "nsjail",
    "cgroupV2Root": "cgroup",
    "enableResourceGating": False,
    "jobMemoryEstimateMB": 256,
}


@pytest.mark.unit
def test_seed_defaults() -> None:
    config = Config()
    by_key = {KEYS[f.name]: getattr(config, f.name) for f in attrs.fields(Config)}
    for key, value in SEED_DEFAULTS.items():
        expected = tuple(value) if isinstance(value, list) else value
        assert by_key[key] == expected, key
    assert config.default_args == DEFAULT_ARGS


@pytest.mark.unit
def test_missing_file_means_defaults(tmp_path: Path) -> None:
    assert load(tmp_path / "absent.json") == Config()


@pytest.mark.unit
def test_empty_object_means_defaults() -> None:
    assert parse("{}") == Config()


@pytest.mark.unit
def test_every_key_round_trips() -> None:
    text = json.dumps({**SEED_DEFAULTS, "addr": "127.0.0.1:9000", "jobPidsMax": 32})
    config = parse(text)
    assert config.addr == "127.0.0.1:9000"
    assert config.job_pids_max == 32


@pytest.mark.unit
def test_cors_origins_are_exact_origins_or_a_star() -> None:
    origins = ["https://example.com", "http://127.0.0.1:8443", "http://[::1]:9000", "*"]
    config = parse(json.dumps({"corsAllowedOrigins": origins}))
    assert config.cors_allowed_origins == tuple(origins)
    assert Config().cors_allowed_origins == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"colour": "blue"}', "unknown key(s): colour"),
        ('{"addr": 8080}', "addr: expected a string, got int"),
        ('{"addr": "8080"}', "addr: not HOST:PORT"),
        ('{"addr": ":99999"}', "addr: not HOST:PORT"),
        ('{"enableStaticArtifacts": "yes"}', "enableStaticArtifacts: expected true or false"),
        ('{"jobMemoryEstimateMB": 1.5}', "jobMemoryEstimateMB: expected a whole number"),
        ('{"jobMemoryEstimateMB": true}', "jobMemoryEstimateMB: expected a whole number"),
        ('{"jobMemoryEstimateMB": 0}', "jobMemoryEstimateMB: must be greater than 0"),
        ('{"cleanupIntervalMins": -1}', "cleanupIntervalMins: must not be negative"),
        ('{"artifactTTLDays": -0.5}', "artifactTTLDays: must not be negative"),
        ('{"defaultArgs": "-O2"}', "defaultArgs: expected a list of strings"),
        ('{"defaultArgs": [1]}', "defaultArgs: expected a list of strings"),
        ('{"cgroupDriver": "v3"}', "cgroupDriver: must be one of auto, v2, v1, none"),
        ('{"jobPidsMax": 4}', "jobPidsMax: emcc needs at least 16 processes"),
        ('{"jobsDir": "same", "artifactsDir": "same"}', "artifactsDir: must differ"),
        ('{"maxBodyBytes": 0}', "maxBodyBytes: must be greater than 0"),
        ('{"bodyTimeoutSeconds": 0}', "bodyTimeoutSeconds: must be greater than 0"),
        ('{"bodyTimeoutSeconds": "30"}', "bodyTimeoutSeconds: expected a number"),
        ('{"maxConnections": 0}', "maxConnections: must be greater than 0"),
        ('{"maxConnections": 10.5}', "maxConnections: expected a whole number"),
        ('{"cacheMaxMB": 0}', "cacheMaxMB: must be greater than 0"),
        ('{"cacheDir": "jobs"}', "cacheDir: must differ from jobsDir and artifactsDir"),
        ('{"cacheEnabled": "no"}', "cacheEnabled: expected true or false"),
        ('{"corsAllowedOrigins": "*"}', "corsAllowedOrigins: expected a list of strings"),
        (
            '{"corsAllowedOrigins": ["https://example.com/"]}',
            "corsAllowedOrigins: 'https://example.com/' is not '*' or an origin",
        ),
        ('{"corsAllowedOrigins": ["example.com"]}', "corsAllowedOrigins: 'example.com' is not"),
        ("[]", "config must be a JSON object"),
        ("{", "config is not valid JSON"),
    ],
)
@pytest.mark.unit
def test_validation_errors_name_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(text)
    assert message in str(info.value)


@pytest.mark.unit
def test_relative_paths_resolve_from_working_dir(tmp_path: Path) -> None:
    config = parse(
        json.dumps(
            {"workingDir": "srv", "baseDir": "data", "jobsDir": "j", "artifactsDir": "/abs/a"}
        )
    )
    paths = resolve_paths(config, tmp_path)
    assert paths.working_dir == tmp_path / "srv"
    assert paths.base_dir == tmp_path / "srv" / "data"
    assert paths.jobs_dir == tmp_path / "srv" / "data" / "j"
    assert paths.artifacts_dir == Path("/abs/a")
    assert paths.cgroup_root == tmp_path / "srv" / "cgroup"


@pytest.mark.unit
def test_empty_working_dir_is_the_start_dir(tmp_path: Path) -> None:
    paths = resolve_paths(parse('{"workingDir": ""}'), tmp_path)
    assert paths.working_dir == tmp_path
    assert paths.jobs_dir == tmp_path / "jobs"


@pytest.mark.unit
def test_top_level_config_is_valid_and_secure() -> None:
    config = load(REPO / "config.json")
    assert config.nsjail_enabled
    assert config.enable_resource_gating
    assert config.cgroup_driver == "auto"
    assert config.addr.startswith("127.0.0.1:")


def test_server_refuses_to_start_on_a_bad_key(tmp_path: Path) -> None:
    done = serve_once(tmp_path, {"workingDir": str(tmp_path), "queueMax": -3})
    assert done.returncode == 2
    assert "config error: queueMax: must be greater than 0" in done.stderr


def test_server_refuses_to_start_when_caps_cannot_be_enforced(tmp_path: Path) -> None:
    not_a_cgroup = tmp_path / "not-a-cgroup"
    not_a_cgroup.mkdir()
    done = serve_once(
        tmp_path,
        {
            "workingDir": str(tmp_path),
            "addr": "127.0.0.1:0",
            "cgroupDriver": "v2",
            "cgroupV2Root": str(not_a_cgroup),
        },
    )
    assert done.returncode == 2
    assert "refusing to start" in done.stderr
    assert f"{not_a_cgroup} is not a cgroup v2 directory" in done.stderr
    assert '"cgroupDriver": "none"' in done.stderr


def test_server_refuses_to_start_when_max_connections_exceeds_the_open_files_limit(
    tmp_path: Path,
) -> None:
    done = serve_once(
        tmp_path,
        {"workingDir": str(tmp_path), "addr": "127.0.0.1:0", "maxConnections": 1000},
        # 1 000 connections and the server's own files do not fit in 1 024 descriptors.
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024)),
    )
    assert done.returncode == 2
    assert (
        "refusing to start: maxConnections 1000 needs 1256 open files (256 for the server "
        "itself), but the hard RLIMIT_NOFILE is 1024: lower maxConnections or raise the limit"
    ) in done.stderr


def test_server_refuses_to_start_without_the_compiler(tmp_path: Path) -> None:
    done = serve_once(
        tmp_path,
        {"workingDir": str(tmp_path), "addr": "127.0.0.1:0", "emccPath": "/no/such/emcc"},
    )
    assert done.returncode == 2
    assert "emccPath: cannot find the compiler '/no/such/emcc'" in done.stderr


@pytest.mark.unit
def test_redis_url_is_checked_and_its_password_never_shown() -> None:
    assert parse('{"redisUrl": "rediss://:pw@redis.example:6380/2"}').redis_url == (
        "rediss://:pw@redis.example:6380/2"
    )
    with pytest.raises(ConfigError) as excinfo:
        parse('{"redisUrl": "http://user:hunter2@redis.example:6379"}')
    message = str(excinfo.value)
    assert message.startswith(
        "redisUrl: must start with one of redis://, rediss://, unix://, redis+sentinel://"
    )
    assert "hunter2" not in message
    assert "user:***@redis.example:6379" in message


@pytest.mark.unit
def test_a_sentinel_url_names_its_sentinels_service_and_database() -> None:
    url = "redis+sentinel://:pw@10.0.0.1,10.0.0.2:26380,[fd00::3]/emcc-trio/2"
    assert parse(json.dumps({"redisUrl": url})).redis_url == url
    assert parse_sentinel_url(url) == SentinelUrl(
        sentinels=(("10.0.0.1", 26379), ("10.0.0.2", 26380), ("fd00::3", 26379)),
        service="emcc-trio",
        db=2,
        username=None,
        password="pw",
    )
    assert parse_sentinel_url("redis+sentinel://s1/main").db == 0


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("redis+sentinel://:hunter2@s1:26379", "needs the name of the primary"),
        ("redis+sentinel://:hunter2@s1:26379/", "needs the name of the primary"),
        ("redis+sentinel://:hunter2@s1:port/main", "a Sentinel port must be 1-65535"),
        ("redis+sentinel://:hunter2@s1:70000/main", "a Sentinel port must be 1-65535"),
        ("redis+sentinel://:hunter2@s1,/main", "a Sentinel without a host"),
        ("redis+sentinel://:hunter2@s1/main/zero", "the database after the service name"),
    ],
)
@pytest.mark.unit
def test_a_bad_sentinel_url_is_refused_by_name(url: str, why: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        parse(json.dumps({"redisUrl": url}))
    message = str(excinfo.value)
    assert message.startswith(f"redisUrl: {why}")
    assert "hunter2" not in message
    assert ":***@" in message


@pytest.mark.unit
def test_redact_url() -> None:
    assert redact_url("redis://:pw@h:1/0") == "redis://:***@h:1/0"
    assert redact_url("rediss://u:pw@h:1") == "rediss://u:***@h:1"
    assert redact_url("redis://h:1/0") == "redis://h:1/0"


@pytest.mark.unit
def test_redis_url_from_the_environment(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"redisUrl": "redis://file:6379"}')
    env = {REDIS_URL_ENV: "redis://:pw@env:6379/1"}
    assert load(tmp_path / "config.json", env).redis_url == "redis://:pw@env:6379/1"
    assert load(tmp_path / "config.json", {}).redis_url == "redis://file:6379"
    assert load(tmp_path / "absent.json", env).redis_url == "redis://:pw@env:6379/1"
    with pytest.raises(ConfigError, match=r"^EMCC_TRIO_REDIS_URL: redisUrl: must start"):
        load(tmp_path / "absent.json", {REDIS_URL_ENV: "localhost:6379"})


@pytest.mark.parametrize(
    ("text", "budget"),
    [("{}", None), ('{"memoryBudgetMB": null}', None), ('{"memoryBudgetMB": 0}', 0)],
)
@pytest.mark.unit
def test_memory_budget_unset_means_the_default_and_zero_the_seeds(
    text: str, budget: int | None
) -> None:
    assert parse(text).memory_budget_mb == budget


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"memoryBudgetMB": -1}', "memoryBudgetMB: must not be negative"),
        ('{"memoryBudgetMB": 1.5}', "memoryBudgetMB: expected a whole number"),
        ('{"memoryBudgetMB": "75%"}', "memoryBudgetMB: expected a whole number"),
        (
            '{"memoryBudgetMB": 512, "jobMemoryMaxMB": 1024}',
            "memoryBudgetMB: must be at least jobMemoryMaxMB (1024)",
        ),
        (
            '{"memoryBudgetMB": 512, "jobMemoryMaxMB": 256, "jobMemoryEstimateMB": 600}',
            "memoryBudgetMB: must be at least jobMemoryEstimateMB (600)",
        ),
        # The disk cap must hold a project of the largest size and its artifact.
        ('{"jobDiskMaxMB": 0}', "jobDiskMaxMB: must be greater than 0"),
        (
            '{"jobDiskMaxMB": 95, "maxProjectMB": 64, "maxArtifactMB": 32}',
            "jobDiskMaxMB: must be at least maxProjectMB + maxArtifactMB (64 + 32)",
        ),
    ],
)
@pytest.mark.unit
def test_memory_budget_and_disk_cap_validation(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(text)
    assert message in str(info.value)


@pytest.mark.unit
def test_memory_budget_equal_to_the_job_cap_is_valid() -> None:
    assert parse('{"memoryBudgetMB": 1024, "jobMemoryMaxMB": 1024}').memory_budget_mb == 1024


@pytest.mark.unit
def test_a_disk_cap_of_a_project_and_its_artifact_is_valid() -> None:
    text = '{"jobDiskMaxMB": 96, "maxProjectMB": 64, "maxArtifactMB": 32}'
    assert parse(text).job_disk_max_mb == 96


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"maxArtifactMB": 0}', "maxArtifactMB: must be greater than 0"),
        ('{"artifactQuotaMB": -1}', "artifactQuotaMB: must not be negative"),
        (
            '{"maxArtifactMB": 64, "artifactQuotaMB": 32}',
            "artifactQuotaMB: must be 0 (no quota) or at least maxArtifactMB (64)",
        ),
        ('{"artifactQuotaWindowMinutes": 0}', "artifactQuotaWindowMinutes: must be greater"),
        ('{"maxConnectionsPerClient": 0}', "maxConnectionsPerClient: must be greater than 0"),
        ('{"cacheScope": "tenant"}', "cacheScope: must be one of global, client"),
        ('{"defaultArgs": ["-DX=\\udfff"]}', "defaultArgs: '-DX=\\udfff' contains a lone"),
        ('{"extraAllowedArgs": ["-DX=\\udfff"]}', "extraAllowedArgs: '-DX=\\udfff' contains"),
    ],
)
@pytest.mark.unit
def test_what_one_client_may_cost_is_checked_by_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse(text)
