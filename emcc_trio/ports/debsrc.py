"""Upstream source trees from Debian 12's archive, unpacked once per machine.

A tree is the `.orig.tar.*` of a pinned source package, fetched with `apt-get source
--download-only` (run `scripts/deb-src.sh` once, as root, to enable deb-src) and unpacked with
tarfile, Debian's patches not applied (so dpkg-dev is not needed); or, for what Debian ships
only as a binary package (boost's headers), that package's files. Each lands in
`sources_dir()/<key>/`; the marker `<key>.complete` beside it is written last, so a torn
download is done again. apt checks every file it downloads against the archive's hashes.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Final

import attrs

SOURCES_DIR_ENV: Final = "EMCC_TRIO_SOURCES_DIR"
DEFAULT_SOURCES_DIR: Final = Path("/var/cache/emcc-trio/sources")


@attrs.frozen(kw_only=True)
class DebianSource:
    """A pinned Debian package. A point release can retire the pinned revision: any revision
    of the same upstream version has the same `.orig` tarball, so the unpinned package
    serves too (its tarball is checked by name). `binary`: a binary package, whose files
    are the tree (`Debian's /usr/...`)."""

    package: str
    version: str  # the upstream version, as in the .orig tarball's name
    debian_version: str  # apt-get source PACKAGE=VERSION
    binary: bool = False

    @property
    def key(self) -> str:
        return f"{self.package}-{self.version}"


def sources_dir() -> Path:
    return Path(os.environ.get(SOURCES_DIR_ENV) or DEFAULT_SOURCES_DIR)


def fetch(source: DebianSource) -> Path:
    """The unpacked tree of `source`, downloaded the first time: the tarball's one top-level
    dir, or a binary package's root (holding `usr/`)."""
    root = sources_dir()
    tree = root / source.key
    marker = root / f"{source.key}.complete"
    if marker.exists():
        return tree
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / f".{source.key}.lock"):
        if marker.exists():  # another process fetched it meanwhile
            return tree
        with tempfile.TemporaryDirectory(dir=root, prefix=f".{source.key}.") as scratch:
            Path(scratch).chmod(0o755)  # for apt's _apt user
            unpacked = Path(scratch) / "unpacked"
            if source.binary:
                deb = _download_binary(source, Path(scratch) / "download")
                subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
                top = unpacked
            else:
                orig = _download(source, Path(scratch) / "download")
                with tarfile.open(orig) as archive:
                    archive.extractall(unpacked, filter="data")
                [top] = unpacked.iterdir()  # the tarball's one top-level dir
            if tree.exists():  # a torn fetch
                shutil.rmtree(tree)
            top.rename(tree)
        marker.write_text(f"{source.package}={source.debian_version}\n")
    return tree


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _apt_dir(into: Path) -> None:
    into.mkdir()
    if os.geteuid() == 0:  # apt downloads as _apt, which must be able to write here
        with suppress(KeyError):
            os.chown(into, pwd.getpwnam("_apt").pw_uid, -1)


def _apt(command: list[str], source: DebianSource, into: Path) -> str:
    """Run `command` with PACKAGE=VERSION, then PACKAGE; the stderr of the last attempt."""
    stderr = ""
    for attempt in (f"{source.package}={source.debian_version}", source.package):
        done = subprocess.run(
            [*command, attempt], cwd=into, capture_output=True, text=True, check=False
        )
        if done.returncode == 0:
            return ""
        stderr = done.stderr
    return stderr


def _download(source: DebianSource, into: Path) -> Path:
    """apt-get source --download-only into `into`; the path of the .orig tarball. The orig
    is enough: when apt fails on a file beside it (a security revision's .debian.tar that
    the mirror has retired), a verified orig it already saved is used."""
    _apt_dir(into)
    failed = _apt(["apt-get", "source", "--download-only", "-qq"], source, into)
    prefix = f"{source.package}_{source.version}.orig.tar."
    origs = [p for p in into.iterdir() if p.name.startswith(prefix) and p.suffix != ".asc"]
    if len(origs) != 1:
        spec = f"{source.package}={source.debian_version}"
        hint = " (run scripts/deb-src.sh as root)" if "deb-src" in failed else ""
        raise RuntimeError(f"apt-get source {spec} gave no single {prefix}*{hint}:\n{failed}")
    return origs[0]


def _download_binary(source: DebianSource, into: Path) -> Path:
    _apt_dir(into)
    failed = _apt(["apt-get", "download", "-qq"], source, into)
    debs = [p for p in into.iterdir() if p.name.startswith(f"{source.package}_")]
    if len(debs) != 1:
        spec = f"{source.package}={source.debian_version}"
        raise RuntimeError(f"apt-get download {spec} gave no single .deb:\n{failed}")
    return debs[0]
