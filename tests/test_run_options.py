"""A run's options and outcome, parsed and decided by pure functions (no server here)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emcc_trio.errors import RequestError
from emcc_trio.execute.options import (
    MB,
    RunLimits,
    parse_argv,
    parse_limits,
    parse_run_options,
    parse_stdin,
    run_compile_args,
)
from emcc_trio.execute.runner import outcome
from emcc_trio.models import Limit

pytestmark = pytest.mark.unit
SERVER = RunLimits(memory_bytes=256 * MB, cpu_seconds=5, timeout_seconds=10, output_bytes=1000)
NAMES = st.lists(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True), max_size=4)


def test_limits_may_be_lowered_never_raised() -> None:
    lowered = parse_limits({"memoryMB": 64, "cpuSeconds": 0.5, "outputBytes": 10}, SERVER)
    assert lowered == RunLimits(
        memory_bytes=64 * MB, cpu_seconds=0.5, timeout_seconds=10, output_bytes=10
    )
    assert parse_limits(None, SERVER) == SERVER
    with pytest.raises(RequestError, match="above this server's cap of 256"):
        parse_limits({"memoryMB": 257}, SERVER)
    with pytest.raises(RequestError, match="positive whole number"):
        parse_limits({"outputBytes": 1.5}, SERVER)
    with pytest.raises(RequestError, match="positive number"):
        parse_limits({"cpuSeconds": "1"}, SERVER)


def test_argv_and_stdin_checks() -> None:
    assert parse_argv(["a", "é"]) == ("a", "é")
    with pytest.raises(RequestError, match="at most 1024"):
        parse_argv(["x"] * 1025)
    with pytest.raises(RequestError, match="bytes"):
        parse_argv(["x" * 40000, "y" * 40000])
    with pytest.raises(RequestError, match="lone surrogate"):
        parse_argv(["\ud800"])
    assert parse_stdin("é", None) == "é".encode()
    assert parse_stdin(None, "AAE=") == b"\x00\x01"
    assert parse_stdin(b"\xff", None) == b"\xff"  # a multipart upload
    assert parse_run_options({}, SERVER).stdin == b""


@given(NAMES, st.booleans())
def test_run_args_export_call_main_alongside_the_users_methods(
    names: list[str], bracketed: bool
) -> None:
    listed = ",".join(names)
    given_args: tuple[str, ...] = ("-O2",)
    if names:
        value = f"[{listed}]" if bracketed else listed
        given_args += (f"-sEXPORTED_RUNTIME_METHODS={value}",)
    args = run_compile_args(given_args)
    methods = [a for a in args if a.startswith("-sEXPORTED_RUNTIME_METHODS=")]
    exported = re.split(r"[,\[\]]", methods[-1].split("=", 1)[1])
    assert "callMain" in exported
    assert set(names) <= set(exported)
    # The runner's settings come last, so no earlier argument undoes them.
    assert args[-5:-1] == (
        "-sENVIRONMENT=web",
        "-sMODULARIZE=1",
        "-sINVOKE_RUN=0",
        "-sEXIT_RUNTIME=1",
    )


def test_run_args_keep_filesystem_0_and_refuse_threads() -> None:
    assert "-sFORCE_FILESYSTEM=1" not in run_compile_args(("-sFILESYSTEM=0",))
    assert run_compile_args(())[-1] == "-sFORCE_FILESYSTEM=1"
    with pytest.raises(RequestError, match="runs have no threads"):
        run_compile_args(("-pthread",))


@pytest.mark.parametrize(
    ("status", "exit_code", "limit", "expected"),
    [
        (b'{"exitCode": 3}', 0, None, (3, None)),
        (b'{"signal": "SIGABRT"}', 0, None, (None, "SIGABRT")),
        # A program that writes its own status may not name a signal the runner cannot.
        (b'{"signal": "SIGHUP"}', 0, None, (0, None)),
        (b'{"exitCode": true}', 5, None, (5, None)),
        (b"", 137, None, (None, "SIGKILL")),
        (b"garbage", 2, None, (2, None)),
        (b'{"exitCode": 0}', 0, "memory", (None, "SIGKILL")),
        (None, None, "timeout", (None, "SIGKILL")),
    ],
)
def test_how_a_run_ended(
    status: bytes | None,
    exit_code: int | None,
    limit: Limit | None,
    expected: tuple[int | None, str | None],
) -> None:
    assert outcome(status, exit_code, limit) == expected
