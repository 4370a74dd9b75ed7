"""The documentation's shell examples, as the tests run them verbatim against a live server."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

from emcc_trio.testing.harness import REPO

DOC_URL = "http://localhost:8080"  # where the pages' commands send, replaced by the server's
_EXAMPLE = re.compile(r"```sh\n([^\n]+)\n```\n```(?:json|text)\n(.*?)\n```", re.S)


def section(page: str, heading: str) -> str:
    """The text under `## heading` of docs/`page`, up to the next `## `."""
    text = (REPO / "docs" / page).read_text()
    return text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


def examples(page: str, heading: str) -> list[tuple[str, str]]:
    """(command, what the page shows under it) of each example in that section."""
    return [(command, shown) for command, shown in _EXAMPLE.findall(section(page, heading))]


def run_example(command: str, url: str, cwd: Path | None = None) -> str:
    """Run the page's command against the server at `url`; its stdout (it must succeed)."""
    done = subprocess.run(
        ["bash", "-c", command.replace(DOC_URL, url)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout


def compare_answer(shown: str, answer: str) -> dict[str, Any] | None:
    """Check a compile example's answer against the JSON the page shows: a refusal whole, a
    build by its keys and compiler output (its id and usage differ from run to run). The
    build's body, for the caller to run; None for a refusal."""
    expected, got = json.loads(shown), json.loads(answer)
    if not expected["ok"]:
        assert got == expected
        return None
    assert sorted(got) == sorted(expected)
    assert got["output"] == expected["output"]
    built: dict[str, Any] = got
    return built
