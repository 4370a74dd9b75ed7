"""A stand-in for the memos' filler (compile.memos.Filler) where a test computes the glue
entries itself and nothing else may be asked for."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import attrs


@attrs.frozen
class GlueOnly:
    glue: Callable[[bytes], Awaitable[bytes | None]]

    async def fill_glue(self, material: bytes) -> bytes | None:
        return await self.glue(material)

    async def fill_acorn(self, material: bytes) -> bytes | None:
        raise AssertionError("no JS optimizer entry was asked for")

    async def fill_pch(self, material: bytes, digest: str, header: str) -> bytes | None:
        raise AssertionError("no PCH was asked for")
