"""The load test's server: the shared harness (`emcc_trio.testing.harness`), started with the
top-level config.json and one log that restarts append to."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from emcc_trio.testing.harness import Server, ServerStartError, start_server
from load.mix import REPO

START_SECONDS = 60.0
STOP_SECONDS = 60.0


def load_config(workdir: Path, caps: Mapping[str, Any]) -> dict[str, Any]:
    """The top-level config.json, with only the working dir, address and caps changed."""
    config: dict[str, Any] = json.loads((REPO / "config.json").read_text())
    config.update(caps)
    config.update(workingDir=str(workdir), addr="127.0.0.1:0")
    return config


def start(workdir: Path, config: Mapping[str, Any], prefix: Sequence[str] = ()) -> Server:
    """Start the server in `workdir` (logging to `server.log`); `prefix` runs it through
    another command (`ip netns exec <name>`: on another host). Exits when it cannot start."""
    try:
        return start_server(
            workdir,
            config,
            log_name="server.log",
            prefix=prefix,
            start_seconds=START_SECONDS,
        )
    except ServerStartError as exc:
        raise SystemExit(str(exc)) from exc
