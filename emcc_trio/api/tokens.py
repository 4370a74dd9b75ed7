"""Optional API tokens: a file of SHA-256 hashes, the lookup, and new tokens.

The file holds one `<sha256 hex of the token> [name]` per line (blank lines and `#` comments
are skipped), never a token itself. A presented token is hashed and compared with every
entry in constant time, so neither a match nor its position shows in the timing.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from pathlib import Path
from typing import Final

import attrs

TOKEN_PREFIX: Final = "et_"
_DIGEST = re.compile(r"^[0-9a-f]{64}\Z")
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}\Z")


class TokenFileError(Exception):
    """The token file cannot be used; the message names the line."""


def digest_of(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


@attrs.frozen
class TokenEntry:
    digest: bytes
    name: str


@attrs.frozen
class TokenBook:
    entries: tuple[TokenEntry, ...]

    def identify(self, token: str) -> str | None:
        """The name of `token`, or None when no entry matches."""
        presented = digest_of(token).encode()
        found = None
        for entry in self.entries:
            if hmac.compare_digest(entry.digest, presented):
                found = entry.name
        return found


def parse_tokens(text: str) -> TokenBook:
    """Read a token file's text; raise TokenFileError naming the first bad line."""
    entries: list[TokenEntry] = []
    names: set[str] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        digest, _, name = line.partition(" ")
        digest = digest.lower()
        name = name.strip() or f"token-{digest[:8]}"
        if not _DIGEST.match(digest):
            raise TokenFileError(f"line {number}: expected the SHA-256 hex digest of a token")
        if not _NAME.match(name):
            raise TokenFileError(f"line {number}: a name is 1-64 letters, digits or ._-")
        if name in names:
            raise TokenFileError(f"line {number}: the name {name!r} is used twice")
        names.add(name)
        entries.append(TokenEntry(digest.encode(), name))
    return TokenBook(tuple(entries))


def load_tokens(path: Path) -> TokenBook:
    """The token file at `path`; TokenFileError says why it cannot be used."""
    try:
        return parse_tokens(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TokenFileError(f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise TokenFileError(f"{path} is not UTF-8 text") from exc


def new_token(name: str) -> tuple[str, str]:
    """A new random token and the line for the token file that admits it."""
    if not _NAME.match(name):
        raise ValueError("a token name is 1-64 letters, digits or ._-")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return token, f"{digest_of(token)} {name}"


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token
