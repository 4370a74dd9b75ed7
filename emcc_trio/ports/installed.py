"""What a ports install left: an emscripten cache (the prebuilt sysroot plus the ports) and its
manifest, `emcc-trio-ports.json` at its top, which says which ports it holds and the digest of
everything that built them. The server reads it once at start (`load`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import attrs

from emcc_trio.ports.catalog import BY_NAME, Port

MANIFEST: Final = "emcc-trio-ports.json"
FORMAT: Final = 1


class ManifestError(Exception):
    """The manifest is unreadable or names what this version does not know."""


@attrs.frozen(kw_only=True)
class InstalledPorts:
    cache_dir: Path
    digest: str  # of the install's inputs: part of every cache key of its compiles
    ports: tuple[Port, ...]
    built_seconds: float
    size_bytes: int

    @property
    def by_setting(self) -> Mapping[str, Port]:
        return {port.setting: port for port in self.ports}

    def describe(self) -> list[dict[str, Any]]:
        """The ports as GET /toolchain lists them."""
        return [
            {
                "name": port.name,
                "flag": port.flag,
                "summary": port.summary,
                "version": port.release,
                "source": f"Debian {port.source.package} {port.source.debian_version}",
                "licence": port.licence,
                **(
                    {}
                    if port.formats is None
                    else {
                        "formatsSetting": port.formats.setting,
                        "formats": [list(choice) for choice in port.formats.installed],
                        "defaultFormats": list(port.formats.default),
                    }
                ),
            }
            for port in self.ports
        ]


def manifest_json(digest: str, names: list[str], built_seconds: float, size_bytes: int) -> str:
    return json.dumps(
        {
            "format": FORMAT,
            "digest": digest,
            "ports": names,
            "builtSeconds": round(built_seconds, 1),
            "sizeBytes": size_bytes,
        },
        indent=1,
    )


def parse(cache_dir: Path, text: str) -> InstalledPorts:
    """The manifest's content; ManifestError says what is wrong with it."""
    try:
        data = json.loads(text)
        if data["format"] != FORMAT:
            raise ManifestError(f"{MANIFEST}: format {data['format']!r}, not {FORMAT}")
        names = data["ports"]
        unknown = [name for name in names if name not in BY_NAME]
        if unknown:
            raise ManifestError(f"{MANIFEST}: unknown ports {unknown}")
        return InstalledPorts(
            cache_dir=cache_dir,
            digest=str(data["digest"]),
            ports=tuple(BY_NAME[name] for name in names),
            built_seconds=float(data["builtSeconds"]),
            size_bytes=int(data["sizeBytes"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ManifestError(f"{MANIFEST}: {exc!r}") from None


def load(cache_dir: Path) -> InstalledPorts | None:
    """The install in `cache_dir`, or None when there is none (no manifest)."""
    try:
        text = (cache_dir / MANIFEST).read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ManifestError(f"{cache_dir / MANIFEST}: {exc.strerror}") from None
    return parse(cache_dir, text)
