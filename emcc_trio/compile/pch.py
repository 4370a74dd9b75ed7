"""Precompiled standard headers: a source that begins with nothing but `#include <...>`
lines compiles with a PCH of exactly those headers, built by exactly the clang command emcc
runs for it (language, `-std`, `-D`/`-U`, `-f` flags, optimisation, target: clang refuses a
PCH built otherwise), and never from a request's files. The launcher finds the preamble and
leaves a miss; `parse` is the service's own check of that material before it builds anything
(the job dir is the job's to write); `header_text` is the header the PCH is built from. A
compile with a PCH that fails or prints anything runs again without it (the launcher), so
diagnostics are clang's own. See compile.memos."""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Final

import attrs

from emcc_trio.compile.jailside.emcc_launch import INCLUDE, NO_PCH, PCH_TAG

TAG: Final = PCH_TAG
MAX_HEADERS: Final = 64
LANGUAGES: Final = frozenset({"c", "c++"})


@attrs.frozen
class PchRequest:
    template: tuple[str, ...]  # the clang command without the source and the output
    headers: tuple[str, ...]
    language: str


def header_name(digest: str) -> str:
    return "h-" + digest


def pch_name(digest: str) -> str:
    return "p-" + digest


def header_text(headers: Collection[str]) -> str:
    return "".join(f"#include <{header}>\n" for header in headers)


def parse(material: bytes, compilers: Collection[str], cwd: str) -> PchRequest | None:
    """The PCH a miss asks for, if it is one the service builds: one of the toolchain's own
    clang programs, arguments that resolve headers as the clean jail does, standard-style
    header names, the jail's working dir; else None."""
    tag, _, body = material.partition(b"\0")
    if tag != TAG:
        return None
    try:
        fields = json.loads(body)
    except ValueError:
        return None
    if not isinstance(fields, dict) or fields.get("cwd") != cwd:
        return None
    template, headers, language = (
        fields.get("template"),
        fields.get("headers"),
        fields.get("language"),
    )
    if language not in LANGUAGES or not isinstance(template, list) or not isinstance(headers, list):
        return None
    if not template or not all(isinstance(arg, str) for arg in [*template, *headers]):
        return None
    if template[0] not in compilers or any(NO_PCH.match(arg) for arg in template[1:]):
        return None
    if not 0 < len(headers) <= MAX_HEADERS:
        return None
    for header in headers:
        if not INCLUDE.fullmatch(f"#include <{header}>") or ".." in header.split("/"):
            return None
    return PchRequest(tuple(template), tuple(headers), str(language))
