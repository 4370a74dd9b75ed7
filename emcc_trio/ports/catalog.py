"""The emscripten ports this service can install, as data: each one's flag, what it is, and the
Debian package its source comes from. Pure.

A port is one of emscripten 3.1.6's recipes (`tools/ports/<name>.py`), built by that recipe
(adapted to Debian's release where it must be: `embuild.py`) from Debian 12's source instead
of the zip the recipe would download. `targets` are embuilder's names for what is built:
a port with variants (SDL2_image's image formats, SDL2_mixer's codecs) installs some of them,
and a compile may ask only for those (`formats`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import attrs

from emcc_trio.ports.debsrc import DebianSource


@attrs.frozen(kw_only=True)
class Formats:
    """A list setting that picks a port's variant (`-sSDL2_IMAGE_FORMATS=["png"]`): the
    installed choices, each sorted as emscripten sorts it to name the library."""

    setting: str
    installed: tuple[tuple[str, ...], ...]
    default: tuple[str, ...]


@attrs.frozen(kw_only=True)
class Port:
    name: str  # emscripten's recipe and embuilder target
    setting: str  # the -s setting that asks for it
    value: str  # its value ("1", or "2" for the SDL2 family)
    summary: str
    licence: str
    source: DebianSource
    requires: tuple[str, ...] = ()  # ports the recipe builds first
    targets: tuple[str, ...] = ()  # embuilder targets when not just `name`
    formats: Formats | None = None

    @property
    def flag(self) -> str:
        return f"-s{self.setting}={self.value}"

    @property
    def release(self) -> str:
        """The upstream release, without Debian's repacking marks (`+dfsg`, `.dfsg`)."""
        return self.source.version.split("+")[0].removesuffix(".dfsg")

    @property
    def build_targets(self) -> tuple[str, ...]:
        return self.targets or (self.name,)


def _debian(package: str, version: str, debian_version: str) -> DebianSource:
    return DebianSource(package=package, version=version, debian_version=debian_version)


_SDL2_IMAGE_FORMATS: Final = Formats(
    setting="SDL2_IMAGE_FORMATS",
    installed=((), ("png",), ("jpg",), ("jpg", "png")),
    default=(),
)
_SDL2_MIXER_FORMATS: Final = Formats(
    setting="SDL2_MIXER_FORMATS",
    installed=((), ("ogg",), ("mp3",), ("mp3", "ogg")),
    default=("ogg",),
)

# In build order: a port comes after the ports it requires.
CATALOG: Final[tuple[Port, ...]] = (
    Port(
        name="zlib",
        setting="USE_ZLIB",
        value="1",
        summary="zlib: deflate and gzip compression",
        licence="zlib",
        source=_debian("zlib", "1.2.13.dfsg", "1:1.2.13.dfsg-1"),
    ),
    Port(
        name="bzip2",
        setting="USE_BZIP2",
        value="1",
        summary="bzip2: Burrows-Wheeler compression",
        licence="bzip2 (BSD-like)",
        source=_debian("bzip2", "1.0.8", "1.0.8-5"),
    ),
    Port(
        name="libpng",
        setting="USE_LIBPNG",
        value="1",
        summary="libpng: PNG images (needs zlib, which it brings)",
        licence="libpng",
        source=_debian("libpng1.6", "1.6.39", "1.6.39-2+deb12u5"),
        requires=("zlib",),
    ),
    Port(
        name="libjpeg",
        setting="USE_LIBJPEG",
        value="1",
        summary="libjpeg-turbo: JPEG images (the libjpeg 6b API, as libjpeg.h declares it)",
        licence="IJG, BSD-3-Clause, zlib",
        source=_debian("libjpeg-turbo", "2.1.5", "1:2.1.5-2"),
    ),
    Port(
        name="giflib",
        setting="USE_GIFLIB",
        value="1",
        summary="giflib: GIF images",
        licence="MIT",
        source=_debian("giflib", "5.2.1", "5.2.1-2.5+deb12u1"),
    ),
    Port(
        name="ogg",
        setting="USE_OGG",
        value="1",
        summary="libogg: the Ogg container",
        licence="BSD-3-Clause",
        source=_debian("libogg", "1.3.5", "1.3.5-3"),
    ),
    Port(
        name="vorbis",
        setting="USE_VORBIS",
        value="1",
        summary="libvorbis: Vorbis audio (libvorbis, libvorbisfile, libvorbisenc; needs ogg)",
        licence="BSD-3-Clause",
        source=_debian("libvorbis", "1.3.7", "1.3.7-1"),
        requires=("ogg",),
    ),
    Port(
        name="mpg123",
        setting="USE_MPG123",
        value="1",
        summary="libmpg123: MPEG audio (MP3) decoding",
        licence="LGPL-2.1",
        source=_debian("mpg123", "1.31.2", "1.31.2-1+deb12u1"),
    ),
    Port(
        name="freetype",
        setting="USE_FREETYPE",
        value="1",
        summary="FreeType: font rendering",
        licence="FreeType License",
        source=_debian("freetype", "2.12.1+dfsg", "2.12.1+dfsg-5+deb12u4"),
    ),
    Port(
        name="harfbuzz",
        setting="USE_HARFBUZZ",
        value="1",
        summary="HarfBuzz: text shaping (with FreeType, which it brings)",
        licence="MIT",
        source=_debian("harfbuzz", "6.0.0+dfsg", "6.0.0+dfsg-3"),
        requires=("freetype",),
    ),
    Port(
        name="sdl2",
        setting="USE_SDL",
        value="2",
        summary="SDL2: window, canvas drawing, input events, audio, timers",
        licence="zlib",
        source=_debian("libsdl2", "2.26.5+dfsg", "2.26.5+dfsg-1"),
    ),
    Port(
        name="sdl2_image",
        setting="USE_SDL_IMAGE",
        value="2",
        summary="SDL2_image: load images into SDL surfaces (the formats of SDL2_IMAGE_FORMATS)",
        licence="zlib",
        source=_debian("libsdl2-image", "2.6.3+dfsg", "2.6.3+dfsg-1"),
        requires=("sdl2", "libpng", "libjpeg"),
        targets=("sdl2_image", "sdl2_image_png", "sdl2_image_jpg", "sdl2_image_jpg_png"),
        formats=_SDL2_IMAGE_FORMATS,
    ),
    Port(
        name="sdl2_ttf",
        setting="USE_SDL_TTF",
        value="2",
        summary="SDL2_ttf: render text into SDL surfaces (FreeType and HarfBuzz)",
        licence="zlib",
        source=_debian("libsdl2-ttf", "2.20.1+dfsg", "2.20.1+dfsg-2"),
        requires=("sdl2", "harfbuzz"),
    ),
    Port(
        name="sdl2_mixer",
        setting="USE_SDL_MIXER",
        value="2",
        summary="SDL2_mixer: mix sounds and music (WAV; Ogg Vorbis, MP3 by SDL2_MIXER_FORMATS)",
        licence="zlib",
        source=_debian("libsdl2-mixer", "2.6.2+dfsg", "2.6.2+dfsg-2"),
        requires=("sdl2", "vorbis", "mpg123"),
        targets=("sdl2_mixer", "sdl2_mixer_none", "sdl2_mixer_mp3", "sdl2_mixer_mp3_ogg"),
        formats=_SDL2_MIXER_FORMATS,
    ),
    Port(
        name="boost_headers",
        setting="USE_BOOST_HEADERS",
        value="1",
        summary="Boost's header-only libraries",
        licence="BSL-1.0",
        source=DebianSource(
            package="libboost1.81-dev",
            version="1.81.0",
            debian_version="1.81.0-5+deb12u1",
            binary=True,
        ),
    ),
)

BY_NAME: Final[Mapping[str, Port]] = {port.name: port for port in CATALOG}
BY_SETTING: Final[Mapping[str, Port]] = {port.setting: port for port in CATALOG}
