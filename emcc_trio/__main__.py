"""`emcc-trio serve [--config PATH]`: the server (server.run); `emcc-trio compile ...`,
`emcc-trio build DIR ...` and `emcc-trio run ...` are the client (client/cli.py);
`emcc-trio token new NAME`: a new API token and its line for `apiTokensFile`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import trio

from emcc_trio import logs, server
from emcc_trio.api.tokens import new_token
from emcc_trio.client import cli
from emcc_trio.config import ConfigError, load


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emcc-trio", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    serve_parser = sub.add_parser("serve", help="run the HTTP service")
    serve_parser.add_argument("--config", default="config.json", help="path to config.json")
    sub.add_parser("compile", help="compile files on a server: emcc-trio compile --help")
    sub.add_parser("build", help="build a source tree on a server: emcc-trio build --help")
    sub.add_parser("run", help="run a program on a server: emcc-trio run --help")
    token_parser = sub.add_parser("token", help="API tokens")
    token_sub = token_parser.add_subparsers(dest="token_command", required=True)
    new_parser = token_sub.add_parser(
        "new", help="print a new token, then its line for apiTokensFile (a hash, never the token)"
    )
    new_parser.add_argument("name", help="a name for logs: 1-64 letters, digits or ._-")
    return parser


def _new_token(name: str) -> int:
    try:
        token, line = new_token(name)
    except ValueError as exc:
        print(f"emcc-trio: {exc}", file=sys.stderr)
        return 2
    print(
        "emcc-trio: line 1 is the token: hand it to the client, it is stored nowhere;"
        " line 2 goes into apiTokensFile (then send the server SIGHUP)",
        file=sys.stderr,
    )
    print(f"{token}\n{line}")
    return 0


def _serve(config_path: Path) -> int:
    logs.configure()
    try:
        config = load(config_path)
    except ConfigError as exc:
        print(f"emcc-trio: config error: {exc}", file=sys.stderr)
        return 2
    try:
        trio.run(server.run, config, Path.cwd())
    except server.StartupError as exc:
        print(f"emcc-trio: refusing to start: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["compile"], ["build"], ["run"]):
        return cli.main(argv[1:], command=argv[0])
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["serve", *argv])
    if args.command == "token":
        return _new_token(args.name)
    return _serve(Path(args.config))


if __name__ == "__main__":
    sys.exit(main())
