"""A project sent as one archive (`.tar`, `.tar.gz`, `.tar.bz2`, `.tar.xz`, `.zip`), unpacked
in memory into the same (path, content) files any other encoding gives.

Extraction reads one member at a time and stops at the first fault: only regular files and
directories (no links, devices or FIFOs), no absolute or `..` names, at most `maxFiles` files
and `maxProjectMB` of content, and no member that unpacks to more than `MAX_RATIO` times its
compressed size. Nothing is written to disk here; the path policy (`sources.check_files`)
then checks every name as for `files`. A single top-level directory holding everything (as in
a release tarball, `yaml-0.2.5/...`) is stripped.
"""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from collections.abc import Iterator
from typing import Final

from emcc_trio.compile.sources import ProjectLimits
from emcc_trio.errors import RequestError

TAR_TYPES: Final = frozenset(
    {
        "application/x-tar",
        "application/gzip",
        "application/x-gzip",
        "application/x-compressed-tar",
        "application/x-bzip2",
        "application/x-xz",
    }
)
ZIP_TYPES: Final = frozenset({"application/zip", "application/x-zip-compressed"})
ARCHIVE_TYPES: Final = TAR_TYPES | ZIP_TYPES
# A member may unpack to at most this many times its compressed size (zip), and the whole
# archive to at most this many times the body (tar, whose members share one stream).
MAX_RATIO: Final = 200


class ArchiveError(RequestError):
    """The archive is refused; the message names the member and says why (a 400)."""


class ArchiveTooLargeError(ArchiveError):
    """The archive unpacks to more than the project may hold (a 413)."""

    status = 413


def unpack(body: bytes, content_type: str, limits: ProjectLimits) -> list[tuple[str, bytes]]:
    """The archive's files, (path, content), in archive order; ArchiveError on any fault."""
    budget = min(limits.max_total_bytes, MAX_RATIO * max(len(body), 1))
    members = _zip(body, limits, budget) if content_type in ZIP_TYPES else _tar(body, budget)
    files: list[tuple[str, bytes]] = []
    for path, content in members:
        if len(files) >= limits.max_files:
            raise ArchiveTooLargeError(
                f"the archive holds more than {limits.max_files} files (maxFiles)"
            )
        files.append((path, content))
    return _strip_top_directory(files)


def _name(raw: str) -> str:
    name = raw.removeprefix("./").rstrip("/")
    if raw.startswith("/") or ".." in name.split("/"):
        raise ArchiveError(f"archive member {raw!r} is not allowed: absolute or with '..'")
    return name


def _over_budget(name: str, budget: int) -> ArchiveTooLargeError:
    return ArchiveTooLargeError(
        f"archive member {name!r} takes the unpacked project past {budget} bytes "
        f"(maxProjectMB, or {MAX_RATIO} times the archive's size)"
    )


def _tar(body: bytes, budget: int) -> Iterator[tuple[str, bytes]]:
    used = 0
    try:
        # Stream mode: one member after the other, never a seek back.
        with tarfile.open(fileobj=io.BytesIO(body), mode="r|*") as archive:
            for member in archive:
                name = _name(member.name)
                if member.isdir():
                    continue
                if not member.isreg():
                    kind = "a link" if member.issym() or member.islnk() else "not a regular file"
                    raise ArchiveError(f"archive member {member.name!r} is {kind}")
                if used + member.size > budget:
                    raise _over_budget(member.name, budget)
                stream = archive.extractfile(member)
                content = b"" if stream is None else stream.read(member.size + 1)
                if len(content) != member.size:
                    raise ArchiveError(f"archive member {member.name!r} is truncated")
                used += len(content)
                yield name, content
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise ArchiveError(f"the body is not a readable tar archive: {exc}") from exc


def _zip(body: bytes, limits: ProjectLimits, budget: int) -> Iterator[tuple[str, bytes]]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(body))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ArchiveError(f"the body is not a readable zip archive: {exc}") from exc
    used = 0
    with archive:
        infos = archive.infolist()
        if len(infos) > 2 * limits.max_files:
            raise ArchiveTooLargeError(
                f"the archive holds {len(infos)} entries (at most {limits.max_files} files: "
                "maxFiles)"
            )
        for info in infos:
            name = _name(info.filename)
            mode = info.external_attr >> 16
            if info.is_dir():
                continue
            # Unix zips keep the file type in the high bits; others (and Python's) may not.
            if stat.S_IFMT(mode) not in (0, stat.S_IFREG):
                kind = "a link" if stat.S_ISLNK(mode) else "not a regular file"
                raise ArchiveError(f"archive member {info.filename!r} is {kind}")
            if info.flag_bits & 0x1:
                raise ArchiveError(f"archive member {info.filename!r} is encrypted")
            if info.file_size > MAX_RATIO * max(info.compress_size, 1):
                raise ArchiveTooLargeError(
                    f"archive member {info.filename!r} unpacks to more than {MAX_RATIO} "
                    "times its compressed size"
                )
            if used + info.file_size > budget:
                raise _over_budget(info.filename, budget)
            try:
                with archive.open(info) as stream:
                    # The declared size can lie: read at most one byte past it.
                    content = stream.read(info.file_size + 1)
            except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError) as exc:
                raise ArchiveError(
                    f"archive member {info.filename!r} is unreadable: {exc}"
                ) from exc
            if len(content) != info.file_size:
                raise ArchiveError(f"archive member {info.filename!r} is not the size it says")
            used += len(content)
            yield name, content


def _strip_top_directory(files: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    tops = {path.partition("/")[0] for path, _ in files}
    if len(tops) != 1 or not all("/" in path for path, _ in files):
        return files
    return [(path.partition("/")[2], content) for path, content in files]
