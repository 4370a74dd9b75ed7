"""emscripten's embuilder, with its port recipes adapted to the sources Debian ships.

Runs under the system's python3 with emscripten's modules (standard library only), as emcc
does: `python3 embuild.py build [--lto] PORT...`, with `EM_CACHE` naming the cache to build
into and `EM_FROZEN_CACHE` empty. The ports' sources are already in place with their
`.emscripten_url` markers (ports.install), so nothing is downloaded.

`python3 embuild.py where PORT...` prints, as JSON, where each recipe looks for its source:
{PORT: [url, subdir]}: the marker must hold the url, the tree be `ports/PORT/subdir`. It
runs each recipe's `get` until it asks for its download, which it never gets.

The 3.1.6 recipes name older releases than Debian 12 has. Where a release changed what a
recipe must write or compile, ADAPTATIONS edits the recipe's text (each edit must apply) and
runs it again in its own module, before embuilder builds anything. Only the build reads
these edits: a compile finds the built library and headers in the cache and never runs a
recipe's build.
"""

import importlib
import json
import os
import sys
import tempfile
from typing import Any

EMSCRIPTEN = "/usr/share/emscripten"

# SDL 2.26 sources the 2.0.20 recipe does not list, that an emscripten build needs.
SDL2_NEW_SOURCES = (
    "SDL_guid.c SDL_list.c SDL_utils.c events/SDL_keysym_to_scancode.c "
    "events/SDL_scancode_tables.c joystick/controller_type.c stdlib/SDL_crc16.c"
)

# Variants embuilder does not name: SDL2_image for JPEG and PNG, SDL2_mixer for MP3 and Ogg.
VARIANTS = {
    "sdl2_image_jpg_png": ("sdl2_image", {"SDL2_IMAGE_FORMATS": ["jpg", "png"]}),
    "sdl2_mixer_mp3_ogg": ("sdl2_mixer", {"SDL2_MIXER_FORMATS": ["mp3", "ogg"]}),
}

# Put into the libjpeg recipe: libjpeg-turbo's CMake configures these headers from .in files.
TURBO_CONFIGURE = """
TURBO_NOT_LIBRARY = [
  'cdjpeg.c', 'jcstest.c', 'jccolext.c', 'jdcolext.c', 'jdcol565.c', 'jdmrgext.c',
  'jdmrg565.c', 'jstdhuff.c', 'jdatadst-tj.c', 'jdatasrc-tj.c', 'rdbmp.c', 'rdcolmap.c',
  'rdgif.c', 'rdppm.c', 'rdswitch.c', 'rdtarga.c', 'strtest.c', 'tjbench.c', 'tjexample.c',
  'tjunittest.c', 'tjutil.c', 'transupp.c', 'turbojpeg-jni.c', 'turbojpeg.c', 'wrbmp.c',
  'wrgif.c', 'wrppm.c', 'wrtarga.c',
]
TURBO_VALUES = {
  'JPEG_LIB_VERSION': '62', 'VERSION': '2.1.5', 'LIBJPEG_TURBO_VERSION_NUMBER': '2001005',
  'BITS_IN_JSAMPLE': '8', 'BUILD': 'Debian', 'INLINE': '__inline__ __attribute__((always_inline))',
  'THREAD_LOCAL': '', 'CMAKE_PROJECT_NAME': 'libjpeg-turbo', 'SIZE_T': '4',
  'COPYRIGHT_YEAR': '1991-2023',
}
TURBO_DEFINED = {
  'C_ARITH_CODING_SUPPORTED', 'D_ARITH_CODING_SUPPORTED', 'MEM_SRCDST_SUPPORTED',
  'HAVE_BUILTIN_CTZL', 'HAVE_STDDEF_H', 'HAVE_STDLIB_H', 'HAVE_UNSIGNED_CHAR',
  'HAVE_UNSIGNED_SHORT',
}


def _configure_turbo(dest_path):
  import re
  for name in ('jconfig.h', 'jconfigint.h', 'jversion.h'):
    text = Path(dest_path, name + '.in').read_text()
    for key, value in TURBO_VALUES.items():
      text = text.replace('@' + key + '@', value)
    text = re.sub(r'#cmakedefine (\\w+)(.*)', lambda m: ('#define ' + m[1] + (m[2] or ' 1'))
                  if m[1] in TURBO_DEFINED else '/* #undef ' + m[1] + ' */', text)
    Path(dest_path, name).write_text(text)
"""

MPG123_CONFIGURE = """
MPG123_VALUES = {
  'API_VERSION': '47', 'BUILD_NO_LARGENAME': '1', 'INCLUDE_STDLIB_H': '#include <stdlib.h>',
  'INCLUDE_SYS_TYPE_H': '#include <sys/types.h>', 'PACKAGE_VERSION': '1.31.2',
}


def _configure_mpg123(libmpg123_path):
  text = Path(libmpg123_path, 'mpg123.h.in').read_text()
  for key, value in MPG123_VALUES.items():
    text = text.replace('@' + key + '@', value)
  Path(libmpg123_path, 'mpg123.h').write_text(text)
"""

ADAPTATIONS = {
    # libogg 1.3.5's framing.c uses ogg_uint64_t, which 1.3.2's config_types.h lacked.
    "ogg": [
        (
            "typedef int64_t ogg_int64_t;\n",
            "typedef int64_t ogg_int64_t;\ntypedef uint64_t ogg_uint64_t;\n",
        )
    ],
    "sdl2": [
        (
            "    misc/dummy/SDL_sysurl.c'''",
            "    misc/dummy/SDL_sysurl.c " + SDL2_NEW_SOURCES + "'''",
        )
    ],
    # FreeType 2.12's default module list (ftmodule.h) has the SDF and SVG renderers, and its
    # base has four files more.
    "freetype": [
        (
            "            'src/winfonts/winfnt.c']",
            "            'src/winfonts/winfnt.c', 'src/sdf/sdf.c', 'src/svg/svg.c',"
            " 'src/base/ftcolor.c', 'src/base/fterrors.c', 'src/base/fthash.c',"
            " 'src/base/ftpsprop.c']",
        )
    ],
    # HarfBuzz 6 renamed its shapers' sources; its amalgamation, harfbuzz.cc, includes the
    # right ones for any release (the old list is left behind under another name).
    "harfbuzz": [
        (
            "srcs = '''\nhb-aat-layout.cc",
            "srcs = '''\nharfbuzz.cc\n'''.split()\n_3_2_srcs = '''\nhb-aat-layout.cc",
        )
    ],
    # Debian has libjpeg-turbo 2.1.5 (the libjpeg 6b API), not IJG's libjpeg 9c: its
    # headers are configured from its own templates, and its tools, tests, SIMD code and
    # the files its sources include are left out of the library.
    "libjpeg": [
        (
            "    Path(dest_path, 'jconfig.h').write_text(jconfig_h)\n",
            "    _configure_turbo(dest_path)\n",
        ),
        (
            "        'jpegtran.c', 'rdjpgcom.c', 'wrjpgcom.c',\n      ]",
            "        'jpegtran.c', 'rdjpgcom.c', 'wrjpgcom.c',\n      ] + TURBO_NOT_LIBRARY,"
            "\n      exclude_dirs=['simd', 'java', 'fuzz', 'md5', 'cmakescripts', 'doc', 'release',"
            " 'sharedlib', 'testimages', 'win']",
        ),
        (
            "def clear(ports, settings, shared):",
            TURBO_CONFIGURE + "\n\ndef clear(ports, settings, shared):",
        ),
    ],
    # mpg123 1.31's API header is configured from mpg123.h.in (the recipe writes 1.26's).
    "mpg123": [
        (
            "    Path(libmpg123_path, 'mpg123.h').write_text(mpg123_h)\n",
            "    _configure_mpg123(libmpg123_path)\n",
        ),
        (
            "def clear(ports, settings, shared):",
            MPG123_CONFIGURE + "\n\ndef clear(ports, settings, shared):",
        ),
    ],
    # SDL2_image 2.6 dropped the macOS-only IMG_ImageIO.m and added loaders of its own.
    "sdl2_image": [
        (
            "IMG_tif.c IMG_xcf.c IMG_xpm.c IMG_xv.c IMG_webp.c IMG_ImageIO.m",
            "IMG_tif.c IMG_xcf.c IMG_xpm.c IMG_xv.c IMG_webp.c IMG_avif.c IMG_jxl.c IMG_qoi.c "
            "IMG_stb.c IMG_svg.c",
        )
    ],
    # SDL2_mixer 2.6 keeps SDL_mixer.h in include/, and its codecs include each other.
    "sdl2_mixer": [
        (
            "      includes=[],",
            "      includes=[os.path.join(dest_path, 'include'), os.path.join(dest_path, 'src'),"
            " os.path.join(dest_path, 'src', 'codecs')],",
        ),
        (
            "ports.install_headers(source_path, pattern='SDL_*.h', target='SDL2')",
            "ports.install_headers(os.path.join(source_path, 'include'), pattern='SDL_*.h',"
            " target='SDL2')",
        ),
    ],
}


def _recipe(name: str) -> Any:  # emscripten's modules have no types
    return importlib.import_module("tools.ports." + name)


def adapt(name: str, edits: list[tuple[str, str]]) -> None:
    module = _recipe(name)
    path: str = module.__file__
    with open(path) as recipe:
        text = recipe.read()
    for old, new in edits:
        if text.count(old) != 1:
            raise SystemExit(f"embuild: the {name} recipe has changed: {old!r} is not in it once")
        text = text.replace(old, new)
    exec(compile(text, path, "exec"), module.__dict__)


class _FetchAskedError(Exception):
    pass


class _Where:
    """The `ports` object a recipe's `get` receives, as far as it goes before fetching."""

    def __init__(self, scratch: str) -> None:
        self.scratch = scratch

    def fetch_project(self, name: str, url: str, subdir: str, sha512hash: str = "") -> None:
        raise _FetchAskedError(url, subdir)

    def get_build_dir(self) -> str:
        return self.scratch  # SDL2's add-ons check that SDL2 was built here first

    def get_dir(self) -> str:
        return self.scratch


class _Defaults:
    def __getattr__(self, name: str) -> int:
        return 0


def where(names: list[str]) -> int:
    found = {}
    with tempfile.TemporaryDirectory() as scratch:
        os.mkdir(os.path.join(scratch, "sdl2"))
        for name in names:
            try:
                _recipe(name).get(_Where(scratch), _Defaults(), None)
            except _FetchAskedError as asked:
                found[name] = list(asked.args)
            else:
                raise SystemExit(f"embuild: the {name} recipe fetches nothing")
    print(json.dumps(found))
    return 0


def main(argv: list[str]) -> int:
    sys.path.insert(0, EMSCRIPTEN)
    if argv[:1] == ["where"]:
        return where(argv[1:])
    for name, edits in ADAPTATIONS.items():
        adapt(name, edits)
    sys.argv = ["embuilder", *argv]
    embuilder: Any = importlib.import_module("embuilder")
    for target, variant in VARIANTS.items():
        embuilder.PORT_VARIANTS[target] = variant
        embuilder.PORTS.append(target)
    status: int = embuilder.main()
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
