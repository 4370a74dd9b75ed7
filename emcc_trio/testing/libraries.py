"""Real open-source libraries, as their upstream lays them out, for the tests that upload them.

Each comes from Debian 12's source archive: the `.orig.tar.*` of a pinned source package,
downloaded and unpacked once per machine by `emcc_trio.ports.debsrc` (as the ports' are).

`Library.build` says how to build it: the files to upload, the translation units, the include
dirs and args, and a driver program (`tests/programs/libs/`) with the exact stdout it prints.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final, Literal

import attrs

from emcc_trio.ports import debsrc

DRIVERS: Final = Path(__file__).resolve().parents[2] / "tests" / "programs" / "libs"


@attrs.frozen(kw_only=True)
class Build:
    """How to build a library with a driver. Paths are relative to the tree (and so to the job
    dir once uploaded); a glob starting with `!` removes what the globs before it matched."""

    language: Literal["c", "cpp"]
    upload: tuple[str, ...]  # the files sent as the compile's `files`
    sources: tuple[str, ...]  # the translation units among them, besides the driver
    include_dirs: tuple[str, ...]  # each becomes -I<dir>
    args: tuple[str, ...] = ()  # what else to pass (macros)
    driver: str  # a file in tests/programs/libs/: the compile's main source
    expected_stdout: str

    @property
    def compiler(self) -> str:
        return "em++" if self.language == "cpp" else "emcc"

    def driver_code(self) -> str:
        return (DRIVERS / self.driver).read_text()

    def compile_args(self) -> list[str]:
        """The -I flags, then the args."""
        return [*(f"-I{d}" for d in self.include_dirs), *self.args]


@attrs.frozen(kw_only=True)
class Library:
    name: str
    source_package: str  # Debian's source package
    version: str  # the upstream version, as in the .orig tarball's name
    debian_version: str  # the pinned Debian 12 version: apt-get source PACKAGE=VERSION
    build: Build

    @property
    def key(self) -> str:
        return f"{self.name}-{self.version}"

    @property
    def debian_source(self) -> debsrc.DebianSource:
        return debsrc.DebianSource(
            package=self.source_package, version=self.version, debian_version=self.debian_version
        )

    def upload_paths(self, tree: Path) -> list[str]:
        return expand(tree, self.build.upload)

    def source_paths(self, tree: Path) -> list[str]:
        return expand(tree, self.build.sources)

    def files(self, tree: Path) -> list[tuple[str, bytes]]:
        """The upload as (path, content) pairs, sorted by path."""
        return [(path, (tree / path).read_bytes()) for path in self.upload_paths(tree)]


def expand(tree: Path, patterns: Sequence[str]) -> list[str]:
    """The files under `tree` the globs match, as sorted relative POSIX paths; a `!glob`
    removes its matches from those so far. A glob that matches nothing is an error."""
    chosen: set[str] = set()
    for pattern in patterns:
        exclude = pattern.startswith("!")
        glob = pattern.removeprefix("!")
        matched = {p.relative_to(tree).as_posix() for p in tree.glob(glob) if p.is_file()}
        if not matched and not exclude:
            raise LookupError(f"{glob!r} matches no file in {tree}")
        chosen = chosen - matched if exclude else chosen | matched
    return sorted(chosen)


def _library(
    name: str, source_package: str, version: str, debian_version: str, build: Build
) -> tuple[str, Library]:
    return name, Library(
        name=name,
        source_package=source_package,
        version=version,
        debian_version=debian_version,
        build=build,
    )


LIBRARIES: Final[Mapping[str, Library]] = dict(
    [
        # include/ + src/: 10 files. No config.h: the version macros CMake would define.
        _library(
            "libyaml",
            "libyaml",
            "0.2.5",
            "0.2.5-1",
            Build(
                language="c",
                upload=("include/yaml.h", "src/*.c", "src/*.h"),
                sources=("src/*.c",),
                include_dirs=("include", "src"),
                args=(
                    "-DYAML_VERSION_MAJOR=0",
                    "-DYAML_VERSION_MINOR=2",
                    "-DYAML_VERSION_PATCH=5",
                    '-DYAML_VERSION_STRING="0.2.5"',
                    "-DYAML_DECLARE_STATIC",
                ),
                driver="libyaml.c",
                expected_stdout=(
                    "libyaml 0.2.5\n"
                    "STREAM-START\n"
                    "DOCUMENT-START\n"
                    "MAPPING-START\n"
                    "SCALAR name\n"
                    "SCALAR emcc\n"
                    "SCALAR langs\n"
                    "SEQUENCE-START\n"
                    "SCALAR c\n"
                    "SCALAR cpp\n"
                    "SEQUENCE-END\n"
                    "SCALAR count\n"
                    "SCALAR 3\n"
                    "MAPPING-END\n"
                    "DOCUMENT-END\n"
                    "STREAM-END\n"
                    "15 events\n"
                ),
            ),
        ),
        # lib/ with common/ compress/ decompress/ dictBuilder/ deprecated/ legacy/: 86 files
        # (more than 64). Single-threaded (ZSTD_MULTITHREAD undefined), no legacy formats, no
        # x86-64 assembly (huf_decompress_amd64.S is not uploaded).
        _library(
            "libzstd",
            "libzstd",
            "1.5.4+dfsg2",
            "1.5.4+dfsg2-5",
            Build(
                language="c",
                upload=("lib/*.h", "lib/*/*.c", "lib/*/*.h"),
                sources=(
                    "lib/common/*.c",
                    "lib/compress/*.c",
                    "lib/decompress/*.c",
                    "lib/dictBuilder/*.c",
                ),
                include_dirs=("lib", "lib/common"),
                args=("-DZSTD_LEGACY_SUPPORT=0", "-DZSTD_DISABLE_ASM"),
                driver="libzstd.c",
                expected_stdout=(
                    "zstd 1.5.4\n"
                    "input 10000 bytes, compressed 66 bytes, frame says 10000\n"
                    "decompressed 10000 bytes\n"
                    "roundtrip ok\n"
                ),
            ),
        ),
        # The top-level sources: 26 files, 1,095,754 bytes (crc32.h alone is 591,749).
        _library(
            "zlib",
            "zlib",
            "1.2.13.dfsg",
            "1:1.2.13.dfsg-1",
            Build(
                language="c",
                upload=("*.c", "*.h"),
                sources=("*.c",),
                include_dirs=(".",),
                args=("-DHAVE_UNISTD_H", "-DHAVE_STDARG_H"),
                driver="zlib.c",
                expected_stdout=(
                    "zlib 1.2.13\n"
                    "crc32 81db8188 adler32 34ec0eee\n"
                    "deflated 42 -> 40 bytes\n"
                    "inflated: hello, hello, hello from zlib inside wasm\n"
                    "gz: gzip file, 42\n"
                ),
            ),
        ),
        # C++: include/fmt/*.h + src/format.cc, src/os.cc (not src/fmt.cc, the C++20 module).
        _library(
            "fmtlib",
            "fmtlib",
            "9.1.0+ds1",
            "9.1.0+ds1-2",
            Build(
                language="cpp",
                upload=("include/fmt/*.h", "src/format.cc", "src/os.cc"),
                sources=("src/format.cc", "src/os.cc"),
                include_dirs=("include",),
                driver="fmtlib.cpp",
                expected_stdout=(
                    "fmt 90100\n"
                    "       x|3.142\n"
                    "hex-00ff-+7\n"
                    "0.3333333333333333\n"
                    "****mid****\n"
                    "file: written 2 times\n"
                ),
            ),
        ),
        # src/: 62 files; lua.c and luac.c (the interpreter and compiler) have their own main.
        # The Lua tarball has no onelua.c; excluding it anyway keeps the pattern from the tests.
        _library(
            "lua5.4",
            "lua5.4",
            "5.4.4",
            "5.4.4-3+deb12u1",
            Build(
                language="c",
                upload=("src/*.c", "src/*.h"),
                sources=("src/*.c", "!src/lua.c", "!src/luac.c", "!src/onelua.c"),
                include_dirs=("src",),
                args=("-DLUA_COMPAT_5_3",),
                driver="lua5.4.c",
                expected_stdout="Lua 5.4\n42\nabababLUA5\n 3.14|1024\neerht,eno,owt\n6765\n",
            ),
        ),
    ]
)


def fetch(name: str) -> Path:
    """The unpacked upstream tree of `LIBRARIES[name]`, downloaded the first time."""
    return debsrc.fetch(LIBRARIES[name].debian_source)
