"""Request validation and the argument policy, as data plus pure functions.

A policy is closed: an argument is accepted only if a rule below matches it exactly, value
included, and nothing accepted can make emcc, clang or the linker read a file outside the job
dir. Two policies exist: `standard` (what real C and C++ programs need) and `seed` (the seed's
short allowlist, exactly). An operator's `extraAllowedArgs` are added to either, as exact
strings, after `path_reason` has found none of them able to name a host path.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import attrs

from emcc_trio.errors import RequestError
from emcc_trio.models import CompileRequest
from emcc_trio.ports.catalog import Port

MAX_ARGS: Final = 64
MAX_ARG_LENGTH: Final = 4096
MB: Final = 1024 * 1024
WASM_PAGE: Final = 64 * 1024
WASM32_MAX_MEMORY: Final = 4096 * MB

LANGUAGES: Final[Mapping[str, str]] = {"": "c", "c": "c", "cpp": "cpp", "cc": "cpp", "c++": "cpp"}
POLICY_NAMES: Final = ("standard", "seed")

# Flags that name a file in the job dir, given as the next argument or after `=`.
PATH_FLAGS: Final = frozenset({"--preload-file", "--embed-file", "--source-map-base"})
# Include directories inside the job dir (standard policy): joined (`-Iinclude`) or split
# (`-I include`). Longest first: `-isystem` must not be read as `-i` + `system`.
INCLUDE_FLAGS: Final = ("-isystem", "-iquote", "-I")

# Every argument form that can make emcc, clang, the assembler or the linker read (or write)
# a file by path, or run another program. No policy accepts these, nor may an operator add them.
PATH_PREFIXES: Final[Sequence[tuple[str, str]]] = (
    ("@", "response files read a file by path"),
    ("-o", "the output file is fixed by the service"),
    ("--shell-file", "it reads a file by path"),
    ("--js-library", "it reads a file by path"),
    ("--pre-js", "it reads a file by path"),
    ("--post-js", "it reads a file by path"),
    ("--extern-pre-js", "it reads a file by path"),
    ("--extern-post-js", "it reads a file by path"),
    ("--js-transform", "it runs a program"),
    ("--closure-args", "it passes options to another program"),
    ("--cache", "it points emscripten at another cache"),
    ("-I", "include paths could reach outside the job dir"),
    ("-include", "it reads a file by path"),
    ("-imacros", "it reads a file by path"),
    ("-isystem", "include paths could reach outside the job dir"),
    ("-iquote", "include paths could reach outside the job dir"),
    ("-idirafter", "include paths could reach outside the job dir"),
    ("-iprefix", "include paths could reach outside the job dir"),
    ("-iwithprefix", "include paths could reach outside the job dir"),
    ("-isysroot", "it points the compiler at another tree"),
    ("--sysroot", "it points the compiler at another tree"),
    ("-B", "it points the compiler at other programs"),
    ("--gcc-toolchain", "it points the compiler at another tree"),
    ("-resource-dir", "it points the compiler at another tree"),
    ("-L", "library paths could reach outside the job dir"),
    ("-Wl,", "linker options can read files by path"),
    ("-Xlinker", "linker options can read files by path"),
    ("-Wa,", "assembler options can read files by path"),
    ("-Xassembler", "assembler options can read files by path"),
    ("-Wp,", "preprocessor options can read files by path"),
    ("-Xpreprocessor", "preprocessor options can read files by path"),
    ("-Xclang", "raw clang options are not filtered"),
    ("-mllvm", "raw LLVM options are not filtered"),
    ("-fplugin", "it loads a file by path"),
    ("-fpass-plugin", "it loads a file by path"),
    ("-fsanitize-ignorelist", "it reads a file by path"),
    ("-fsanitize-blacklist", "it reads a file by path"),
    ("-fprofile", "profile files are read or written by path"),
    ("-fmodule", "module files are read by path"),
    ("-fprebuilt-module-path", "module files are read by path"),
    ("-gseparate-dwarf", "it writes a file by path"),
    ("-M", "dependency files are written by path"),
    ("--config", "it reads a file by path"),
    ("--em-config", "it reads a file by path"),
    # Catch-alls for the forms above that clang spells in other ways (-ivfsoverlay,
    # -Xarch_, --include-directory=, --library-directory=, --output=, --prefix=, ...).
    ("-i", "include paths and files could reach outside the job dir"),
    ("-X", "options passed through are not filtered"),
    ("--include", "it reads a file by path"),
    ("--imacros", "it reads a file by path"),
    ("--library-directory", "library paths could reach outside the job dir"),
    ("--output", "the output file is fixed by the service"),
    ("--prefix", "it points the compiler at other programs"),
    ("--resource", "it points the compiler at another tree"),
    ("--embed-dir", "it reads files by path"),
    ("--ld-path", "it runs another linker"),
    ("-fuse-ld", "it runs another linker"),
    ("-working-directory", "it moves the compile out of the job dir"),
    ("-fsanitize-coverage-", "it reads a file by path"),
    ("-fsanitize-system-ignorelist", "it reads a file by path"),
    ("-fxray", "it reads a file by path"),
    ("-fcrash-diagnostics-dir", "it writes files by path"),
    ("-foptimization-record-file", "it writes a file by path"),
    ("-ftime-trace", "it writes a file by path"),
)
_SETTING_NAMES_A_PATH = "a setting value with @ or / can name a file"


def path_reason(arg: str) -> str | None:
    """Why `arg`, standing alone, could name a host path; None if it cannot.

    This is the start-up check for `extraAllowedArgs`; the request policies never accept
    anything it names either (see tests/test_policy_standard.py).
    """
    for prefix, why in PATH_PREFIXES:
        if arg.startswith(prefix):
            return why
    if not arg.startswith("-"):
        return "it is not a flag: emcc would read it as an input file"
    if arg.startswith("-s"):
        value = arg.partition("=")[2]
        if "@" in value or "/" in value:
            return _SETTING_NAMES_A_PATH
    flag, sep, value = arg.partition("=")
    if flag in PATH_FLAGS:
        if not sep:
            return "it takes a path as the next argument"
        if not _path_value_ok(flag, value):
            return "its path must be relative, inside the job dir, without '..'"
    if "\n" in arg or "\x00" in arg:
        return "it contains a newline or NUL"
    return None


# ---- value checkers ---------------------------------------------------------------------------

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_C_SYMBOL = r"_[A-Za-z0-9_]+"
_IDENT_RE = re.compile(rf"^{_IDENT}\Z")
_JS_IDENT_RE = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]*\Z")
# \Z, not $: $ also matches before a final newline ("data.txt\n").
_PATH_CHARS = re.compile(r"^[A-Za-z0-9._][A-Za-z0-9._/-]*\Z")
_VIRTUAL_PATH = re.compile(r"^/?[A-Za-z0-9._][A-Za-z0-9._/-]*\Z")
_SIZE = re.compile(r"^([0-9]{1,10})(KB|MB|GB)?\Z")
_SIZE_UNITS: Final[Mapping[str, int]] = {"": 1, "KB": 1024, "MB": MB, "GB": 1024 * MB}
_ENVIRONMENTS = frozenset({"web", "webview", "worker", "shell"})
# Debian's emscripten 3.1.6 keeps every one of these prebuilt in its cache.
MALLOCS: Final = (
    "dlmalloc",
    "emmalloc",
    "emmalloc-debug",
    "emmalloc-memvalidate",
    "emmalloc-verbose",
    "emmalloc-memvalidate-verbose",
    "none",
)


def _name_list(item: str) -> Callable[[str], bool]:
    """A `[a,b]`, `a,b` or `["a","b"]` list whose items all match `item`."""
    item_re = re.compile(rf"^(?:{item}|\"{item}\"|'{item}')$")

    def check(value: str) -> bool:
        inner = value[1:-1] if value.startswith("[") and value.endswith("]") else value
        items = [part.strip() for part in inner.split(",")]
        return bool(items) and all(item_re.match(part) for part in items)

    return check


def _environment(value: str) -> bool:
    return all(part in _ENVIRONMENTS for part in value.split(","))


def _one_of(*values: str) -> Callable[[str], bool]:
    allowed = frozenset(values)
    return lambda value: value in allowed


def size_bytes(value: str) -> int | None:
    """`1048576`, `64KB`, `16MB` or `1GB` (emcc's own units, powers of 1024) in bytes."""
    match = _SIZE.match(value)
    if match is None:
        return None
    return int(match[1]) * _SIZE_UNITS[match[2] or ""]


def _size(maximum: int, multiple: int) -> Callable[[str], bool]:
    def check(value: str) -> bool:
        size = size_bytes(value)
        return size is not None and 0 < size <= maximum and size % multiple == 0

    return check


@attrs.frozen
class Setting:
    """One `-sNAME=VALUE` setting: its value check, the hint a refusal shows, and whether the
    bare `-sNAME` (emcc reads it as `=1`) is accepted."""

    check: Callable[[str], bool]
    hint: str
    bare: bool = False


_BOOL = Setting(_one_of("0", "1"), "0 or 1", bare=True)
_LEVEL_0_2 = Setting(_one_of("0", "1", "2"), "0, 1 or 2", bare=True)

SEED_SETTINGS: Final[Mapping[str, Setting]] = {
    "MODULARIZE": Setting(_one_of("0", "1"), "0 or 1"),
    "INVOKE_RUN": Setting(_one_of("0", "1"), "0 or 1"),
    "ALLOW_MEMORY_GROWTH": Setting(_one_of("0", "1"), "0 or 1"),
    "ENVIRONMENT": Setting(
        _environment, "a comma list of web, webview, worker, shell (node is not allowed)"
    ),
    "EXPORTED_FUNCTIONS": Setting(
        _name_list(_C_SYMBOL), "a list of C symbols such as [_main,_add]"
    ),
    "EXPORTED_RUNTIME_METHODS": Setting(
        _name_list(_IDENT), "a list of names such as [callMain,ccall,cwrap]"
    ),
}


def _standard_settings(memory_cap_bytes: int) -> Mapping[str, Setting]:
    memory_max = min(memory_cap_bytes, WASM32_MAX_MEMORY)
    cap = f"at most jobMemoryMaxMB ({memory_max // MB} MB)"
    memory = Setting(
        _size(memory_max, WASM_PAGE),
        f"a size in bytes (or KB, MB, GB), a multiple of 64KB, {cap}",
    )
    stack = Setting(_size(memory_max, 16), f"a size in bytes (or KB, MB), a multiple of 16, {cap}")
    bools = (
        "MODULARIZE",
        "INVOKE_RUN",
        "ALLOW_MEMORY_GROWTH",
        "ALLOW_TABLE_GROWTH",
        "EXIT_RUNTIME",
        "EXPORT_ES6",
        "USE_ES6_IMPORT_META",
        # The artifact is then app.js alone (the wasm inside it); the answer's `wasm` is null.
        "SINGLE_FILE",
        "FILESYSTEM",
        "STRICT",
        "WASM_BIGINT",
        "SAFE_HEAP",
        "DEMANGLE_SUPPORT",
        "ABORTING_MALLOC",
        "ERROR_ON_UNDEFINED_SYMBOLS",
        "DISABLE_EXCEPTION_CATCHING",
    )
    return {
        **SEED_SETTINGS,
        **dict.fromkeys(bools, _BOOL),
        "ASSERTIONS": _LEVEL_0_2,
        "STACK_OVERFLOW_CHECK": _LEVEL_0_2,
        # 3.1.6 knows only TOTAL_STACK; later releases read it as an alias of STACK_SIZE.
        "TOTAL_STACK": stack,
        "INITIAL_MEMORY": memory,
        "TOTAL_MEMORY": memory,
        "MAXIMUM_MEMORY": memory,
        "EXPORT_NAME": Setting(
            lambda v: bool(_JS_IDENT_RE.match(v)), "a JavaScript identifier such as createModule"
        ),
        "MALLOC": Setting(_one_of(*MALLOCS), f"one of {', '.join(MALLOCS)}"),
        # With -pthread: app.worker.js is published beside app.js and app.wasm.
        "PROXY_TO_PTHREAD": _BOOL,
        "PTHREAD_POOL_SIZE": Setting(
            lambda v: bool(re.fullmatch(r"[0-9]{1,3}", v)) and int(v) <= MAX_PTHREAD_POOL,
            f"a number of workers from 0 to {MAX_PTHREAD_POOL}",
        ),
    }


# Settings refused with a reason of their own rather than "not on the allowlist".
PORTS: Final = frozenset(
    {
        "USE_BOOST_HEADERS",
        "USE_BULLET",
        "USE_BZIP2",
        "USE_COCOS2D",
        "USE_FREETYPE",
        "USE_GIFLIB",
        "USE_HARFBUZZ",
        "USE_ICU",
        "USE_LIBJPEG",
        "USE_LIBPNG",
        "USE_MODPLUG",
        "USE_MPG123",
        "USE_OGG",
        "USE_REGAL",
        "USE_SDL",
        "USE_SDL_GFX",
        "USE_SDL_IMAGE",
        "USE_SDL_MIXER",
        "USE_SDL_NET",
        "USE_SDL_TTF",
        "USE_VORBIS",
        "USE_ZLIB",
    }
)
_PORTS_REASON = (
    "emscripten ports (-sUSE_*) are not installed on this service and cannot be downloaded "
    "at compile time"
)
_ARTIFACT_REASON = "the service publishes app.js + app.wasm (app.js alone with -sSINGLE_FILE)"
REFUSED_SETTINGS: Final[Mapping[str, str]] = {
    "FORCE_FILESYSTEM": "not allowed by the service",
    "STACK_SIZE": "use -sTOTAL_STACK, which every emscripten reads (3.1.6 has no STACK_SIZE)",
    "WASM": f"{_ARTIFACT_REASON}, and WASM=0 (wasm2js) is not offered",
    "USE_PTHREADS": "use -pthread, the compiler flag that sets it",
}
REFUSED_FLAGS: Final[Mapping[str, str]] = {
    "-flto=thin": "the prebuilt library cache has no ThinLTO build (use -flto)",
}
# Threads start workers at run time, never at compile time: a small pool is plenty, and a
# bound keeps a page from starting hundreds at once.
MAX_PTHREAD_POOL: Final = 64

# ---- flags --------------------------------------------------------------------------------

SEED_FLAGS: Final = frozenset(
    {"-O0", "-O1", "-O2", "-O3", "-Os", "-Oz", "-g", "-g0", "-g1", "-g2", "-g3"}
)
C_STANDARDS: Final = (
    "c89",
    "c90",
    "iso9899:1990",
    "iso9899:199409",
    "gnu89",
    "gnu90",
    "c99",
    "iso9899:1999",
    "gnu99",
    "c11",
    "iso9899:2011",
    "gnu11",
    "c17",
    "iso9899:2017",
    "c18",
    "iso9899:2018",
    "gnu17",
    "gnu18",
    "c2x",
    "gnu2x",
)
CXX_STANDARDS: Final = (
    "c++98",
    "c++03",
    "gnu++98",
    "gnu++03",
    "c++11",
    "gnu++11",
    "c++14",
    "gnu++14",
    "c++17",
    "gnu++17",
    "c++20",
    "gnu++20",
    "c++2b",
    "gnu++2b",
)
# The runtimes each needs are in the prebuilt cache (libasan_rt, libubsan_rt, liblsan_rt).
SANITIZERS: Final = frozenset(
    {
        "address",
        "undefined",
        "leak",
        "alignment",
        "bool",
        "bounds",
        "builtin",
        "enum",
        "float-cast-overflow",
        "float-divide-by-zero",
        "function",
        "integer-divide-by-zero",
        "nonnull-attribute",
        "null",
        "object-size",
        "pointer-overflow",
        "return",
        "returns-nonnull-attribute",
        "shift",
        "signed-integer-overflow",
        "unreachable",
        "vla-bound",
        "vptr",
    }
)
F_FLAGS: Final = frozenset(
    {
        "-fexceptions",
        "-fno-exceptions",
        "-fwasm-exceptions",
        "-fignore-exceptions",
        "-frtti",
        "-fno-rtti",
        "-flto",
        "-flto=full",
        "-fno-lto",
        "-ffast-math",
        "-fno-fast-math",
        "-fno-strict-aliasing",
        "-fwrapv",
        "-fsigned-char",
        "-funsigned-char",
        "-fno-builtin",
        "-fno-inline",
        "-fno-omit-frame-pointer",
        "-fvisibility=default",
        "-fvisibility=hidden",
        "-fsanitize-minimal-runtime",
        "-fno-sanitize-recover",
        "-fcolor-diagnostics",
        "-fno-color-diagnostics",
    }
)
STANDARD_FLAGS: Final = frozenset(
    SEED_FLAGS
    | F_FLAGS
    | {f"-std={value}" for value in (*C_STANDARDS, *CXX_STANDARDS)}
    | {"-w", "-Werror", "-pedantic", "-pedantic-errors"}
    | {"-lembind", "--bind"}
    | {"-pthread"}
    | {"-msimd128", "-mbulk-memory", "-mnontrapping-fptoint", "-msign-ext", "-mmutable-globals"}
)
# -Wall, -Wno-unused, -Werror=format, -Wframe-larger-than=4096, -W#warnings; no comma, so
# never -Wl, -Wa, -Wp, nor their one-letter stems.
_WARNING = re.compile(r"^-W[a-z#][A-Za-z0-9#+_.-]+(?:=[A-Za-z0-9#+_.-]+)?\Z")
# What emcc reads as a setting (-std=, -shared, -static are not).
_SETTING_FLAG = re.compile(r"^-s(?:[A-Z_]|$)")
_SANITIZE = re.compile(r"^-f(?:no-)?sanitize=(.+)$")


def _macro_ok(text: str, with_value: bool) -> bool:
    """`NAME` or (for -D) `NAME=VALUE`: the name an identifier, the value on one line."""
    name, sep, value = text.partition("=")
    if sep and not with_value:
        return False
    return bool(_IDENT_RE.match(name)) and not any(c in value for c in "\n\r\x00")


def format_list(value: str) -> tuple[str, ...] | None:
    """A list setting's value as emcc reads it (`[png]`, `["png","bmp"]`, `png,bmp`), sorted
    as the ports sort it to name their variant; None when it is not a list of names."""
    inner = value.strip()
    if inner.startswith("[") and inner.endswith("]"):
        inner = inner[1:-1]
    names = [item.strip().strip("'\"") for item in inner.split(",")] if inner.strip() else []
    if not all(re.fullmatch(r"[a-z0-9]{1,16}", name) for name in names):
        return None
    return tuple(sorted(names))


def _format_choice(installed: tuple[tuple[str, ...], ...]) -> Callable[[str], bool]:
    return lambda value: format_list(value) in installed


def port_settings(ports: Sequence[Port]) -> dict[str, Setting]:
    """The settings the installed ports add: each port's own, by its value, and the list
    setting that picks one of its installed variants."""
    settings = {}
    for port in ports:
        settings[port.setting] = Setting(_one_of(port.value), port.value, bare=port.value == "1")
        if port.formats is not None:
            installed = port.formats.installed
            shown = " or ".join("[" + ",".join(choice) + "]" for choice in installed)
            settings[port.formats.setting] = Setting(
                _format_choice(installed), f"one of the installed lists {shown}"
            )
    return settings


@attrs.frozen
class Policy:
    """A closed argument policy. `check` returns the args unchanged or names the first refused."""

    name: str
    flags: frozenset[str] = attrs.field(repr=False)
    settings: Mapping[str, Setting] = attrs.field(repr=False)
    # The standard policy's shapes: -D/-U, -W<name>, -fsanitize= lists, `-s NAME=VALUE` split.
    shapes: bool
    extra: frozenset[str] = frozenset()
    ports: tuple[Port, ...] = ()  # the installed ports, whose settings are in `settings`

    def with_extra(self, extra: Sequence[str]) -> Policy:
        return attrs.evolve(self, extra=frozenset(extra))

    def with_ports(self, ports: Sequence[Port]) -> Policy:
        if not self.shapes or not ports:
            return self
        settings = {**self.settings, **port_settings(ports)}
        return attrs.evolve(self, settings=settings, ports=tuple(ports))

    def check(self, args: Sequence[str]) -> tuple[str, ...]:
        if len(args) > MAX_ARGS:
            raise RequestError(f"too many args: {len(args)} (at most {MAX_ARGS})")
        pending: str | None = None
        for index, arg in enumerate(args):
            if len(arg) > MAX_ARG_LENGTH:
                raise RequestError(f"an argument is longer than {MAX_ARG_LENGTH} characters")
            if "\x00" in arg:
                raise RequestError("an argument contains a NUL character")
            _check_encodable(arg, index)
            if pending is not None:
                self._check_value(pending, arg)
                pending = None
            elif arg in self.flags or arg in self.extra:
                pass
            elif arg in PATH_FLAGS or (self.shapes and arg in ("-D", "-U", "-s", *INCLUDE_FLAGS)):
                pending = arg
            elif self.shapes and (include := _include_flag(arg)) is not None:
                _check_include_dir(include, arg[len(include) :], arg)
            elif arg.partition("=")[0] in PATH_FLAGS:
                flag, _, value = arg.partition("=")
                _check_path_value(flag, value, arg)
            elif _SETTING_FLAG.match(arg):
                self._check_setting(arg[2:], arg)
            elif self.shapes and arg.startswith(("-D", "-U")):
                _check_macro(arg[:2], arg[2:], arg)
            elif not (self.shapes and self._shape_ok(arg)):
                self._refuse(arg)
        if pending is not None:
            raise RequestError(f"argument {pending} needs a value after it")
        self._check_port_threads(args)
        return tuple(args)

    def _check_port_threads(self, args: Sequence[str]) -> None:
        """The ports are built without threads: linked into a -pthread build they would fail
        at the link (or worse, share memory they were not built for)."""
        if not self.ports or "-pthread" not in args:
            return
        settings = {port.setting for port in self.ports}
        for index, arg in enumerate(args):
            setting = arg[2:] if _SETTING_FLAG.match(arg) else None
            if arg == "-s" and index + 1 < len(args):
                setting = args[index + 1]
            name = (setting or "").partition("=")[0]
            if name in settings:
                raise RequestError(
                    f"argument {arg if arg != '-s' else '-s ' + args[index + 1]!r} is not "
                    "allowed with -pthread: the ports are built without threads"
                )

    def _check_value(self, flag: str, value: str) -> None:
        shown = f"{flag} {value}"
        if flag in PATH_FLAGS:
            _check_path_value(flag, value, shown)
        elif flag in INCLUDE_FLAGS:
            _check_include_dir(flag, value, shown)
        elif flag == "-s":
            self._check_setting(value, shown)
        else:
            _check_macro(flag, value, shown)

    def _shape_ok(self, arg: str) -> bool:
        if _WARNING.match(arg):
            return True
        sanitize = _SANITIZE.match(arg)
        return sanitize is not None and all(s in SANITIZERS for s in sanitize[1].split(","))

    def _check_setting(self, setting: str, shown: str) -> None:
        name, sep, value = setting.partition("=")
        if name in REFUSED_SETTINGS:
            raise RequestError(f"argument {shown!r} is not allowed: {REFUSED_SETTINGS[name]}")
        rule = self.settings.get(name)
        if rule is None or (not sep and not rule.bare):
            raise RequestError(f"argument {shown!r} is not allowed: {self._unlisted(name, rule)}")
        if name == "ENVIRONMENT" and "node" in value.split(","):
            raise RequestError(
                f"argument {shown!r} is not allowed: the node environment is blocked"
            )
        if sep and not rule.check(value):
            raise RequestError(f"argument {shown!r} is not allowed: {name} takes {rule.hint}")

    def _unlisted(self, name: str, rule: Setting | None) -> str:
        """Why a setting (or its bare `-sNAME` spelling) is not accepted."""
        if not self.shapes:
            return "only the listed -sNAME=VALUE settings are allowed"
        if rule is not None:
            return f"{name} takes {rule.hint}"
        if name in PORTS:
            if not self.ports:
                return _PORTS_REASON
            listed = ", ".join(port.flag for port in self.ports)
            return f"that port is not installed on this service (installed: {listed})"
        return (
            f"{name or '-s'} is not on the allowlist of settings (the documentation's argument "
            "policy lists the ones that are)"
        )

    def _refuse(self, arg: str) -> None:
        reason = REFUSED_FLAGS.get(arg) if self.shapes else None
        reason = reason or path_reason(arg)
        if reason is None or reason.startswith("it is not a flag"):
            reason = "it is not on the allowlist"
        raise RequestError(f"argument {arg!r} is not allowed: {reason}")


def _check_encodable(arg: str, index: int) -> None:
    """A process argument is bytes: a lone surrogate (a JSON escape such as "\\udfff" with no
    partner) has no UTF-8 form, and would fail (or change) only when the process starts."""
    try:
        arg.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RequestError(
            f"argument {index + 1} contains a lone surrogate ({arg[exc.start]!r} at character "
            f"{exc.start}): arguments must be valid UTF-8"
        ) from None


def _check_macro(flag: str, text: str, shown: str) -> None:
    if not _macro_ok(text, with_value=flag == "-D"):
        what = "NAME or NAME=VALUE" if flag == "-D" else "NAME"
        raise RequestError(
            f"argument {shown!r} is not allowed: {flag} takes {what}, NAME a C identifier "
            "and VALUE on one line"
        )


def is_safe_relative_path(path: str) -> bool:
    """A path that stays inside the directory it is resolved from."""
    if not _PATH_CHARS.match(path):
        return False
    return all(part != ".." for part in path.split("/"))


def _path_value_ok(flag: str, value: str) -> bool:
    if flag == "--source-map-base":
        return is_safe_relative_path(value)
    # `src@dst`: src is a host path (must stay in the job dir); dst lives in the virtual FS.
    src, sep, dst = value.partition("@")
    return is_safe_relative_path(src) and (
        not sep or (bool(_VIRTUAL_PATH.match(dst)) and ".." not in dst.split("/"))
    )


def _include_flag(arg: str) -> str | None:
    """The include flag `arg` is spelled with, joined to its directory; None for any other."""
    for flag in INCLUDE_FLAGS:
        if arg.startswith(flag) and len(arg) > len(flag):
            return flag
    return None


def _check_include_dir(flag: str, value: str, shown: str) -> None:
    """An include directory must be a relative path inside the job dir (`.` is the job dir
    itself); `=dir` (sysroot-relative to clang) and absolute paths are refused."""
    if not is_safe_relative_path(value):
        raise RequestError(
            f"argument {shown!r} is not allowed: include paths must stay inside the job dir "
            f"({flag} takes a relative directory without '..', of letters, digits and ._/-)"
        )


def _check_path_value(flag: str, value: str, shown: str) -> None:
    if not _path_value_ok(flag, value):
        raise RequestError(
            f"argument {shown!r} is not allowed: the path must be relative, "
            "inside the job dir, without '..', and use only letters, digits and ._/-"
        )


def standard_policy(memory_cap_mb: int = 1024, ports: Sequence[Port] = ()) -> Policy:
    """The default policy; sizes (stack, initial and maximum memory) are bounded by the job's
    memory cap, `jobMemoryMaxMB`; the installed `ports` add their settings."""
    return Policy(
        name="standard",
        flags=STANDARD_FLAGS,
        settings=_standard_settings(memory_cap_mb * MB),
        shapes=True,
    ).with_ports(ports)


SEED: Final = Policy(name="seed", flags=SEED_FLAGS, settings=SEED_SETTINGS, shapes=False)
STANDARD: Final = standard_policy()


def make_policy(
    name: str, memory_cap_mb: int, extra: Sequence[str] = (), ports: Sequence[Port] = ()
) -> Policy:
    """The seed policy has no ports: it is emcc-sandboxd's closed list."""
    base = SEED if name == "seed" else standard_policy(memory_cap_mb, ports)
    return base.with_extra(extra)


def check_args(args: Sequence[str], policy: Policy = STANDARD) -> tuple[str, ...]:
    """Return `args` unchanged if `policy` accepts each; else raise naming the first refused."""
    return policy.check(args)


def parse_request(body: Any, policy: Policy = STANDARD) -> CompileRequest:
    """Validate a decoded JSON body into a CompileRequest."""
    if not isinstance(body, dict):
        raise RequestError("the body must be a JSON object")
    unknown = sorted(set(body) - {"code", "type", "args"})
    if unknown:
        raise RequestError(f"unknown field(s): {', '.join(unknown)}")
    code = body.get("code")
    if not isinstance(code, str):
        raise RequestError('"code" must be a string')
    if not code.strip():
        raise RequestError('"code" must not be empty')
    if "\x00" in code:
        raise RequestError('"code" contains a NUL character')
    try:
        code.encode("utf-8")
    except UnicodeEncodeError as exc:
        # A JSON escape such as "\ud800" decodes to a lone surrogate: not text a file can hold.
        raise RequestError(
            f'"code" contains a lone surrogate ({code[exc.start]!r} at character {exc.start}): '
            "the source must be valid UTF-8"
        ) from None
    kind = body.get("type", "")
    if not isinstance(kind, str):
        raise RequestError('"type" must be a string')
    if kind.lower() not in LANGUAGES:
        raise RequestError(f'"type" must be one of c, cpp, cc, c++ (got {kind!r})')
    args = body.get("args", [])
    if args is None:
        args = []
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise RequestError('"args" must be a list of strings')
    return CompileRequest(code=code, language=LANGUAGES[kind.lower()], args=policy.check(args))


def compiler_argv(compiler: str, request: CompileRequest, default_args: Sequence[str]) -> list[str]:
    """The full command: defaults, then the user's accepted args, then the forced output."""
    return [compiler, *request.sources, *default_args, *request.args, "-o", "app.js"]
