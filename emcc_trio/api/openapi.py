"""The service's HTTP contract as an OpenAPI 3.0 document, kept as data in this one module.

`GET /openapi.json` serves it. tests/test_openapi.py checks that its paths and methods are
exactly the app's routes and runs schemathesis against a live server with it.
"""

from __future__ import annotations

import json
from typing import Any, Final

from quart import Response
from quart_trio import QuartTrio

from emcc_trio.compile.policy import MAX_ARG_LENGTH, MAX_ARGS
from emcc_trio.compile.sources import DEFAULT_LIMITS, MAX_PATTERNS
from emcc_trio.models import ARTIFACT_FILES, LIMITS

JsonObject = dict[str, Any]

JOB_ID_PATTERN: Final = "^[0-9a-f]{32}$"
# A run's job dir is the jail's tmpfs: only a compile has a `disk` cap.
RUN_LIMITS: Final = [limit for limit in LIMITS if limit != "disk"]


def _ref(name: str) -> JsonObject:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: JsonObject, description: str) -> JsonObject:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _text(description: str, media_type: str = "text/plain") -> JsonObject:
    return {"description": description, "content": {media_type: {"schema": {"type": "string"}}}}


def _error(description: str) -> JsonObject:
    return {"$ref": f"#/components/responses/{description}"}


_FILES_RULES: Final = (
    f"A path is relative, at most {DEFAULT_LIMITS.max_depth} levels (`maxPathDepth`) and "
    f"{DEFAULT_LIMITS.max_path_length} characters (`maxPathLength`), each "
    "component of letters, digits and `._-` starting with a letter, digit or `_` (no `..`, "
    "no hidden or flag-like names), never `app.js`/`app.wasm`; at most "
    f"{DEFAULT_LIMITS.max_files} files (`maxFiles`; the defaults shown), at most `maxProjectMB` "
    "in all, within `maxBodyBytes`. A refused path is a 400 that names it."
)
_SOURCES: Final[JsonObject] = {
    "type": "array",
    "maxItems": MAX_PATTERNS,
    "items": {"type": "string", "pattern": r"^!?[A-Za-z0-9._*?/-]+$"},
    "description": (
        "The translation units among `files`, by path or pattern (`*` within a directory, "
        "`**` across, `?` one character; a leading `!` excludes what earlier ones chose), "
        'e.g. `["src/*.c", "!src/lua.c"]`. The main source is always compiled. Each '
        "including pattern must match a file, and only C or C++ sources. Without it: every "
        "`.c`, `.cpp` and `.cc`."
    ),
    "example": ["src/*.c", "!src/main_cli.c"],
}
_ARGS_DESCRIPTION: Final = (
    "Extra emcc arguments, checked by the closed argument policy (see the "
    "documentation): a refused one is a 400 that names it."
)

SCHEMAS: Final[JsonObject] = {
    "Toolchain": {
        "type": "object",
        "additionalProperties": False,
        "required": ["emscripten", "compiler", "ports"],
        "properties": {
            "emscripten": {"type": ["string", "null"], "description": "Its release: `3.1.6`."},
            "compiler": {"type": "string", "description": "What `emcc --version` says first."},
            "ports": {
                "type": "array",
                "description": "The installed ports (emscriptenCacheDir), in build order.",
                "items": {
                    "type": "object",
                    "required": ["name", "flag", "summary", "version", "source", "licence"],
                    "properties": {
                        "name": {"type": "string", "description": "emscripten's name: `sdl2`."},
                        "flag": {"type": "string", "description": "What asks for it."},
                        "summary": {"type": "string"},
                        "version": {"type": "string", "description": "Its upstream release."},
                        "source": {"type": "string", "description": "The Debian package."},
                        "licence": {"type": "string"},
                        "formatsSetting": {
                            "type": "string",
                            "description": "The list setting that picks a variant.",
                        },
                        "formats": {
                            "type": "array",
                            "items": {"type": "array", "items": {"type": "string"}},
                            "description": "The installed variants, each a sorted list.",
                        },
                        "defaultFormats": {"type": "array", "items": {"type": "string"}},
                    },
                },
            },
        },
    },
    "CompileRequest": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "code": {
                "type": "string",
                "minLength": 1,
                "pattern": r"\S",
                "description": (
                    "The main source (`main.c` or `main.cpp`). Not empty, no NUL character, no "
                    "lone surrogate. May be left out when `files` holds `main.c` or `main.cpp`."
                ),
            },
            "files": {
                "type": "object",
                "maxProperties": DEFAULT_LIMITS.max_files,
                "additionalProperties": {"type": "string"},
                "description": (
                    "More files of the project, path to text: headers, sources (every `.c`, "
                    "`.cpp` and `.cc` is compiled and linked with `code`, unless `sources` "
                    "names which) and data for "
                    "`--embed-file`/`--preload-file`. " + _FILES_RULES
                ),
            },
            "type": {
                "type": "string",
                "description": '`c` (the default, also `""`), `cpp`, `cc` or `c++`, any case.',
                "pattern": r"^([cC]|[cC][pP][pP]|[cC][cC]|[cC]\+\+)?$",
                "default": "c",
            },
            "args": {
                "type": "array",
                "maxItems": MAX_ARGS,
                "description": (
                    "Extra emcc arguments, appended to the server's defaultArgs and checked "
                    "by value by a closed argument policy (the documentation has the full tables). "
                    "The default policy, `standard`: -O and -g levels, -std=, -D NAME[=VALUE] "
                    "and -U NAME (joined or split), -W<name>, -Werror, -w, a curated list of "
                    "-f and -m flags (exceptions, RTTI, LTO, fast math, sanitizers, SIMD), "
                    "-lembind/--bind, and listed -sNAME=VALUE settings with their values "
                    "checked (sizes at most the job's memory cap). A server configured with "
                    "argumentPolicy `seed` takes the seed's short allowlist only. Nothing "
                    "that can name a host path is accepted; a refused argument, a port "
                    "(-sUSE_*) included, is a 400 that names it and says why."
                ),
                "items": {"type": "string", "maxLength": MAX_ARG_LENGTH},
                "example": ["-O2", "-std=c++20", "-lembind", "-sEXIT_RUNTIME=1"],
            },
            "sources": _SOURCES,
        },
    },
    "CompileUpload": {
        "type": "object",
        "description": (
            "The same compile as multipart/form-data: `code`, `type` and `args` (repeated) "
            "are plain fields; every uploaded file is a project file whose path is its field "
            "name (`curl -F main.c=@main.c -F util.h=@util.h -F args=-O2`). " + _FILES_RULES
        ),
        "properties": {
            "code": {"type": "string"},
            "type": {"type": "string"},
            "args": {"type": "array", "items": {"type": "string"}},
            "sources": {"type": "array", "items": {"type": "string"}},
        },
        "additionalProperties": {"type": "string", "format": "binary"},
    },
    "Diagnostic": {
        "type": "object",
        "description": (
            "One of clang's diagnostics (`file:line:col: severity: message`); a linker "
            "diagnostic has no file, line or column."
        ),
        "additionalProperties": False,
        "required": ["file", "line", "column", "severity", "message"],
        "properties": {
            "file": {
                "type": "string",
                "nullable": True,
                "description": "`main.c`/`main.cpp` or a path of `files`.",
            },
            "line": {"type": "integer", "minimum": 1, "nullable": True},
            "column": {"type": "integer", "minimum": 1, "nullable": True},
            "severity": {"type": "string", "enum": ["error", "warning", "note", "remark"]},
            "message": {"type": "string"},
        },
    },
    "Usage": {
        "type": "object",
        "description": "Measured from the job's cgroup; null where the driver is `none`.",
        "additionalProperties": False,
        "required": ["peakMemoryBytes", "cpuSeconds", "peakPids", "durationSeconds"],
        "properties": {
            "peakMemoryBytes": {"type": "integer", "minimum": 0, "nullable": True},
            "cpuSeconds": {"type": "number", "minimum": 0, "nullable": True},
            "peakPids": {"type": "integer", "minimum": 0, "nullable": True},
            "durationSeconds": {"type": "number", "minimum": 0},
        },
    },
    "JobId": {
        "type": "string",
        "pattern": JOB_ID_PATTERN,
        "description": "128 random bits as 32 hex characters.",
    },
    "CompileSuccess": {
        "type": "object",
        "additionalProperties": False,
        "required": ["ok", "id", "js", "wasm", "output", "diagnostics", "usage", "cached"],
        "properties": {
            "ok": {"type": "boolean", "enum": [True]},
            "id": _ref("JobId"),
            "js": {"type": "string", "pattern": r"^/artifacts/[0-9a-f]{32}/app\.js$"},
            "wasm": {
                "type": "string",
                "nullable": True,
                "pattern": r"^/artifacts/[0-9a-f]{32}/app\.wasm$",
                "description": "null for a -sSINGLE_FILE build: the wasm is inside app.js.",
            },
            "worker": {
                "type": "string",
                "pattern": r"^/artifacts/[0-9a-f]{32}/app\.worker\.js$",
                "description": "-pthread builds only: the script of each thread's worker.",
            },
            "output": {"type": "string", "description": "The compiler's warnings."},
            "diagnostics": {"type": "array", "items": _ref("Diagnostic")},
            "usage": _ref("Usage"),
            "cached": {"type": "boolean"},
        },
    },
    "CompileFailure": {
        "type": "object",
        "description": (
            "The code did not compile; `error` is the compiler's output (bounded, emcc's "
            "internal clang command line left out), `diagnostics` the same read line by line."
        ),
        "additionalProperties": False,
        "required": ["ok", "id", "error", "diagnostics", "usage", "cached"],
        "properties": {
            "ok": {"type": "boolean", "enum": [False]},
            "id": _ref("JobId"),
            "error": {"type": "string"},
            "diagnostics": {"type": "array", "items": _ref("Diagnostic")},
            "usage": _ref("Usage"),
            "cached": {"type": "boolean"},
        },
    },
    "LimitExceeded": {
        "type": "object",
        "description": "A cap ended the job; `limit` says which.",
        "additionalProperties": False,
        "required": ["ok", "id", "limit", "error", "diagnostics", "usage"],
        "properties": {
            "ok": {"type": "boolean", "enum": [False]},
            "id": _ref("JobId"),
            "limit": {"type": "string", "enum": list(LIMITS)},
            "error": {"type": "string"},
            "diagnostics": {
                "type": "array",
                "items": _ref("Diagnostic"),
                "description": "Those in the output up to the cap.",
            },
            "usage": _ref("Usage"),
        },
    },
    "RunLimits": {
        "type": "object",
        "additionalProperties": False,
        "description": (
            "Lower caps for this run than the server's (`runMemoryMB`, `runCpuSeconds`, "
            "`runTimeoutSeconds`, `runOutputBytes`); a value above the server's is a 400."
        ),
        "properties": {
            "memoryMB": {"type": "integer", "minimum": 1},
            "cpuSeconds": {"type": "number", "exclusiveMinimum": True, "minimum": 0},
            "timeoutSeconds": {"type": "number", "exclusiveMinimum": True, "minimum": 0},
            "outputBytes": {"type": "integer", "minimum": 1},
        },
    },
    "RunResult": {
        "type": "object",
        "description": (
            "How the run ended. `exitCode` is main's return value or exit()'s status, "
            "`signal` what a native process would have died of instead (`SIGABRT` for "
            "abort(), `SIGSEGV` for an out-of-bounds access, `SIGFPE`, `SIGILL` for a trap, "
            "`SIGKILL` when a cap killed it): one of the two is null. `limit` names the cap "
            "that ended it. stdout and stderr are kept apart, each at most `runOutputBytes`; "
            "UTF-8 text as it is, anything else base64 (`stdoutEncoding`)."
        ),
        "additionalProperties": False,
        "required": [
            "exitCode",
            "signal",
            "limit",
            "message",
            "stdout",
            "stdoutEncoding",
            "stdoutTruncated",
            "stderr",
            "stderrEncoding",
            "stderrTruncated",
            "usage",
        ],
        "properties": {
            "exitCode": {"type": "integer", "nullable": True},
            "signal": {"type": "string", "nullable": True, "example": "SIGABRT"},
            "limit": {
                "type": "string",
                "nullable": True,
                "enum": [*RUN_LIMITS, None],
            },
            "message": {"type": "string", "nullable": True, "description": "What the cap was."},
            "stdout": {"type": "string"},
            "stdoutEncoding": {"type": "string", "enum": ["utf-8", "base64"]},
            "stdoutTruncated": {"type": "boolean"},
            "stderr": {"type": "string"},
            "stderrEncoding": {"type": "string", "enum": ["utf-8", "base64"]},
            "stderrTruncated": {"type": "boolean"},
            "usage": _ref("Usage"),
        },
    },
    "Error": {
        "type": "object",
        "additionalProperties": False,
        "required": ["ok", "error"],
        "properties": {
            "ok": {"type": "boolean", "enum": [False]},
            "error": {"type": "string", "description": "What went wrong, for a person."},
            "id": _ref("JobId"),
        },
    },
}

_RUN_FIELDS: Final[JsonObject] = {
    "stdin": {"type": "string", "description": "The program's stdin, as UTF-8 text."},
    "stdinBase64": {
        "type": "string",
        "format": "byte",
        "description": "The program's stdin as bytes, base64 (not with `stdin`).",
    },
    "argv": {
        "type": "array",
        "maxItems": 1024,
        "items": {"type": "string"},
        "description": "The program's arguments after argv[0] (`./this.program`), no NUL.",
        "example": ["--verbose", "input.txt"],
    },
    "limits": _ref("RunLimits"),
}
SCHEMAS["RunRequest"] = {
    **SCHEMAS["CompileRequest"],
    "properties": {**SCHEMAS["CompileRequest"]["properties"], **_RUN_FIELDS},
}
SCHEMAS["RunSuccess"] = {
    **SCHEMAS["CompileSuccess"],
    "required": [*SCHEMAS["CompileSuccess"]["required"], "run"],
    "properties": {**SCHEMAS["CompileSuccess"]["properties"], "run": _ref("RunResult")},
}

RETRY_AFTER: Final[JsonObject] = {
    "description": "Seconds to wait before trying again.",
    "required": True,
    "schema": {"type": "integer", "minimum": 0},
}

RESPONSES: Final[JsonObject] = {
    "NotFound": _json(_ref("Error"), "Unknown route or artifact."),
    "MethodNotAllowed": {
        **_json(_ref("Error"), "Wrong method for an existing path (for example `GET /compile`)."),
        "headers": {
            "Allow": {
                "description": "The methods the path takes, comma-separated.",
                "required": True,
                "schema": {"type": "string"},
            }
        },
    },
    "RequestTimeout": _json(
        _ref("Error"),
        "The body did not fully arrive within `bodyTimeoutSeconds`; the connection is closed.",
    ),
    "PayloadTooLarge": _json(
        _ref("Error"),
        "The body is larger than `maxBodyBytes` (the connection is closed), or an archive "
        "unpacks past `maxProjectMB`, `maxFiles` or its compression-ratio bound.",
    ),
    "InternalError": _json(
        _ref("Error"),
        "The service failed (sandbox or cgroup trouble), never the submitted code.",
    ),
    "TooManyRequests": {
        **_json(
            _ref("Error"),
            "This client already has `maxJobsPerClient` compiles running or waiting, or has "
            "stored `artifactQuotaMB` of artifacts in its current window (then Retry-After is "
            "the time left in the window, and nothing was stored).",
        ),
        "headers": {"Retry-After": RETRY_AFTER},
    },
    "Busy": {
        **_json(
            _ref("Error"),
            "Queue full, no capacity within `queueTimeoutSeconds`, the requests in flight "
            "hold `maxQueuedProjectMB`, shutting down, or the shared store (Redis) "
            "unreachable.",
        ),
        "headers": {"Retry-After": RETRY_AFTER},
    },
}

# Every route can answer 405 for a method it does not take, and 500 if the service fails.
_COMMON: Final[JsonObject] = {
    "405": _error("MethodNotAllowed"),
    "500": _error("InternalError"),
}

_ARTIFACT_ID: Final[JsonObject] = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "The compile's id; anything but 32 hex characters is a 404.",
    "schema": {"type": "string"},
}


def _artifact(name: str, media_type: str) -> JsonObject:
    return {
        "get": {
            "operationId": "getArtifact" + name.rpartition(".")[2].title(),
            "summary": f"The compile's `{name}`",
            "description": (
                "Served when `enableStaticArtifacts` is on. Artifacts never change: "
                "`Cache-Control: public, max-age=31536000, immutable`, an `ETag` and "
                "`X-Content-Type-Options: nosniff`."
            ),
            "tags": ["artifacts"],
            "parameters": [_ARTIFACT_ID],
            "responses": {
                "200": {
                    "description": f"The `{name}` of a successful compile.",
                    "headers": {
                        "Cache-Control": {"schema": {"type": "string"}},
                        "ETag": {"schema": {"type": "string"}},
                    },
                    "content": {media_type: {"schema": {"type": "string", "format": "binary"}}},
                },
                "404": _error("NotFound"),
                "503": _error("Busy"),
                **_COMMON,
            },
        }
    }


PATHS: Final[JsonObject] = {
    "/": {
        "get": {
            "operationId": "getPlayground",
            "summary": "The web playground",
            "description": "Write C or C++, compile, run it in a sandboxed frame.",
            "tags": ["playground"],
            "responses": {"200": _text("The playground page.", "text/html"), **_COMMON},
        }
    },
    "/playground/{name}": {
        "get": {
            "operationId": "getPlaygroundAsset",
            "summary": "A static asset of the playground (script, style, runner frame)",
            "tags": ["playground"],
            "parameters": [
                {
                    "name": "name",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string"},
                    "example": "playground.js",
                }
            ],
            "responses": {
                "200": {
                    "description": "The asset.",
                    "content": {
                        media: {"schema": {"type": "string"}}
                        for media in ("text/javascript", "text/css", "text/html")
                    },
                },
                "404": _error("NotFound"),
                **_COMMON,
            },
        }
    },
    "/openapi.json": {
        "get": {
            "operationId": "getOpenApi",
            "summary": "This document",
            "tags": ["meta"],
            "responses": {
                "200": _json({"type": "object"}, "The OpenAPI document."),
                **_COMMON,
            },
        }
    },
    "/healthz": {
        "get": {
            "operationId": "getHealth",
            "summary": "Liveness",
            "tags": ["meta"],
            "responses": {
                "200": {
                    "description": "The server is up.",
                    "content": {"text/plain": {"schema": {"type": "string", "enum": ["ok"]}}},
                },
                **_COMMON,
            },
        }
    },
    "/readyz": {
        "get": {
            "operationId": "getReadiness",
            "summary": "Readiness, for a load balancer",
            "description": (
                "200 when this replica can take a compile now; 503 while shutting down, while "
                "the shared store (Redis) is unreachable, or while the queue is full."
            ),
            "tags": ["meta"],
            "responses": {
                "200": {
                    "description": "The replica takes compiles.",
                    "content": {"text/plain": {"schema": {"type": "string", "enum": ["ready"]}}},
                },
                "503": _error("Busy"),
                **_COMMON,
            },
        }
    },
    "/toolchain": {
        "get": {
            "operationId": "getToolchain",
            "summary": "The emscripten release and the installed ports, with their versions",
            "tags": ["meta"],
            "responses": {
                "200": _json(_ref("Toolchain"), "The toolchain."),
                **_COMMON,
            },
        }
    },
    "/metrics": {
        "get": {
            "operationId": "getMetrics",
            "summary": "Prometheus metrics (text format 0.0.4)",
            "tags": ["meta"],
            "responses": {"200": _text("Requests, compiles, queue, caps, cache."), **_COMMON},
        }
    },
    "/compile": {
        "post": {
            "operationId": "compile",
            "summary": "Compile C or C++ into an app.js + app.wasm pair",
            "description": (
                "Runs `emcc main.c <other sources> <defaultArgs> <args> -o app.js` (or `em++ "
                "main.cpp ...`) in a fresh job dir holding `files`, in the sandbox, under "
                "per-job caps. Three encodings, one answer: JSON (also when sent without a "
                "JSON content type, as the seed allowed), multipart/form-data, or the one "
                "source as a raw body (`text/*`, octet-stream, or any body with `type`/`args` "
                "in the query), or the project tree as an archive (tar, tar.gz, tar.bz2, "
                "tar.xz or zip by its content type; options in the query; one top-level "
                "directory holding everything is stripped; links, devices, absolute or `..` "
                "members refused). A project of several units compiles each as its own step, "
                "reusing objects of earlier builds. The body is at most `maxBodyBytes`; "
                "unknown fields are refused."
            ),
            "tags": ["compile"],
            "parameters": [
                {
                    "name": "type",
                    "in": "query",
                    "required": False,
                    "description": "With a raw body only: the language, as in the JSON body.",
                    "schema": {"type": "string"},
                },
                {
                    "name": "args",
                    "in": "query",
                    "required": False,
                    "description": "With a raw body only, repeated: " + _ARGS_DESCRIPTION,
                    "schema": {"type": "array", "items": {"type": "string"}},
                    "style": "form",
                    "explode": True,
                },
                {
                    "name": "sources",
                    "in": "query",
                    "required": False,
                    "description": "With an archive body only, repeated: as `sources` in JSON.",
                    "schema": {"type": "array", "items": {"type": "string"}},
                    "style": "form",
                    "explode": True,
                },
            ],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": _ref("CompileRequest")},
                    "multipart/form-data": {
                        "schema": _ref("CompileUpload"),
                        "encoding": {"args": {"style": "form", "explode": True}},
                    },
                    "text/plain": {
                        "schema": {
                            "type": "string",
                            "description": "The one source (`main.c` unless `type` says).",
                        }
                    },
                    **{
                        media_type: {
                            "schema": {
                                "type": "string",
                                "format": "binary",
                                "description": "The project tree, `main.c` or `main.cpp` at "
                                "its top.",
                            }
                        }
                        for media_type in (
                            "application/gzip",
                            "application/x-tar",
                            "application/zip",
                        )
                    },
                },
            },
            "responses": {
                "200": _json(_ref("CompileSuccess"), "Compiled."),
                "400": _json(
                    {"anyOf": [_ref("CompileFailure"), _ref("Error")]},
                    "A compile error (with `id`, `usage`, the compiler's output and "
                    "`diagnostics`), or a bad request: not JSON, nested too deeply, wrong types, "
                    "unknown field, lone surrogate, refused argument or file path (the error "
                    "names it).",
                ),
                "408": _error("RequestTimeout"),
                "413": _error("PayloadTooLarge"),
                "422": _json(_ref("LimitExceeded"), "A cap ended the job."),
                "429": _error("TooManyRequests"),
                "503": _error("Busy"),
                **_COMMON,
            },
        }
    },
    **{
        f"/artifacts/{{id}}/{name}": _artifact(name, media_type)
        for name, media_type in ARTIFACT_FILES.items()
    },
}


def _run_operation() -> JsonObject:
    """POST /run: /compile's body and answers, plus the run's fields and result."""
    compile_op = PATHS["/compile"]["post"]
    run_query = [
        {
            "name": name,
            "in": "query",
            "required": False,
            "description": f"With a raw or archive body: `{name}` as in the JSON body"
            + (" (a JSON object as text)." if name == "limits" else "."),
            "schema": schema,
            **({"style": "form", "explode": True} if name == "argv" else {}),
        }
        for name, schema in (
            ("stdin", {"type": "string"}),
            ("argv", {"type": "array", "items": {"type": "string"}}),
            ("limits", {"type": "string"}),
        )
    ]
    content = dict(compile_op["requestBody"]["content"])
    content["application/json"] = {"schema": _ref("RunRequest")}
    return {
        "post": {
            **compile_op,
            "operationId": "run",
            "summary": "Compile, then run the program once and answer what it printed",
            "description": (
                "Compiles as `POST /compile` does (the same encodings and refusals; the "
                "build adds `-sEXIT_RUNTIME=1`, `-sFORCE_FILESYSTEM=1` and exports "
                "`callMain`, and a cached build is reused), then runs `app.js` + `app.wasm` "
                "under node in a jail and a cgroup of its own: no network, no host files, "
                "nothing writable but a 16 MiB tmpfs, capped by `runMemoryMB`, "
                "`runCpuSeconds`, `runTimeoutSeconds`, `runPidsMax` and `runOutputBytes`. "
                "The run waits for the gate as a compile does. Runs are never cached. In "
                "multipart bodies `stdin` may be an uploaded file, `argv` repeated fields and "
                "`limits` a JSON text field. 501 when the server does not run programs."
            ),
            "tags": ["run"],
            "parameters": [*compile_op["parameters"], *run_query],
            "requestBody": {"required": True, "content": content},
            "responses": {
                **compile_op["responses"],
                "200": _json(
                    _ref("RunSuccess"),
                    "Compiled and ran; `run` says how the program ended (a crash or a cap "
                    "is still a 200: it is the program's result).",
                ),
                "501": _json(
                    _ref("Error"), "This server does not run programs (enableRun, nsjail)."
                ),
            },
        }
    }


PATHS["/run"] = _run_operation()

SCHEMAS["JobRequest"] = {
    **SCHEMAS["RunRequest"],
    "description": "The body of /compile (`kind` compile, the default) or of /run.",
    "properties": {
        **SCHEMAS["RunRequest"]["properties"],
        "kind": {"type": "string", "enum": ["compile", "run"], "default": "compile"},
    },
}
SCHEMAS["JobAccepted"] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["ok", "id", "kind", "state", "url", "events"],
    "properties": {
        "ok": {"type": "boolean", "enum": [True]},
        "id": _ref("JobId"),
        "kind": {"type": "string", "enum": ["compile", "run"]},
        "state": {"type": "string", "enum": ["queued"]},
        "url": {"type": "string", "description": "`/jobs/<id>`, also the `Location`."},
        "events": {"type": "string", "description": "`/jobs/<id>/events`."},
    },
}
SCHEMAS["Job"] = {
    "type": "object",
    "description": (
        "A job's state; once it ended, `status` and `result` are what the synchronous route "
        "(`/compile` or `/run`) would have answered (a cancelled job: 409, expired: 504, "
        "ended by a shutdown: 503)."
    ),
    "additionalProperties": False,
    "required": ["ok", "id", "kind", "state", "createdAt", "expiresAt"],
    "properties": {
        "ok": {"type": "boolean", "enum": [True]},
        "id": _ref("JobId"),
        "kind": {"type": "string", "enum": ["compile", "run"]},
        "state": {
            "type": "string",
            "enum": ["queued", "running", "done", "failed", "cancelled"],
            "description": "done: a 2xx result; failed: any other; cancelled: DELETE.",
        },
        "createdAt": {"type": "number", "description": "Unix time of the submission."},
        "expiresAt": {"type": "number", "description": "createdAt + jobTTLSeconds."},
        "status": {"type": "integer"},
        "result": {"type": "object"},
    },
}
_JOB_ID_PARAMETER: Final[JsonObject] = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "The job's id (from POST /jobs); anything else is a 404.",
    "schema": {"type": "string"},
}
_JOB_ANSWERS: Final[JsonObject] = {
    "200": _json(_ref("Job"), "The job."),
    "401": _json(_ref("Error"), "API tokens are on and the request has no valid one."),
    "404": _error("NotFound"),
    "503": _error("Busy"),
    **_COMMON,
}


def _jobs_operation() -> JsonObject:
    run_op = PATHS["/run"]["post"]
    content = dict(run_op["requestBody"]["content"])
    content["application/json"] = {"schema": _ref("JobRequest")}
    kind_query = {
        "name": "kind",
        "in": "query",
        "required": False,
        "description": "With a raw or archive body: `compile` (the default) or `run`.",
        "schema": {"type": "string", "enum": ["compile", "run"]},
    }
    return {
        "post": {
            **run_op,
            "operationId": "submitJob",
            "summary": "Submit a compile or a run that outlives this request",
            "description": (
                "Takes the body of `/compile`, or of `/run` with `kind: run` (a JSON field, "
                "a form field, or the query with a raw or archive body), checks it as those "
                "routes do, and answers 202 at once. The job runs on whether or not its "
                "submitter stays; it ends when done, on DELETE, after `jobTTLSeconds`, or at "
                "shutdown. Job state lives in the store: with `redisUrl` any replica answers "
                "for any job. With API tokens a job is visible to its token only. Jobs count "
                "against `maxJobsPerClient` as compiles do."
            ),
            "tags": ["jobs"],
            "parameters": [*run_op["parameters"], kind_query],
            "requestBody": {"required": True, "content": content},
            "responses": {
                **{k: v for k, v in run_op["responses"].items() if k not in ("200", "422")},
                "202": {
                    **_json(_ref("JobAccepted"), "Accepted; follow `events` or poll `url`."),
                    "headers": {
                        "Location": {"schema": {"type": "string"}, "required": True},
                    },
                },
                "401": _json(_ref("Error"), "API tokens are on and the request has no valid one."),
            },
        }
    }


PATHS["/jobs"] = _jobs_operation()
PATHS["/jobs/{id}"] = {
    "get": {
        "operationId": "getJob",
        "summary": "A job's state, and its result once it ended",
        "tags": ["jobs"],
        "parameters": [_JOB_ID_PARAMETER],
        "responses": _JOB_ANSWERS,
    },
    "delete": {
        "operationId": "cancelJob",
        "summary": "Cancel a job (its processes and job dir go as on a hang-up)",
        "description": (
            "Answers once the job has recorded its end (at most 15 s, else its state then): "
            "`cancelled`, or the state it had already ended in."
        ),
        "tags": ["jobs"],
        "parameters": [_JOB_ID_PARAMETER],
        "responses": _JOB_ANSWERS,
    },
}
PATHS["/jobs/{id}/events"] = {
    "get": {
        "operationId": "followJob",
        "summary": "The job's events as Server-Sent Events, up to its result",
        "description": (
            "Each event has an `id` (send `Last-Event-ID` to resume after it) and JSON "
            '`data`: `state` (`{"state": "queued"|"running"}`), `output` '
            '(`{"text"}`, the compiler\'s output a line at a time, as it prints it), '
            '`diagnostic` (a Diagnostic, as it is printed), then `result` (`{"state", '
            '"status", "body"}`), after which the stream ends. A stream opened later '
            "replays the events from the start. A comment line every 15 s keeps it alive."
        ),
        "tags": ["jobs"],
        "parameters": [_JOB_ID_PARAMETER],
        "responses": {
            "200": _text("The event stream.", "text/event-stream"),
            "401": _json(_ref("Error"), "API tokens are on and the request has no valid one."),
            "404": _error("NotFound"),
            "503": _error("Busy"),
            **_COMMON,
        },
    }
}

SPEC: Final[JsonObject] = {
    "openapi": "3.0.3",
    "info": {
        "title": "emcc_trio",
        "version": "0.1.0",
        "description": (
            "A sandboxed Emscripten compilation service. Every answer of the API is JSON "
            '`{"ok": ...}` except the text, HTML and artifact routes; errors are never an '
            "HTML page or a traceback. With `corsAllowedOrigins` set, pages from those "
            "origins may call it: a preflight (`OPTIONS` with `Origin` and "
            "`Access-Control-Request-Method`) is a bodiless 204 for an allowed origin and a "
            "JSON 403 for any other, and every answer to an allowed origin carries "
            "`Access-Control-Allow-Origin` (artifacts included, for streaming compilation)."
        ),
        "license": {"name": "MIT"},
    },
    "tags": [
        {"name": "compile"},
        {"name": "run"},
        {"name": "jobs"},
        {"name": "artifacts"},
        {"name": "playground"},
        {"name": "meta"},
    ],
    "paths": PATHS,
    "components": {"schemas": SCHEMAS, "responses": RESPONSES},
}


def spec_json() -> str:
    return json.dumps(SPEC, indent=2, sort_keys=False)


def register(app: QuartTrio) -> None:
    """Add `GET /openapi.json`."""
    body = spec_json()

    @app.get("/openapi.json")
    async def openapi_json() -> Response:
        response = Response(body, mimetype="application/json")
        response.headers["Cache-Control"] = "no-cache"
        return response
