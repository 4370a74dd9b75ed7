"""Archive bodies and the new path forms, pure: links, devices, absolute and `..` members,
bombs and oversized trees are refused with a message naming the member, and no `-I`
spelling, archive member name or `sources` pattern ever admits a path outside the job dir."""

from __future__ import annotations

import io
import os
import posixpath
import tarfile
import zipfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emcc_trio.api.archives import MAX_RATIO, ArchiveError, ArchiveTooLargeError, unpack
from emcc_trio.api.bodies import DEFAULT_RULES, Rules, from_archive
from emcc_trio.compile.policy import STANDARD
from emcc_trio.compile.sources import (
    DEFAULT_LIMITS,
    FileError,
    ProjectLimits,
    check_files,
    check_patterns,
    select_sources,
)
from emcc_trio.errors import RequestError

pytestmark = pytest.mark.unit

MAIN = ("main.c", b"int main(void) { return 0; }\n")


def tar_of(*members: tarfile.TarInfo, contents: dict[str, bytes] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for member in members:
            data = (contents or {}).get(member.name)
            archive.addfile(member, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def regular(name: str, content: bytes) -> tuple[tarfile.TarInfo, dict[str, bytes]]:
    info = tarfile.TarInfo(name)
    info.size = len(content)
    return info, {name: content}


def tar_files(*files: tuple[str, bytes]) -> bytes:
    members, contents = [], {}
    for name, content in files:
        info, data = regular(name, content)
        members.append(info)
        contents.update(data)
    return tar_of(*members, contents=contents)


def special(name: str, kind: bytes, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def test_a_tree_unpacks_with_its_top_directory_stripped() -> None:
    body = tar_files(("lib-1.0/main.c", MAIN[1]), ("lib-1.0/src/a.c", b"int a;\n"))
    files = unpack(body, "application/gzip", DEFAULT_LIMITS)
    assert files == [("main.c", MAIN[1]), ("src/a.c", b"int a;\n")]


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (special("evil", tarfile.SYMTYPE, "/etc/passwd"), "is a link"),
        (special("hard", tarfile.LNKTYPE, "main.c"), "is a link"),
        (special("dev", tarfile.CHRTYPE), "is not a regular file"),
        (special("fifo", tarfile.FIFOTYPE), "is not a regular file"),
    ],
)
def test_links_and_devices_are_refused(member: tarfile.TarInfo, message: str) -> None:
    info, contents = regular("main.c", MAIN[1])
    with pytest.raises(ArchiveError, match=message) as refused:
        unpack(tar_of(info, member, contents=contents), "application/gzip", DEFAULT_LIMITS)
    assert repr(member.name) in str(refused.value)
    assert refused.value.status == 400


@pytest.mark.parametrize("name", ["/etc/passwd", "../up.c", "src/../../up.c", "./../x.h"])
def test_absolute_and_parent_members_are_refused(name: str) -> None:
    with pytest.raises(ArchiveError, match=r"absolute or with '\.\.'"):
        unpack(tar_files(MAIN, (name, b"x")), "application/gzip", DEFAULT_LIMITS)


def test_a_gzip_bomb_stops_at_the_project_bound() -> None:
    """A member that says (and is) 128 MiB of zeros: refused before it is read, as a 413."""
    info = tarfile.TarInfo("zeros.h")
    info.size = 128 << 20
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:

        class Zeros(io.RawIOBase):
            left = info.size

            def readable(self) -> bool:
                return True

            def readinto(self, target: bytearray | memoryview) -> int:  # type: ignore[override]
                count = min(len(target), self.left)
                target[:count] = bytes(count)
                self.left -= count
                return count

        archive.addfile(info, io.BufferedReader(Zeros()))
    body = buffer.getvalue()
    assert len(body) < 1 << 20
    with pytest.raises(ArchiveTooLargeError, match=r"'zeros\.h'") as refused:
        unpack(body, "application/gzip", DEFAULT_LIMITS)
    assert refused.value.status == 413


def test_a_zip_bomb_is_refused_by_its_ratio() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(*MAIN)
        archive.writestr("bomb.h", bytes(50 << 20))
    with pytest.raises(ArchiveTooLargeError, match=f"more than {MAX_RATIO} times"):
        unpack(buffer.getvalue(), "application/zip", DEFAULT_LIMITS)


def test_a_zip_link_is_refused() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(*MAIN)
        link = zipfile.ZipInfo("passwd")
        link.external_attr = (0o120777) << 16  # a symbolic link, as Info-ZIP stores one
        archive.writestr(link, "/etc/passwd")
    with pytest.raises(ArchiveError, match="'passwd' is a link"):
        unpack(buffer.getvalue(), "application/zip", DEFAULT_LIMITS)


def test_too_many_members_are_refused() -> None:
    small = ProjectLimits(max_files=3)
    body = tar_files(MAIN, ("a.h", b""), ("b.h", b""), ("c.h", b""))
    with pytest.raises(ArchiveTooLargeError, match=r"more than 3 files \(maxFiles\)"):
        unpack(body, "application/gzip", small)


def test_garbage_is_not_an_archive() -> None:
    with pytest.raises(ArchiveError, match="not a readable tar archive"):
        unpack(b"int main(void) { return 0; }", "application/x-tar", DEFAULT_LIMITS)
    with pytest.raises(ArchiveError, match="not a readable zip archive"):
        unpack(b"PK\x03\x04 nope", "application/zip", DEFAULT_LIMITS)


def test_an_archive_request_takes_its_options_from_the_query() -> None:
    body = tar_files(MAIN, ("src/a.c", b"int a;"), ("src/b.c", b"int b;"), ("inc/x.h", b""))
    request = from_archive(
        body,
        "application/gzip",
        {"args": ["-Iinc", "-O2"], "sources": ["src/*.c", "!src/b.c"]},
        Rules(STANDARD),
    )
    assert request.sources == ("main.c", "src/a.c")
    assert request.args == ("-Iinc", "-O2")
    with pytest.raises(RequestError, match="matches no file"):
        from_archive(body, "application/gzip", {"sources": ["lib/*.c"]}, DEFAULT_RULES)
    with pytest.raises(RequestError, match="not a C or C\\+\\+ source"):
        from_archive(body, "application/gzip", {"sources": ["inc/*"]}, DEFAULT_RULES)


# ---- the properties: nothing outside the job dir ------------------------------------------

_PIECE = st.sampled_from(
    ["a", "src", "inc", ".", "..", "/", "//", "*", "**", "?", "!", "-", "x.c", "~", "\\", "%2e"]
)
_PATHISH = st.lists(_PIECE, min_size=1, max_size=6).map("".join)
_JOB = "/job"


def _inside(path: str) -> bool:
    resolved = posixpath.normpath(posixpath.join(_JOB, path))
    return resolved == _JOB or resolved.startswith(_JOB + "/")


@settings(max_examples=300, deadline=None)
@given(st.lists(_PATHISH, min_size=1, max_size=4))
def test_no_archive_member_name_reaches_outside(names: list[str]) -> None:
    body = tar_files(*((name, b"x") for name in names))
    try:
        files = check_files(unpack(body, "application/gzip", DEFAULT_LIMITS))
    except (ArchiveError, FileError):
        return
    for path, _ in files:
        assert _inside(path), path
        assert not os.path.isabs(path), path
        assert ".." not in path.split("/"), path


@settings(max_examples=300, deadline=None)
@given(st.lists(_PATHISH, min_size=1, max_size=4))
def test_sources_patterns_only_ever_choose_project_files(patterns: list[str]) -> None:
    paths = ["main.c", "src/a.c", "src/b.cpp", "inc/x.h", "deep/er/c.cc"]
    try:
        chosen = select_sources(paths, check_patterns(patterns), "main.c")
    except FileError:
        return
    assert set(chosen) <= set(paths) - {"main.c"}
    for pattern in patterns:
        assert ".." not in pattern.removeprefix("!").split("/")
        assert not pattern.removeprefix("!").startswith("/")


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["-I", "-iquote", "-isystem"]),
    _PATHISH,
    st.booleans(),
)
def test_no_include_spelling_reaches_outside(flag: str, directory: str, split: bool) -> None:
    args = [flag, directory] if split else [flag + directory]
    try:
        STANDARD.check(args)
    except RequestError:
        return
    assert _inside(directory), args
    assert not directory.startswith(("/", "=")), args
