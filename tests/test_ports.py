"""Emscripten ports, offline: every installed port compiles through a jailed, capped server
(whose jail has no network) and its artifact prints what it should under node; refusals name
what is installed; GET /toolchain lists the ports; the result cache keys cover the ports
build. Needs the ports install (`python -m emcc_trio.ports.install`, which scripts/bootstrap.sh
runs): without it these tests fail, they do not skip."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import attrs
import httpx
import pytest

from emcc_trio.compile.compiler import compile_env
from emcc_trio.isolation.cgroups import Caps
from emcc_trio.isolation.runner import Limits, run_job
from emcc_trio.isolation.sandbox import Sandbox
from emcc_trio.ports.catalog import BY_NAME, CATALOG
from emcc_trio.ports.install import DEFAULT_CACHE, inputs_digest
from emcc_trio.ports.installed import MANIFEST, InstalledPorts, load
from emcc_trio.testing.docs import compare_answer, examples, run_example
from emcc_trio.testing.harness import REPO, Server, server_config, start_server
from emcc_trio.testing.programs import run_artifact

PROGRAMS = Path(__file__).resolve().parent / "programs" / "ports"
RUN_MAIN = "-sEXPORTED_RUNTIME_METHODS=[callMain]"
FONT = "bdf_font.h"

# Each port's program, the flags it is built with and exactly what it prints.
CASES: dict[str, tuple[str, list[str], str]] = {
    "zlib": (
        "zlib.c",
        ["-sUSE_ZLIB=1"],
        "zlib 1.2.13\n"
        "deflated 43 -> fewer bytes\n"
        "inflated: the zlib port, the zlib port, the zlib port\n"
        "crc32 63f05cf4\n",
    ),
    "bzip2": (
        "bzip2.c",
        ["-sUSE_BZIP2=1"],
        "bzip2 1.0.8\n2000 bytes -> fewer than 200 -> 2000 bytes, same\n",
    ),
    "libpng": (
        "libpng.c",
        ["-sUSE_LIBPNG=1"],
        "libpng 1.6.39: encoded a PNG\ndecoded 3x2, pixel (2,1) = 200,55,7,255\n",
    ),
    "libjpeg": (
        "libjpeg.c",
        ["-sUSE_LIBJPEG=1"],
        "libjpeg 62 (turbo 2001005): a JPEG\n"
        "decoded 16x8, 3 components, pixel (5,3) = 200,100,50\n",
    ),
    "giflib": (
        "giflib.c",
        ["-sUSE_GIFLIB=1"],
        "giflib 5.2.1: a GIF, 4x2, 1 image(s)\npixel (2,1) = index 1 = 255,0,0\n",
    ),
    "ogg": (
        "ogg.c",
        ["-sUSE_OGG=1"],
        "page: serial 5eed, bos 1, eos 0\n"
        "packet 1: first packet\n"
        "page: serial 5eed, bos 0, eos 1\n"
        "packet 2: second packet\n"
        "2 page(s) written, 2 packet(s) read\n",
    ),
    "vorbis": (
        "vorbis.c",
        ["-sUSE_VORBIS=1"],
        "vorbis header: 2 channel(s), 44100 Hz\n"
        "comment: emcc-trio\n"
        "vendor: Xiph.Org libVorbis I 20200704 (Reducing Environment)\n",
    ),
    "mpg123": (
        "mpg123.c",
        ["-sUSE_MPG123=1"],
        "mpg123 API 47: 44100 Hz, 2 channel(s), 16-bit: yes\ndecoded 13824 bytes of PCM\n",
    ),
    "freetype": (
        "freetype.c",
        ["-sUSE_FREETYPE=1"],
        "FreeType 2.12.1, a bitmap font, 2 glyph(s)\n"
        "glyph A: 8x8\n"
        "...##...\n..#..#..\n.#....#.\n.#....#.\n.######.\n.#....#.\n.#....#.\n........\n",
    ),
    "harfbuzz": (
        "harfbuzz.c",
        ["-sUSE_HARFBUZZ=1"],
        "HarfBuzz 6.0.0: 3 glyph(s), direction ltr\n"
        "glyph 1 cluster 0 advance 8\nglyph 1 cluster 1 advance 8\nglyph 1 cluster 2 advance 8\n",
    ),
    "sdl2": (
        "sdl2.c",
        ["-sUSE_SDL=2"],
        "SDL 2.26.5, surface 4x3\npixel (2,1) = 200,100,50,255\npixel (0,0) = 10,20,30,255\n",
    ),
    "sdl2_image": (
        "sdl2_image.c",
        ["-sUSE_SDL_IMAGE=2", '-sSDL2_IMAGE_FORMATS=["jpg","png"]'],
        "SDL2_image 2.6.3: JPEG yes, PNG yes\n"
        "PNG (detected: 1): 2x2, pixel (1,1) = 9,8,7,255\n"
        "JPEG (detected: 1): 8x8, pixel (1,1) = 200,100,50,255\n",
    ),
    "sdl2_ttf": (
        "sdl2_ttf.c",
        ["-sUSE_SDL_TTF=2"],
        'SDL2_ttf 2.20.1: "AA" is 16x8, rendered 16x8\n',
    ),
    "sdl2_mixer": (
        "sdl2_mixer.c",
        ["-sUSE_SDL_MIXER=2", '-sSDL2_MIXER_FORMATS=["mp3","ogg"]'],
        "SDL2_mixer 2.6.2\nOgg Vorbis decoder: started\nMP3 decoder: started\n",
    ),
    "boost_headers": (
        "boost_headers.cpp",
        ["-sUSE_BOOST_HEADERS=1"],
        "Boost 1.81\n4 words, the last WASM\n",
    ),
}


@pytest.fixture(scope="module")
def ports() -> InstalledPorts:
    installed = load(DEFAULT_CACHE)
    assert installed is not None, (
        f"no ports in {DEFAULT_CACHE}: run `python -m emcc_trio.ports.install` (as root)"
    )
    assert installed.digest == inputs_digest(), "the ports install is stale: run it again"
    return installed


def jailed_workdir(prefix: str) -> Path:
    """nsjail's unprivileged outside user must traverse it (pytest's tmp dirs are 0700)."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    workdir.chmod(0o711)
    return workdir


@pytest.fixture(scope="module")
def jailed(ports: InstalledPorts) -> Iterator[Server]:
    workdir = jailed_workdir("emcc-trio-ports-")
    server = start_server(workdir, server_config(workdir, nsjailEnabled=True))
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def test_every_port_of_the_catalog_has_a_program() -> None:
    assert set(CASES) == {port.name for port in CATALOG}


@pytest.mark.parametrize("name", list(CASES))
def test_a_port_compiles_in_the_jail_and_its_program_prints_what_it_should(
    jailed: Server, tmp_path: Path, name: str
) -> None:
    source, flags, expected = CASES[name]
    language = "cpp" if source.endswith(".cpp") else "c"
    code = (PROGRAMS / source).read_text()
    # The font ports' programs include the font as a project file.
    files = {FONT: (PROGRAMS / FONT).read_text()} if f'#include "{FONT}"' in code else None
    response = jailed.compile(code, language, [*flags, RUN_MAIN], files=files)
    body = response.json()
    assert response.status_code == 200, body
    # Nothing was fetched: the jail has no network, and the cache already had it all.
    assert "retrieving port" not in body["output"]
    assert run_artifact(jailed, response, tmp_path) == expected
    jailed.assert_clean()


def test_an_lto_build_links_the_ports_lto_libraries(jailed: Server, tmp_path: Path) -> None:
    source, flags, expected = CASES["sdl2"]
    response = jailed.compile((PROGRAMS / source).read_text(), "c", [*flags, "-flto", RUN_MAIN])
    assert run_artifact(jailed, response, tmp_path) == expected


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["-sUSE_ICU=1"], "that port is not installed on this service (installed: -sUSE_ZLIB=1,"),
        (["-sUSE_ZLIB=2"], "USE_ZLIB takes 1"),
        (["-sUSE_SDL=1"], "USE_SDL takes 2"),
        (["-sSDL2_IMAGE_FORMATS=[gif]"], "SDL2_IMAGE_FORMATS takes one of the installed lists"),
        (["-pthread", "-sUSE_ZLIB=1"], "with -pthread: the ports are built without threads"),
    ],
)
def test_refusals_name_the_port_and_what_is_installed(
    jailed: Server, args: list[str], reason: str
) -> None:
    response = jailed.compile("int main(void) { return 0; }\n", "c", args)
    body = response.json()
    assert response.status_code == 400, body
    assert reason in body["error"]


def test_toolchain_lists_the_installed_ports_with_versions(
    jailed: Server, ports: InstalledPorts
) -> None:
    """As docs/reference/ports.md shows it, with curl."""
    page = (REPO / "docs" / "reference" / "ports.md").read_text()
    [command] = re.findall(r"```sh\n(curl [^\n]+/toolchain)\n```", page)
    body = json.loads(run_example(command, jailed.url))
    assert body["emscripten"] == "3.1.6"
    listed = {port["name"]: port for port in body["ports"]}
    assert list(listed) == [port.name for port in ports.ports]
    assert {name: port["version"] for name, port in listed.items()} == {
        "zlib": "1.2.13",
        "bzip2": "1.0.8",
        "libpng": "1.6.39",
        "libjpeg": "2.1.5",
        "giflib": "5.2.1",
        "ogg": "1.3.5",
        "vorbis": "1.3.7",
        "mpg123": "1.31.2",
        "freetype": "2.12.1",
        "harfbuzz": "6.0.0",
        "sdl2": "2.26.5",
        "sdl2_image": "2.6.3",
        "sdl2_ttf": "2.20.1",
        "sdl2_mixer": "2.6.2",
        "boost_headers": "1.81.0",
    }
    assert listed["sdl2"]["flag"] == "-sUSE_SDL=2"
    assert listed["zlib"]["source"] == "Debian zlib 1:1.2.13.dfsg-1"
    assert listed["sdl2_image"]["formats"] == [[], ["png"], ["jpg"], ["jpg", "png"]]


def test_the_result_cache_key_covers_the_ports_install(ports: InstalledPorts) -> None:
    """Two servers sharing one result cache and artifact store: one with the ports, one
    without. The same request is a miss on each the first time: the keys differ."""
    shared = jailed_workdir("emcc-trio-ports-shared-")
    servers = []
    try:
        for name, cache_dir in (("with", str(DEFAULT_CACHE)), ("without", "")):
            workdir = shared / name
            workdir.mkdir()
            config = server_config(
                workdir,
                cacheDir=str(shared / "cache"),
                artifactsDir=str(shared / "artifacts"),
                emscriptenCacheDir=cache_dir,
            )
            servers.append(start_server(workdir, config))
        hello = '#include <stdio.h>\nint main(void) { puts("hi"); return 0; }\n'
        first = [server.compile(hello, "c", ["-O1"]).json() for server in servers]
        again = [server.compile(hello, "c", ["-O1"]).json() for server in servers]
        assert [body["cached"] for body in first] == [False, False]
        assert [body["cached"] for body in again] == [True, True]
        assert first[0]["id"] != first[1]["id"]
        assert [body["id"] for body in again] == [body["id"] for body in first]
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(shared, ignore_errors=True)


def test_the_install_digest_changes_with_what_builds_the_ports() -> None:
    assert inputs_digest(CATALOG) == inputs_digest(CATALOG)
    assert inputs_digest(CATALOG) != inputs_digest(CATALOG[:-1])
    assert inputs_digest([BY_NAME["zlib"]]) != inputs_digest([BY_NAME["bzip2"]])


async def test_the_ports_cache_is_read_only_in_the_jail(
    ports: InstalledPorts, reachable_dir: Path, tmp_path: Path
) -> None:
    """Straight through the jail, past any policy: the cache is where emcc looks, with the
    ports in it, and nothing in the jail can write to it (nor reach the network)."""
    job_dir = reachable_dir / "job"
    job_dir.mkdir()
    sandbox = attrs.evolve(
        Sandbox.open("nsjail", "", tmp_path),
        toolchain_mounts=((ports.cache_dir, "/usr/share/emscripten/cache"),),
    )
    sandbox.prepare(job_dir)
    cache = "/usr/share/emscripten/cache"
    script = (
        f"test -f {cache}/{MANIFEST} && echo manifest;"
        f"test -f {cache}/sysroot/lib/wasm32-emscripten/libSDL2.a && echo libSDL2;"
        f"touch {cache}/probe 2>/dev/null || echo no write;"
        f"rm -f {cache}/{MANIFEST} 2>/dev/null; test -f {cache}/{MANIFEST} && echo still there"
    )
    result = await run_job(
        sandbox.wrap(["/bin/sh", "-c", script], job_dir, 30),
        job_id="ports-read-only",
        cwd=job_dir,
        env=compile_env(job_dir, "/usr/share/nodejs", {}),
        limits=Limits(30, 30, 65536, Caps(256 * 1024 * 1024, 1.0, 64)),
        driver=None,
    )
    assert result.output.split("\n") == ["manifest", "libSDL2", "no write", "still there", ""]
    assert not (ports.cache_dir / "probe").exists()


def test_the_doc_port_examples_work_verbatim(jailed: Server, tmp_path: Path) -> None:
    """The curl examples under "Ports" of the examples page give what it shows."""
    pairs = examples("tutorial/examples.md", "Ports")
    assert len(pairs) == 2
    for command, shown in pairs:
        answer = run_example(command, jailed.url)
        if compare_answer(shown, answer) is None:
            continue
        printed = run_artifact(jailed, httpx.Response(200, text=answer), tmp_path)
        assert printed == "zlib 1.2.13\n"
