"""How a job runs emcc (`emccLauncher`): through `jailside/emcc_launch.py`, which imports
emscripten's shipped `.pyc` instead of having python compile the 160 KB `emcc.py` on every
call, and which uses the memos (see compile.memos). Same output as `/usr/bin/emcc`."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Final, Literal

import attrs

SCRIPT: Final = Path(__file__).parent / "jailside" / "emcc_launch.py"
# Where the jail sees the launcher's directory and the memos (read-only but for a PCH fill).
JAIL_LAUNCHER_DIR: Final = "/emcc-trio/launcher"
JAIL_GLUE_DIR: Final = "/emcc-trio/glue"
JAIL_PCH_DIR: Final = "/emcc-trio/pch"

Mode = Literal["emcc", "em++"]
# Isolated: they run in the job dir, and with `-c` python would import from it first (a
# project's `json.py` would be the build's code). No `site`: the launcher, the build's driver
# and emscripten use the standard library only, and the search for site packages costs about
# 4 ms a start, on every compile's path.
PYTHON_FLAGS: Final = ("-I", "-S")
# The launcher compiled by the jail's python3 (`install`): python compiles a script it runs
# from source on every start (about 5 ms of CPU for this one), never one it runs as a .pyc.
COMPILED_NAME: Final = SCRIPT.stem + ".pyc"
_COMPILE = (
    "import py_compile, sys; py_compile.compile(sys.argv[1], cfile=sys.argv[2], "
    "dfile=sys.argv[3], doraise=True)"
)


@attrs.frozen
class Launcher:
    python: str  # the python3 emcc would run under (the jail's own)
    directory: Path  # the installed copy's directory on the host (see `install`)
    emscripten_root: str  # where emcc.py is
    compiled: bool = False  # whether `directory` holds COMPILED_NAME (see `install`)

    def _script(self, jailed: bool) -> str:
        where = JAIL_LAUNCHER_DIR if jailed else str(self.directory)
        return f"{where}/{COMPILED_NAME if self.compiled else SCRIPT.name}"

    def argv(self, mode: Mode, jailed: bool) -> list[str]:
        """The command prefix that runs `mode` (emcc or em++); the compile's arguments follow."""
        return [self.python, *PYTHON_FLAGS, self._script(jailed), self.emscripten_root, mode]

    def fill_glue_argv(self, material: str, entry: str) -> list[str]:
        """Compute a glue memo entry from `material` into `entry` (always jailed)."""
        return [*self._fill("--fill-glue"), material, entry]

    def fill_acorn_argv(self, material: str, entry: str) -> list[str]:
        """Compute a JS optimizer memo entry from `material` into `entry` (always jailed)."""
        return [*self._fill("--fill-acorn"), material, entry]

    def fill_pch_argv(self, material: str, header: str, output: str) -> list[str]:
        """Build the PCH `material` asks for from `header` into `output` (always jailed)."""
        return [*self._fill("--fill-pch"), material, header, output]

    def _fill(self, mode: str) -> list[str]:
        return [self.python, *PYTHON_FLAGS, self._script(True), self.emscripten_root, mode]


def install(directory: Path, python: str) -> bool:
    """Copy the launcher where the jail's unprivileged user can read it (the package may live
    under a directory it cannot reach), and compile it there with `python`, the python3 it
    runs under (a .pyc holds its python's version); whether the .pyc is there."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    temp = directory / f".{SCRIPT.name}.{os.getpid()}.tmp"
    shutil.copyfile(SCRIPT, temp)
    temp.chmod(0o644)
    temp.rename(directory / SCRIPT.name)
    compiled = directory / COMPILED_NAME
    temp = directory / f".{COMPILED_NAME}.{os.getpid()}.tmp"
    source = str(directory / SCRIPT.name)
    done = subprocess.run(
        [python, *PYTHON_FLAGS, "-c", _COMPILE, source, str(temp), source],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    if done.returncode != 0 or not temp.is_file():
        temp.unlink(missing_ok=True)
        compiled.unlink(missing_ok=True)  # a stale one would run an older launcher
        return False
    temp.chmod(0o644)
    temp.rename(compiled)
    return True


def emscripten_root(em_config_output: str) -> str | None:
    """The root `em-config EMSCRIPTEN_ROOT` printed, if it holds emcc.py."""
    root = em_config_output.strip()
    if root and os.path.isfile(os.path.join(root, "emcc.py")):
        return root
    return None
