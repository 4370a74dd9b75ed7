"""The standard argument policy: what it accepts and refuses by value, and a property test that
no argument list it accepts names a host path (with an oracle written apart from the policy)."""

from __future__ import annotations

import os.path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emcc_trio.compile.policy import STANDARD, check_args, standard_policy
from emcc_trio.errors import RequestError

pytestmark = pytest.mark.unit

ACCEPTED = [
    ["-std=c++20"],
    ["-std=c17"],
    ["-std=gnu++2b"],
    ["-std=iso9899:1999"],
    ["-DFOO"],
    ["-DFOO=1"],
    ['-DGREETING="hello, world"'],
    ["-DPATH_TEXT=/usr/share is only text"],
    ["-D", "FOO"],
    ["-D", "FOO=1"],
    ["-D", "EMPTY="],
    ["-UNDEBUG"],
    ["-U", "NDEBUG"],
    ["-Wall", "-Wextra", "-Werror", "-w", "-pedantic", "-pedantic-errors"],
    ["-Wno-unused-variable", "-Werror=format", "-Wframe-larger-than=4096", "-W#warnings"],
    ["-Wno-c++98-compat"],
    ["-fexceptions", "-fwasm-exceptions", "-fno-rtti", "-flto", "-ffast-math"],
    ["-fsanitize=address"],
    ["-fsanitize=address,undefined"],
    ["-fno-sanitize=vptr,function"],
    ["-lembind"],
    ["--bind"],
    ["-msimd128"],
    ["-sEXIT_RUNTIME=1", "-sEXIT_RUNTIME", "-s", "EXIT_RUNTIME=0"],
    ["-sASSERTIONS=2", "-sSTACK_OVERFLOW_CHECK=1", "-sSAFE_HEAP=1", "-sSTRICT"],
    ["-sEXPORT_ES6=1", "-sFILESYSTEM=0", "-sWASM_BIGINT=1"],
    ["-sSINGLE_FILE", "-sSINGLE_FILE=1", "-sSINGLE_FILE=0"],
    ["-pthread", "-sPTHREAD_POOL_SIZE=64", "-sPTHREAD_POOL_SIZE=0", "-sPROXY_TO_PTHREAD"],
    ["-sTOTAL_STACK=1048576", "-sTOTAL_STACK=64KB", "-sTOTAL_STACK=5MB"],
    ["-sINITIAL_MEMORY=16777216", "-sINITIAL_MEMORY=32MB", "-sMAXIMUM_MEMORY=1GB"],
    ["-sTOTAL_MEMORY=65536"],
    ["-sEXPORT_NAME=createModule", "-sEXPORT_NAME=$mod_1"],
    ["-sMALLOC=emmalloc", "-sMALLOC=dlmalloc", "-sMALLOC=emmalloc-debug"],
    ["-s", "EXPORTED_FUNCTIONS=[_main,_add]"],
]

REFUSED = [
    (["-std=c++23"], "not on the allowlist"),
    (["-std=c++20x"], "not on the allowlist"),
    (["-std", "c++20"], "not on the allowlist"),
    (["-D1FOO"], "-D takes NAME or NAME=VALUE"),
    (["-D", "-I/etc"], "-D takes NAME"),
    (["-D", "/etc/passwd"], "-D takes NAME"),
    (["-DFOO=a\nb"], "VALUE on one line"),
    (["-DFOO=a\rb"], "VALUE on one line"),
    (["-D'F(x)=x'"], "-D takes NAME"),
    (["-DF(x)=x"], "-D takes NAME"),
    (["-UFOO=1"], "-U takes NAME"),
    (["-U", "-include"], "-U takes NAME"),
    (["-D"], "needs a value"),
    (["-s"], "needs a value"),
    (["-Wl,--whole-archive"], "linker options"),
    (["-Wl,@/etc/passwd"], "linker options"),
    (["-Wa,-I/etc"], "assembler options"),
    (["-Wp,-include,/etc/passwd"], "preprocessor options"),
    (["-Wall,-x"], "not on the allowlist"),
    (["-W"], "not on the allowlist"),
    (["-WALL"], "not on the allowlist"),
    (["-Werror=format,x"], "not on the allowlist"),
    (["-flto=thin"], "no ThinLTO"),
    (["-fsanitize=thread"], "not on the allowlist"),
    (["-fsanitize=address,memory"], "not on the allowlist"),
    (["-fsanitize-ignorelist=/etc/passwd"], "reads a file"),
    (["-fsanitize-blacklist=x.txt"], "reads a file"),
    (["-fprofile-instr-use=/x"], "profile files"),
    (["-fplugin=x.so"], "loads a file"),
    (["-fmodule-map-file=/x"], "module files"),
    (["-fno-such-flag"], "not on the allowlist"),
    (["-lm"], "not on the allowlist"),
    (["-l", "embind"], "not on the allowlist"),
    (["-lembind.a"], "not on the allowlist"),
    (["-sUSE_PTHREADS=1"], "use -pthread"),
    (["-sPTHREAD_POOL_SIZE=65"], "PTHREAD_POOL_SIZE takes a number of workers from 0 to 64"),
    (["-sPTHREAD_POOL_SIZE=\u00b2"], "PTHREAD_POOL_SIZE takes"),
    (["-sPTHREAD_POOL_SIZE=-1"], "PTHREAD_POOL_SIZE takes"),
    (["-sWASM=0"], "WASM=0 (wasm2js) is not offered"),
    (["-sSTACK_SIZE=1MB"], "use -sTOTAL_STACK"),
    (["-sUSE_SDL=2"], "ports (-sUSE_*) are not installed"),
    (["-s", "USE_ZLIB=1"], "ports (-sUSE_*) are not installed"),
    (["-sUSE_BOOST_HEADERS"], "ports (-sUSE_*) are not installed"),
    (["-sEXIT_RUNTIME=2"], "EXIT_RUNTIME takes 0 or 1"),
    (["-sEXIT_RUNTIME=true"], "EXIT_RUNTIME takes 0 or 1"),
    (["-sASSERTIONS=3"], "ASSERTIONS takes 0, 1 or 2"),
    (["-sTOTAL_STACK=0"], "TOTAL_STACK takes a size"),
    (["-sTOTAL_STACK=1000001"], "a multiple of 16"),
    (["-sTOTAL_STACK=-16"], "TOTAL_STACK takes a size"),
    (["-sTOTAL_STACK=2GB"], "at most jobMemoryMaxMB (1024 MB)"),
    (["-sINITIAL_MEMORY=1000000"], "a multiple of 64KB"),
    (["-sINITIAL_MEMORY=0x1000000"], "INITIAL_MEMORY takes"),
    (["-sINITIAL_MEMORY=16 MB"], "INITIAL_MEMORY takes"),
    (["-sMAXIMUM_MEMORY=4GB"], "at most jobMemoryMaxMB"),
    (["-sMAXIMUM_MEMORY"], "MAXIMUM_MEMORY takes a size"),
    (["-sEXPORT_NAME"], "EXPORT_NAME takes a JavaScript identifier"),
    (["-Wl"], "not on the allowlist"),
    (["-Wa"], "not on the allowlist"),
    (["-Wp"], "not on the allowlist"),
    (["-sEXPORT_NAME=my-module"], "JavaScript identifier"),
    (["-sEXPORT_NAME=a;alert(1)"], "JavaScript identifier"),
    (["-sEXPORT_NAME=1st"], "JavaScript identifier"),
    (["-sMALLOC=mimalloc"], "MALLOC takes one of dlmalloc"),
    (["-sMALLOC=../lib"], "MALLOC takes one of"),
    (["-sENVIRONMENT=node"], "node environment is blocked"),
    (["-sNO_SUCH_SETTING=1"], "NO_SUCH_SETTING is not on the allowlist of settings"),
    (["-sJS_LIBRARIES=/etc/passwd"], "not on the allowlist of settings"),
    (["-sEXPORTED_FUNCTIONS=@/etc/passwd"], "EXPORTED_FUNCTIONS takes"),
    (["-s", "EXPORTED_FUNCTIONS=@x"], "EXPORTED_FUNCTIONS takes"),
    (["-s", "-I/etc"], "not on the allowlist of settings"),
    (["-shared"], "not on the allowlist"),
    (["-static"], "not on the allowlist"),
    (["-gseparate-dwarf=/tmp/x"], "writes a file"),
    (["-MF", "/tmp/deps"], "dependency files"),
    (["-B/tmp"], "other programs"),
    (["-mllvm", "-x"], "raw LLVM options"),
    (["--cache", "/tmp"], "another cache"),
    (["-imacros", "/etc/passwd"], "reads a file"),
    (["-x", "assembler"], "not on the allowlist"),
]


@pytest.mark.parametrize("args", ACCEPTED, ids=lambda a: " ".join(a))
def test_accepted_unchanged(args: list[str]) -> None:
    assert check_args(args, STANDARD) == tuple(args)


@pytest.mark.parametrize(("args", "reason"), REFUSED, ids=lambda a: repr(a))
def test_refused_with_the_argument_and_a_reason(args: list[str], reason: str) -> None:
    with pytest.raises(RequestError) as info:
        check_args(args, STANDARD)
    message = str(info.value)
    assert reason in message
    assert repr(args[0])[1:-1] in message or args[0] in message


def test_sizes_follow_the_jobs_memory_cap() -> None:
    small = standard_policy(memory_cap_mb=128)
    assert check_args(["-sINITIAL_MEMORY=128MB"], small) == ("-sINITIAL_MEMORY=128MB",)
    with pytest.raises(RequestError, match=r"at most jobMemoryMaxMB \(128 MB\)"):
        check_args(["-sINITIAL_MEMORY=192MB"], small)
    with pytest.raises(RequestError, match=r"at most jobMemoryMaxMB \(128 MB\)"):
        check_args(["-sTOTAL_STACK=129MB"], small)
    # wasm32 memory ends at 4 GB whatever the cap.
    big = standard_policy(memory_cap_mb=8192)
    assert check_args(["-sMAXIMUM_MEMORY=4GB"], big) == ("-sMAXIMUM_MEMORY=4GB",)
    with pytest.raises(RequestError, match=r"\(4096 MB\)"):
        check_args(["-sMAXIMUM_MEMORY=4097MB"], big)


# ---- the property: nothing accepted names a host path ------------------------------------

# An oracle written apart from the policy: each form emcc, clang, the assembler or the linker
# reads as a file name (or a program to run), whichever policy table is consulted.
_READS_A_PATH = (
    "@",
    "-o",
    "-I",
    "-L",
    "-B",
    "-i",  # -include, -imacros, -isystem, -iquote, -idirafter, -iprefix, -isysroot...
    "-M",
    "-X",
    "-Wl,",
    "-Wa,",
    "-Wp,",
    "-mllvm",
    "-fplugin",
    "-fpass-plugin",
    "-fprofile",
    "-fmodule",
    "-fprebuilt",
    "-fsanitize-ignorelist",
    "-fsanitize-blacklist",
    "-gseparate-dwarf",
    "-resource-dir",
    "--sysroot",
    "--gcc-toolchain",
    "--config",
    "--em-config",
    "--cache",
    "--js-library",
    "--pre-js",
    "--post-js",
    "--extern-",
    "--shell-file",
    "--js-transform",
    "--closure-args",
)
_JOB_FILE_FLAGS = ("--preload-file", "--embed-file", "--source-map-base")
# Include directories: clang searches them, so each must resolve inside the job dir; a value
# starting with `=` is relative to the sysroot (a host path).
_INCLUDE_DIR_FLAGS = ("-isystem", "-iquote", "-I")
_TAKES_NEXT = ("-D", "-U", "-s", *_JOB_FILE_FLAGS, *_INCLUDE_DIR_FLAGS)


def _include_dir(flag: str, value: str) -> tuple[str, str]:
    if value.startswith("=") or value.startswith("/"):
        return ("flag", flag + value)
    return ("job", value)


def _files_read(args: tuple[str, ...]) -> list[tuple[str, str]]:
    """(kind, value) for each token the toolchain would read as a file: kind `input` for a
    bare word (an input file), `flag` for a path-reading flag, `setting` for a setting value
    emcc reads from a file, `job` for a file flag's value (must stay in the job dir)."""
    found: list[tuple[str, str]] = []
    index = 0
    while index < len(args):
        arg = args[index]
        value: str | None = None
        if arg in _TAKES_NEXT:
            index += 1
            value = args[index]
            if arg in ("-D", "-U"):
                # emcc skips the next token; clang reads it as macro text, never a file.
                value = None
            elif arg == "-s":
                arg, value = "-s" + value, None
        joined = next((f for f in _INCLUDE_DIR_FLAGS if arg.startswith(f) and arg != f), None)
        if value is not None and arg in _INCLUDE_DIR_FLAGS:
            found.append(_include_dir(arg, value))
        elif value is not None:
            found.append(("job", value.partition("@")[0]))
        elif joined is not None:
            found.append(_include_dir(joined, arg[len(joined) :]))
        elif arg.partition("=")[0] in _JOB_FILE_FLAGS:
            found.append(("job", arg.partition("=")[2].partition("@")[0]))
        elif arg.startswith(("-D", "-U")):
            pass  # macro text
        elif not arg.startswith("-"):
            found.append(("input", arg))
        elif arg.startswith(_READS_A_PATH):
            found.append(("flag", arg))
        elif arg.startswith("-s") and ("@" in arg or "/" in arg):
            found.append(("setting", arg))
        elif "," in arg and arg.startswith("-W"):
            found.append(("flag", arg))
        index += 1
    return found


_PIECES = st.sampled_from(
    [
        "-D",
        "-U",
        "-s",
        "-W",
        "-Wl,",
        "-Wa,",
        "-Wp,",
        "-f",
        "-fsanitize=",
        "-fplugin=",
        "-fprofile-use=",
        "-std=",
        "-l",
        "-L",
        "-I",
        "-i",
        "-include",
        "-isystem",
        "-iquote",
        "-idirafter",
        "include",
        "src/",
        ".",
        "-o",
        "-M",
        "-B",
        "-x",
        "--embed-file",
        "--preload-file",
        "--source-map-base",
        "--js-library",
        "--config",
        "-sEXPORTED_FUNCTIONS=",
        "-sEXPORT_NAME=",
        "-sMALLOC=",
        "-sINITIAL_MEMORY=",
        "-sENVIRONMENT=",
        "EXIT_RUNTIME",
        "FOO",
        "all",
        "error",
        "address",
        "undefined",
        "c++20",
        "embind",
        "_main",
        "1",
        "16MB",
        "=",
        ",",
        " ",
        "@",
        "@/etc/passwd",
        "/etc/passwd",
        "/",
        "..",
        "../",
        "./",
        "~",
        "$HOME",
        "\\",
        '"',
        "'",
        '"/etc/passwd"',
        "'@x'",
        "[",
        "]",
        "%2e%2e",
        "\t",
        "\n",
        "data.txt",
    ]
)
_ARG = st.lists(_PIECES, min_size=1, max_size=5).map("".join)
# Real flags and their split values mixed in, so accepted lists are common, not rare.
_KNOWN = st.sampled_from(
    [
        "-O2",
        "-DFOO=1",
        "-Wall",
        "-std=c++20",
        "-lembind",
        "-sEXIT_RUNTIME=1",
        "-fexceptions",
        "-Iinclude",
        "-I.",
        "-I",
        "-isystem",
        "-iquote",
    ]
)


def _assert_no_host_path(args: list[str]) -> None:
    try:
        accepted = check_args(args, STANDARD)
    except RequestError:
        return
    assert accepted == tuple(args)
    job = "/job"
    for kind, value in _files_read(accepted):
        assert kind == "job", (kind, value, accepted)
        resolved = os.path.normpath(os.path.join(job, value))
        assert resolved == job or resolved.startswith(job + "/"), (value, accepted)
        for character in "$~\\\"' \n":
            assert character not in value, (value, accepted)


@settings(max_examples=1500, deadline=None)
@given(_ARG, _ARG)
def test_no_accepted_argument_or_pair_names_a_host_path(first: str, second: str) -> None:
    """One argument alone, and as a flag with its split value."""
    _assert_no_host_path([first])
    _assert_no_host_path([first, second])


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.one_of(_KNOWN, _ARG), max_size=5))
def test_no_accepted_argument_list_names_a_host_path(args: list[str]) -> None:
    _assert_no_host_path(args)
