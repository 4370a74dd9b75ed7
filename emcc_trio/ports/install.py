"""Build the service's emscripten cache: Debian's prebuilt sysroot plus the ports of the catalog,
from Debian 12's sources, then leave it for the jail to mount read-only.

    python -m emcc_trio.ports.install [--cache DIR] [--force]

Skipped when DIR's manifest already has the digest of this install's inputs (the catalog,
the recipes and their adaptations, this procedure, the emscripten release); otherwise built
in a scratch directory beside DIR and renamed into place, so a server never sees half a
cache. Run as root by scripts/bootstrap.sh. Each port gets its plain and its `-flto` build,
as emcc picks the one that matches the compile.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from emcc_trio.ports import debsrc, installed
from emcc_trio.ports.catalog import CATALOG, Port

DEFAULT_CACHE: Final = Path("/var/lib/emcc-trio/emscripten-cache")
EMSCRIPTEN: Final = Path("/usr/share/emscripten")
DEBIAN_CACHE: Final = EMSCRIPTEN / "cache"
EMBUILD: Final = Path(__file__).with_name("embuild.py")


def inputs_digest(ports: Sequence[Port] = CATALOG) -> str:
    """Everything that decides what the install builds."""
    digest = hashlib.sha256()
    digest.update(repr(tuple(ports)).encode())
    for path in (
        EMBUILD,
        Path(__file__),
        EMSCRIPTEN / "emscripten-version.txt",
        EMSCRIPTEN / "tools" / "ports" / "__init__.py",
        *(EMSCRIPTEN / "tools" / "ports" / f"{port.name}.py" for port in ports),
    ):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _emscripten_env(cache: Path) -> dict[str, str]:
    return {
        **os.environ,
        "EM_CACHE": str(cache),
        "EM_FROZEN_CACHE": "",  # empty: false (emscripten reads the variable as text)
        "EMCC_SKIP_SANITY_CHECK": "1",  # a failed check would clear the whole cache
        "NODE_PATH": "/usr/share/nodejs",
    }


def _embuild(cache: Path, *args: str) -> str:
    done = subprocess.run(
        ["python3", str(EMBUILD), *args],
        env=_emscripten_env(cache),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"ports: embuild {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def _place(cache: Path, port: Port, url: str, subdir: str) -> None:
    """The port's Debian tree where its recipe looks, with the marker that says it is there."""
    tree = debsrc.fetch(port.source)
    if port.source.binary:  # boost: the package's headers are the tree
        tree = tree / "usr" / "include" / "boost"
    base = cache / "ports" / port.name
    base.mkdir(parents=True)
    shutil.copytree(tree, base / subdir, symlinks=True)
    (base / ".emscripten_url").write_text(url + "\n")


def _trim(cache: Path, where: dict[str, list[str]]) -> None:
    """Drop the sources and the build trees once the libraries and headers are in the
    sysroot: a compile only checks the markers, and that SDL2's build dir exists."""
    for name, (_url, subdir) in where.items():
        tree = cache / "ports" / name / subdir
        shutil.rmtree(tree)
        tree.mkdir()
    for build_dir in (cache / "ports-builds").iterdir():
        shutil.rmtree(build_dir)
        build_dir.mkdir()


def _size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def build(cache_dir: Path, ports: Sequence[Port] = CATALOG) -> installed.InstalledPorts:
    started = time.monotonic()
    digest = inputs_digest(ports)
    cache_dir.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=cache_dir.parent, prefix=f".{cache_dir.name}."))
    try:
        cache = scratch / "cache"
        shutil.copytree(DEBIAN_CACHE, cache, symlinks=True)
        where = json.loads(_embuild(cache, "where", *(port.name for port in ports)))
        for port in ports:
            _place(cache, port, *where[port.name])
        targets = [target for port in ports for target in port.build_targets]
        for lto in ((), ("--lto",)):
            print(f"ports: building {' '.join(targets)} {' '.join(lto)}", file=sys.stderr)
            _embuild(cache, "build", *lto, *targets)
        _trim(cache, where)
        seconds = time.monotonic() - started
        names = [port.name for port in ports]
        text = installed.manifest_json(digest, names, seconds, _size(cache))
        (cache / installed.MANIFEST).write_text(text)
        subprocess.run(["chmod", "-R", "a+rX,go-w", str(cache)], check=True)
        old = scratch / "old"
        if cache_dir.exists():
            cache_dir.rename(old)
        cache.rename(cache_dir)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    done = installed.load(cache_dir)
    assert done is not None
    return done


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emcc_trio.ports.install")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where it goes")
    parser.add_argument("--force", action="store_true", help="build even when up to date")
    options = parser.parse_args(argv)
    try:
        present = installed.load(options.cache)
    except installed.ManifestError:
        present = None
    if present is not None and present.digest == inputs_digest() and not options.force:
        print(f"ports: up to date in {options.cache}", file=sys.stderr)
        return 0
    built = build(options.cache)
    print(
        f"ports: {len(built.ports)} ports in {built.cache_dir}, "
        f"{built.size_bytes / 2**20:.0f} MiB, built in {built.built_seconds:.0f} s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
