"""The three ways to send a compile, ending in the one `CompileRequest` the policy checks.

- JSON: `{"code", "type", "args", "files": {path: text}}` (the seed's shape plus `files`).
- multipart/form-data: plain fields `code`, `type`, `args` (repeated); every uploaded file is a
  project file whose path is its field name (`curl -F main.c=@main.c -F util.h=@util.h`).
- raw body: the body is the one source, options in the query (`?type=c&args=-O2&args=-g`).
  Chosen when the query string has options or the body is `text/*` or octet-stream (curl's
  `--data-binary` sends form-urlencoded); options in the query with a JSON or multipart body
  are refused, so nothing meant as JSON is ever compiled as C.
- archive: a `.tar` (plain or compressed) or `.zip` body, by its content type, holding the
  project tree (`archives.py`); options in the query as for a raw body.

`sources` (a JSON list, repeated form fields or query parameters) names the translation units
among the files by path or pattern (`src/*.c`, `!src/lua.c`); without it every C or C++ file
is one.

`code` may be left out when `files` holds `main.c` or `main.cpp`: that file is the main source
(and gives the language unless `type` says otherwise). The body size bound (`maxBodyBytes`) is
applied before any of this, so it covers every file of every encoding.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

import attrs
from quart import Request

from emcc_trio.api.archives import ARCHIVE_TYPES, unpack
from emcc_trio.compile.policy import LANGUAGES, STANDARD, Policy, parse_request
from emcc_trio.compile.sources import (
    DEFAULT_LIMITS,
    MAIN_NAMES,
    FileError,
    ProjectLimits,
    check_files,
    check_patterns,
    select_sources,
)
from emcc_trio.errors import RequestError, RunsOffError
from emcc_trio.execute.options import RUN_FIELDS, RunLimits, RunOptions, parse_run_options
from emcc_trio.models import SOURCE_NAMES, CompileRequest

FIELDS: Final = frozenset({"code", "type", "args", "sources"})
QUERY_OPTIONS: Final = frozenset({"type", "args", "sources"})
_RAW_TYPES: Final = ("text/", "application/octet-stream")


def _text(content: bytes, what: str) -> str:
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(f"{what} is not UTF-8 text: {exc}") from exc


@attrs.frozen
class Rules:
    """What every encoding checks a request against."""

    policy: Policy = STANDARD
    limits: ProjectLimits = DEFAULT_LIMITS


DEFAULT_RULES: Final = Rules()


def assemble(
    code: str | None,
    kind: Any,
    args: Any,
    files: list[tuple[str, bytes]],
    rules: Rules = DEFAULT_RULES,
    sources: Any = None,
) -> CompileRequest:
    """One request from the parts every encoding has; raise RequestError naming the fault."""
    try:
        checked = dict(check_files(files, rules.limits))
    except FileError as exc:
        raise RequestError(str(exc)) from exc
    if code is None:
        if kind not in (None, ""):
            if not isinstance(kind, str) or kind.lower() not in LANGUAGES:
                raise RequestError(f'"type" must be one of c, cpp, cc, c++ (got {kind!r})')
            candidates = [SOURCE_NAMES[LANGUAGES[kind.lower()]]]
        else:
            candidates = [name for name in MAIN_NAMES if name in checked]
            if len(candidates) > 1:
                raise RequestError('both main.c and main.cpp are given: say which with "type"')
        main = next((name for name in candidates if name in checked), None)
        if main is None:
            wanted = " or ".join(candidates or list(MAIN_NAMES))
            raise RequestError(f'"code" is missing and there is no {wanted} in "files"')
        code = _text(checked.pop(main), f"file {main!r}")
        kind = MAIN_NAMES[main]
    request = parse_request(
        {"code": code, "type": "" if kind is None else kind, "args": args}, rules.policy
    )
    if request.source_name in checked:
        raise RequestError(
            f"file {request.source_name!r} is not allowed: it is the main source, sent as"
            ' "code" (leave "code" out to compile this file)'
        )
    under_main = next((p for p in checked if p.startswith(request.source_name + "/")), None)
    if under_main is not None:
        raise RequestError(
            f"file {under_main!r} is not allowed: {request.source_name!r} is the main source,"
            " a file, so it cannot be a directory"
        )
    request = attrs.evolve(request, files=tuple(sorted(checked.items())))
    if request.size_bytes > rules.limits.max_total_bytes:
        raise RequestError(
            f"the project is {request.size_bytes} bytes (at most "
            f"{rules.limits.max_total_bytes}: maxProjectMB)"
        )
    if sources is None:
        return request
    if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
        raise RequestError('"sources" must be a list of paths or patterns')
    try:
        units = select_sources(sorted(checked), check_patterns(sources), request.source_name)
    except FileError as exc:
        raise RequestError(str(exc)) from exc
    return attrs.evolve(request, units=units)


def _decode_json(body: bytes) -> dict[str, Any]:
    try:
        decoded = json.loads(body)
    except ValueError as exc:
        raise RequestError(f"the body is not valid JSON: {exc}") from exc
    except RecursionError:
        raise RequestError("the body is nested too deeply to be a compile request") from None
    if not isinstance(decoded, dict):
        raise RequestError("the body must be a JSON object")
    return decoded


def from_json(body: bytes, rules: Rules = DEFAULT_RULES) -> CompileRequest:
    return from_object(_decode_json(body), rules)


def from_object(decoded: dict[str, Any], rules: Rules = DEFAULT_RULES) -> CompileRequest:
    """A request from a decoded JSON object (its run fields already taken out)."""
    files = decoded.pop("files", None) or {}
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise RequestError('"files" must be an object of path: text')
    unknown = sorted(set(decoded) - FIELDS)
    if unknown:
        raise RequestError(f"unknown field(s): {', '.join(unknown)}")
    encoded = []
    for path, text in files.items():
        try:
            encoded.append((path, text.encode("utf-8")))
        except UnicodeEncodeError as exc:
            raise RequestError(
                f"file {path!r} contains a lone surrogate at character {exc.start}:"
                " files must be valid UTF-8"
            ) from None
    return assemble(
        decoded.get("code"),
        decoded.get("type"),
        decoded.get("args"),
        encoded,
        rules,
        decoded.get("sources"),
    )


def _query_options(query: Mapping[str, list[str]]) -> tuple[str | None, list[str], Any]:
    """(type, args, sources) from the query string of a raw or archive body."""
    unknown = sorted(set(query) - QUERY_OPTIONS)
    if unknown:
        raise RequestError(f"unknown query parameter(s): {', '.join(unknown)}")
    kinds = query.get("type", [])
    if len(kinds) > 1:
        raise RequestError('"type" is given more than once')
    return (kinds[0] if kinds else None), query.get("args", []), query.get("sources")


def from_raw(
    body: bytes, query: Mapping[str, list[str]], rules: Rules = DEFAULT_RULES
) -> CompileRequest:
    kind, args, sources = _query_options(query)
    if sources is not None:
        raise RequestError('"sources" goes with a project (files or an archive), not one source')
    return assemble(_text(body, "the body"), kind or "", args, [], rules)


def from_archive(
    body: bytes, content_type: str, query: Mapping[str, list[str]], rules: Rules = DEFAULT_RULES
) -> CompileRequest:
    """An archive of the project tree: its main.c or main.cpp is the main source."""
    kind, args, sources = _query_options(query)
    files = unpack(body, content_type, rules.limits)
    return assemble(None, kind, args, files, rules, sources)


def from_form(
    fields: Mapping[str, list[str]],
    uploads: Mapping[str, list[bytes]],
    rules: Rules = DEFAULT_RULES,
) -> CompileRequest:
    # A part whose Content-Disposition the parser could not read has no name (None).
    if not all(isinstance(name, str) and name for name in (*fields, *uploads)):
        raise RequestError(
            "a multipart part has no name (its Content-Disposition names none, or none the "
            "parser can read)"
        )
    unknown = sorted(set(fields) - FIELDS)
    if unknown:
        raise RequestError(
            f"unknown form field(s): {', '.join(unknown)} (upload project files as files: "
            "-F path=@file)"
        )
    for name in ("code", "type"):
        if len(fields.get(name, [])) > 1:
            raise RequestError(f'"{name}" is given more than once')
    code = fields["code"][0] if "code" in fields else None
    files: list[tuple[str, bytes]] = []
    for path, contents in uploads.items():
        if path in ("type", "args", "sources"):
            raise RequestError(f'"{path}" must be a plain form field, not a file')
        if len(contents) > 1:
            raise RequestError(f"file {path!r} is given twice")
        if path == "code":
            if code is not None:
                raise RequestError('"code" is given more than once')
            code = _text(contents[0], '"code"')
        else:
            files.append((path, contents[0]))
    kind = fields["type"][0] if "type" in fields else None
    return assemble(code, kind, fields.get("args", []), files, rules, fields.get("sources"))


def _one(values: list[Any], name: str) -> Any:
    if len(values) > 1:
        raise RequestError(f'"{name}" is given more than once')
    return values[0]


def _run_fields_of_lists(
    given: dict[str, list[Any]], where: str, names: frozenset[str]
) -> dict[str, Any]:
    """The run fields (and the job's `kind`) of a form or a query, taken out of `given`, as
    the JSON body has them: `argv` repeated, `limits` a JSON object as text, `stdin` text (or
    a file's bytes)."""
    found: dict[str, Any] = {}
    for name in names & given.keys():
        values = given.pop(name)
        if name == "argv":
            found[name] = values
        elif name == "limits":
            text = _one(values, name)
            try:
                found[name] = json.loads(text)
            except (ValueError, TypeError):
                raise RequestError(
                    f'"limits" in the {where} must be a JSON object such as {{"timeoutSeconds": 2}}'
                ) from None
        else:
            found[name] = _one(values, name)
    return found


async def read(request: Request, rules: Rules = DEFAULT_RULES) -> CompileRequest:
    """The compile request in whatever encoding it came; RequestError says what is wrong."""
    compile_request, _ = await _read(request, rules, frozenset())
    return compile_request


async def read_run(
    request: Request, rules: Rules, limits: RunLimits
) -> tuple[CompileRequest, RunOptions]:
    """A run request: a compile request in any encoding plus the run fields (`stdin` or
    `stdinBase64`, `argv`, `limits`): JSON fields, form fields, or query parameters."""
    compile_request, fields = await _read(request, rules, RUN_FIELDS)
    return compile_request, parse_run_options(fields, limits)


async def read_job(
    request: Request, rules: Rules, limits: RunLimits | None
) -> tuple[str, CompileRequest, RunOptions | None]:
    """A job: `kind` ("compile", the default, or "run": a field of the body, or a query
    parameter with a raw or archive body), then the body of that route. `limits` None: this
    server does not run programs (RunsOffError for kind "run")."""
    compile_request, fields = await _read(request, rules, RUN_FIELDS | {"kind"})
    kind = fields.pop("kind", None) or "compile"
    if kind not in ("compile", "run"):
        raise RequestError(f'"kind" must be "compile" or "run" (got {kind!r})')
    if kind == "compile":
        if fields:
            raise RequestError(
                f'{", ".join(sorted(fields))}: only a run takes these (send "kind": "run")'
            )
        return kind, compile_request, None
    if limits is None:
        raise RunsOffError
    return kind, compile_request, parse_run_options(fields, limits)


async def _read(
    request: Request, rules: Rules, extra: frozenset[str]
) -> tuple[CompileRequest, dict[str, Any]]:
    """The compile request and the `extra` fields (run fields, a job's kind) beside it."""
    content_type = request.mimetype
    query = {key: request.args.getlist(key) for key in request.args}
    has_query = bool(query)  # run options included: it makes the body a raw source
    run_fields = _run_fields_of_lists(query, "query string", extra)
    if content_type in ARCHIVE_TYPES:
        archive = await request.get_data(cache=False, as_text=False)
        assert isinstance(archive, bytes)
        return from_archive(archive, content_type, query, rules), run_fields
    if content_type == "multipart/form-data" and not has_query:
        form = {key: (await request.form).getlist(key) for key in await request.form}
        uploaded = await request.files
        uploads = {key: [u.read() for u in uploaded.getlist(key)] for key in uploaded}
        if extra:
            run_fields.update(_run_fields_of_lists(form, "form", extra))
            if "stdin" in uploads and "stdin" in extra:
                if "stdin" in run_fields:
                    raise RequestError('"stdin" is given more than once')
                run_fields["stdin"] = _one(uploads.pop("stdin"), "stdin")
        return from_form(form, uploads, rules), run_fields
    if has_query and content_type in ("application/json", "multipart/form-data"):
        raise RequestError(
            "options in the query string go with a raw source body only "
            f"(not {content_type}): send type and args in the body"
        )
    body = await request.get_data(cache=False, as_text=False)
    assert isinstance(body, bytes)
    if has_query or content_type.startswith(_RAW_TYPES):
        return from_raw(body, query, rules), run_fields
    decoded = _decode_json(body)
    if extra:
        run_fields = {name: decoded.pop(name) for name in extra & decoded.keys()}
    return from_object(decoded, rules), run_fields
