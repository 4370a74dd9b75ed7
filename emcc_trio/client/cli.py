"""The command-line client, from a shell.

`emcc-trio compile [--server URL] [-o DIR] FILE... [-- EMCC ARGS]`: the first C/C++ file is
the main source; the other files (headers, more sources, data for `--embed-file`) are sent with
their paths relative to the main file's directory, as multipart/form-data.

`emcc-trio build DIR [--sources PATTERN...] [-- EMCC ARGS]`: the tree under DIR (which holds
`main.c` or `main.cpp`) goes as one `.tar.gz`, without what its `.gitignore` files, version
control, the usual build directories and hidden files would leave out.

`emcc-trio run [-X EMCC ARG]... [--stdin FILE] FILE... [-- ARGS]`: the files go as for
`compile`, to POST /run; the program runs on the server with ARGS as its argv, and what it
printed comes out here byte for byte (stdout to stdout, stderr to stderr).

Diagnostics are printed the way compilers print them (`file:line:col: severity: message`),
under the names on this machine. Exit status: 0 built, 1 compile error or cap hit, 2 anything
else (refused request, server unreachable, busy); `run` exits with the program's status once
it ran (128 + N for signal N, as a shell reports it).
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import signal
import sys
import tarfile
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Final, TextIO

import attrs
import httpx
import pathspec
import trio

from emcc_trio.models import is_source

DEFAULT_SERVER: Final = "http://localhost:8080"
PROGRESS_AFTER_SECONDS: Final = 2.0
PROGRESS_EVERY_SECONDS: Final = 2.0
_TIMEOUT: Final = httpx.Timeout(30.0, read=900.0)  # a compile may queue, then run for minutes
_LANGUAGES: Final = {".c": "c", ".cpp": "cpp", ".cc": "cpp"}
_MAIN_NAMES: Final = {"c": "main.c", "cpp": "main.cpp"}
# Directories a build leaves behind or version control keeps: never part of the upload.
SKIPPED_DIRS: Final = frozenset(
    {"build", "builddir", "dist", "out", "node_modules", "CMakeFiles", "__pycache__", "target"}
)


class UsageError(Exception):
    """The command line cannot be sent; the message says why."""


@attrs.frozen
class Upload:
    """What goes to the server and how to name the server's paths back."""

    code: str
    language: str
    files: tuple[tuple[str, bytes], ...]
    names: dict[str, str]  # server path -> the name the user gave


def plan_upload(paths: list[str]) -> Upload:
    sources = [p for p in paths if is_source(p)]
    if not sources:
        raise UsageError("no C/C++ source among the files (.c, .cpp, .cc)")
    main = Path(sources[0])
    language = _LANGUAGES[main.suffix]
    base = main.resolve().parent
    names = {_MAIN_NAMES[language]: sources[0]}
    files = []
    for given in paths:
        if given == sources[0]:
            continue
        resolved = Path(given).resolve()
        if not resolved.is_relative_to(base):
            raise UsageError(f"{given}: not inside the main file's directory ({base})")
        relative = resolved.relative_to(base).as_posix()
        try:
            files.append((relative, resolved.read_bytes()))
        except OSError as exc:
            raise UsageError(f"{given}: {exc.strerror}") from exc
        names[relative] = given
    try:
        code = main.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{sources[0]}: {exc}") from exc
    return Upload(code=code, language=language, files=tuple(files), names=names)


@attrs.frozen
class Archive:
    """A tree packed for `emcc-trio build`."""

    body: bytes
    names: dict[str, str]  # server path -> the local path


def _ignored(folder: Path, root: Path, specs: list[tuple[Path, pathspec.GitIgnoreSpec]]) -> bool:
    relative = folder.relative_to(root)
    return any(
        spec.match_file(relative.relative_to(base).as_posix() + "/")
        for base, spec in specs
        if relative.is_relative_to(base) and relative != base
    )


def pack_tree(root: Path) -> Archive:
    """Every file under `root` a build would use, as a gzipped tar with paths relative to
    `root`: no hidden names, no version control, no usual build directories (`SKIPPED_DIRS`,
    `cmake-build-*`), nothing a `.gitignore` on the way excludes, no links."""
    if not (root / "main.c").is_file() and not (root / "main.cpp").is_file():
        raise UsageError(f"{root}: no main.c or main.cpp at the top of the tree")
    buffer = io.BytesIO()
    names: dict[str, str] = {}
    specs: list[tuple[Path, pathspec.GitIgnoreSpec]] = []
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for folder, dirs, files in os.walk(root):
            here = Path(folder)
            relative_here = here.relative_to(root)
            gitignore = here / ".gitignore"
            if gitignore.is_file():
                lines = gitignore.read_text(encoding="utf-8", errors="replace").splitlines()
                specs.append((relative_here, pathspec.GitIgnoreSpec.from_lines(lines)))
            dirs[:] = sorted(
                name
                for name in dirs
                if not name.startswith(".")
                and name not in SKIPPED_DIRS
                and not name.startswith("cmake-build-")
                and not (here / name).is_symlink()
                and not _ignored(here / name, root, specs)
            )
            for name in sorted(files):
                path = here / name
                relative = (relative_here / name).as_posix()
                if name.startswith(".") or path.is_symlink() or not path.is_file():
                    continue
                if any(
                    spec.match_file((relative_here / name).relative_to(base).as_posix())
                    for base, spec in specs
                    if relative_here.is_relative_to(base)
                ):
                    continue
                archive.add(path, arcname=relative, recursive=False)
                names[relative] = str(path)
    return Archive(buffer.getvalue(), names)


def format_diagnostic(diagnostic: dict[str, Any], names: dict[str, str]) -> str:
    where = "emcc-trio"
    if diagnostic.get("file") is not None:
        name = names.get(diagnostic["file"], diagnostic["file"])
        where = f"{name}:{diagnostic['line']}:{diagnostic['column']}"
    return f"{where}: {diagnostic['severity']}: {diagnostic['message']}"


async def _progress(doing: str, server: str, stderr: TextIO) -> None:
    """Tell a person at a terminal that a slow compile is still going (cancelled at the end)."""
    started = trio.current_time()
    await trio.sleep(PROGRESS_AFTER_SECONDS)
    while True:
        seconds = round(trio.current_time() - started)
        print(f"emcc-trio: {doing} on {server}... {seconds} s", file=stderr, flush=True)
        await trio.sleep(PROGRESS_EVERY_SECONDS)


Send = Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]


def send_upload(
    upload: Upload, args: list[str], route: str = "/compile", run_fields: Mapping[str, Any] = {}
) -> Send:
    """`emcc-trio compile` (and `run`: to /run, with its fields): JSON for one file, multipart
    for several (a list field becomes repeated form fields there)."""
    data: dict[str, Any] = {"code": upload.code, "type": upload.language, "args": args}
    data.update(run_fields)
    files = [(path, (path, content)) for path, content in upload.files]

    async def send(client: httpx.AsyncClient) -> httpx.Response:
        if files:
            return await client.post(route, data=data, files=files)
        return await client.post(route, json=data)

    return send


def send_archive(archive: Archive, args: list[str], sources: list[str]) -> Send:
    """`emcc-trio build`: the tree as one .tar.gz, the options in the query."""
    params = httpx.QueryParams({"args": args, "sources": sources})

    async def send(client: httpx.AsyncClient) -> httpx.Response:
        headers = {"Content-Type": "application/gzip"}
        return await client.post("/compile", params=params, content=archive.body, headers=headers)

    return send


def _client(server: str, token: str | None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(base_url=server, timeout=_TIMEOUT, headers=headers)


async def _answer(
    client: httpx.AsyncClient,
    server: str,
    send: Send,
    names: dict[str, str],
    stderr: TextIO,
    progress: str | None,
) -> dict[str, Any] | int:
    """The server's successful answer, its diagnostics printed; or, once what went wrong is
    printed, the exit status. `progress` says what the progress lines say is going on."""
    response: httpx.Response | httpx.HTTPError
    async with trio.open_nursery() as nursery:
        if progress is not None:
            nursery.start_soon(_progress, progress, server, stderr)
        try:
            response = await send(client)
        except httpx.HTTPError as exc:
            response = exc
        nursery.cancel_scope.cancel()
    if isinstance(response, httpx.HTTPError):
        print(f"emcc-trio: error: cannot reach {server}: {response}", file=stderr)
        return 2
    try:
        body: dict[str, Any] = response.json()
    except ValueError:
        print(f"emcc-trio: error: HTTP {response.status_code} from {server}", file=stderr)
        return 2
    for diagnostic in body.get("diagnostics", []):
        print(format_diagnostic(diagnostic, names), file=stderr)
    if not body.get("ok"):
        if "id" not in body or not body.get("diagnostics"):
            print(f"emcc-trio: error: {body.get('error')}", file=stderr)
        # A compile error or a cap kill is the program's fault; the rest is the request's.
        return 1 if "id" in body else 2
    return body


async def compile_and_download(
    server: str,
    token: str | None,
    out_dir: Path,
    send: Send,
    names: dict[str, str],
    stderr: TextIO,
) -> int:
    async with _client(server, token) as client:
        body = await _answer(client, server, send, names, stderr, "compiling")
        if isinstance(body, int):
            return body
        fetched = {}
        # No `wasm` for -sSINGLE_FILE (app.js holds it); a `worker` for -pthread only.
        for key, name in (("js", "app.js"), ("wasm", "app.wasm"), ("worker", "app.worker.js")):
            url = body.get(key)
            if url is None:
                continue
            try:
                got = await client.get(url)
            except httpx.HTTPError as exc:
                print(f"emcc-trio: error: GET {url}: {exc}", file=stderr)
                return 2
            if got.status_code != 200:
                print(f"emcc-trio: error: GET {url}: HTTP {got.status_code}", file=stderr)
                return 2
            fetched[name] = got.content
    await trio.to_thread.run_sync(_save, out_dir, fetched)
    return 0


def _save(out_dir: Path, fetched: dict[str, bytes]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, content in fetched.items():
        (out_dir / name).write_bytes(content)
        print(out_dir / name)


def exit_status(ran: Mapping[str, Any]) -> int:
    """A run's status as a shell reports a process's: its exit code, or 128 + N when it died
    of signal N (the server names one it has no name for "signal N")."""
    name = ran["signal"]
    if name is None:
        return int(ran["exitCode"]) & 0xFF
    try:
        number: int = signal.Signals[name]
    except KeyError:
        number = int(name.removeprefix("signal "))
    return 128 + number


def run_note(ran: Mapping[str, Any]) -> str | None:
    """The line that says a cap ended the run or cut its output, if one did."""
    if ran["message"]:
        return str(ran["message"])
    cut = [stream for stream in ("stdout", "stderr") if ran[f"{stream}Truncated"]]
    if cut:
        return f"the program's {' and '.join(cut)} was cut short at the server's output cap"
    return None


def _stream_bytes(ran: Mapping[str, Any], stream: str) -> bytes:
    text = ran[stream]
    if ran[f"{stream}Encoding"] == "base64":
        return base64.b64decode(text)
    return str(text).encode("utf-8")


def _write(stream: TextIO, data: bytes) -> None:
    """The program's bytes as they are, after whatever text was printed to `stream` before."""
    stream.flush()
    stream.buffer.write(data)
    stream.buffer.flush()


async def compile_and_run(
    server: str, token: str | None, send: Send, names: dict[str, str], stderr: TextIO
) -> int:
    # Progress lines only for a person at a terminal: piped, stderr is the program's alone.
    progress = "compiling and running" if stderr.isatty() else None
    async with _client(server, token) as client:
        body = await _answer(client, server, send, names, stderr, progress)
    if isinstance(body, int):
        return body
    ran = body["run"]
    _write(sys.stdout, _stream_bytes(ran, "stdout"))
    _write(stderr, _stream_bytes(ran, "stderr"))
    note = run_note(ran)
    if note is not None:
        print(f"emcc-trio: {note}", file=stderr)
    return exit_status(ran)


def _read_input(path: str) -> bytes:
    """The program's stdin: a file's bytes, or this process's stdin for `-`."""
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror}") from exc


def _attached(own: list[str]) -> list[str]:
    """`-X VALUE` as `-X=VALUE`: argparse would take a VALUE such as -O2 for an option."""
    joined = []
    given = iter(own)
    for arg in given:
        if arg in ("-X", "--emcc-arg"):
            value = next(given, None)
            if value is not None:  # without one, argparse says what is missing
                arg = f"{arg}={value}"
        joined.append(arg)
    return joined


def _parser(command: str) -> argparse.ArgumentParser:
    usage = None
    epilog = "Arguments after -- go to emcc (the server's allowlist applies)."
    if command == "build":
        description = (
            "Build the C/C++ tree under DIR (main.c or main.cpp at its top) on an emcc-trio "
            "server and download app.js and app.wasm."
        )
    elif command == "run":
        usage = (
            "emcc-trio run [-h] [--server URL] [--token TOKEN] [-X EMCC_ARG]... [--stdin FILE] "
            "FILE... [-- ARGS]"
        )
        description = (
            "Compile C/C++ files on an emcc-trio server and run the program there, in the "
            "server's jail and under its run caps; print its stdout to stdout and its stderr to "
            "stderr, byte for byte, then exit with its status."
        )
        epilog = (
            "Arguments after -- are the program's (argv[1] on). Arguments for emcc go one per "
            "-X (-X -O2 -X -sUSE_ZLIB=1; the server's allowlist applies). Compile warnings, and "
            "a last line when a cap ended the run or cut its output, go to stderr before and "
            "after the program's own. Exit status: the program's exit code, or 128 + N when it "
            "died of signal N (134 for abort(), 137 when a cap killed it); 1 for a compile "
            "error or a compile cap; 2 for anything else (a refused request, a busy or "
            "unreachable server, one that does not run programs)."
        )
    else:
        description = (
            "Compile C/C++ files on an emcc-trio server and download app.js and app.wasm "
            "(app.js alone for -sSINGLE_FILE, and app.worker.js too for -pthread)."
        )
    parser = argparse.ArgumentParser(
        prog=f"emcc-trio {command}", usage=usage, description=description, epilog=epilog
    )
    parser.add_argument(
        "--server",
        default=os.environ.get("EMCC_TRIO_SERVER", DEFAULT_SERVER),
        help=f"server URL (default: $EMCC_TRIO_SERVER or {DEFAULT_SERVER})",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("EMCC_TRIO_TOKEN"),
        help="API token, sent as a Bearer token (default: $EMCC_TRIO_TOKEN)",
    )
    if command != "run":
        parser.add_argument("-o", "--out-dir", default=".", help="where app.js and app.wasm go")
    if command == "build":
        parser.add_argument("dir", metavar="DIR", help="the tree to build")
        parser.add_argument(
            "--sources",
            nargs="+",
            default=[],
            metavar="PATTERN",
            help="the translation units besides main (paths or globs, !pattern excludes); "
            "default: every .c, .cpp and .cc",
        )
    else:
        parser.add_argument("files", nargs="+", metavar="FILE", help="the main source first")
    if command == "run":
        parser.add_argument(
            "-X",
            "--emcc-arg",
            dest="emcc_args",
            action="append",
            default=[],
            metavar="EMCC_ARG",
            help="one argument for emcc (repeat for more)",
        )
        parser.add_argument(
            "--stdin",
            metavar="FILE",
            help="the program's stdin: FILE's bytes, or this command's stdin for - "
            "(default: empty)",
        )
    return parser


def main(argv: list[str], stderr: TextIO = sys.stderr, command: str = "compile") -> int:
    """`emcc-trio compile` (or, with `command` "build" or "run", `emcc-trio build` or
    `emcc-trio run`)."""
    own, after = argv, []  # after --: emcc's arguments, or for `run` the program's
    if "--" in argv:
        split = argv.index("--")
        own, after = argv[:split], argv[split + 1 :]
    options = _parser(command).parse_args(_attached(own) if command == "run" else own)
    try:
        if command == "build":
            archive = pack_tree(Path(options.dir))
            send, names = send_archive(archive, after, options.sources), archive.names
        elif command == "run":
            upload = plan_upload(options.files)
            fields: dict[str, Any] = {"argv": after}
            if options.stdin is not None:
                # Base64 whatever it holds: the bytes reach the program as they are.
                fields["stdinBase64"] = base64.b64encode(_read_input(options.stdin)).decode()
            send = send_upload(upload, options.emcc_args, "/run", fields)
            names = upload.names
        else:
            upload = plan_upload(options.files)
            send, names = send_upload(upload, after), upload.names
    except (UsageError, OSError) as exc:
        print(f"emcc-trio: error: {exc}", file=stderr)
        return 2
    if command == "run":
        return trio.run(compile_and_run, options.server, options.token, send, names, stderr)
    return trio.run(
        compile_and_download,
        options.server,
        options.token,
        Path(options.out_dir),
        send,
        names,
        stderr,
    )
