"""The argument policy with ports installed: each port's flag by its value, the format lists
by the installed variants, no port with -pthread; and what an install's manifest says."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emcc_trio.compile.policy import Policy, format_list, make_policy, standard_policy
from emcc_trio.errors import RequestError
from emcc_trio.ports.catalog import BY_NAME, CATALOG
from emcc_trio.ports.installed import ManifestError, manifest_json, parse

pytestmark = pytest.mark.unit

WITH_PORTS = standard_policy(1024, CATALOG)
ZLIB_ONLY = standard_policy(1024, [BY_NAME["zlib"]])


@pytest.mark.parametrize(
    "args",
    [
        ["-sUSE_ZLIB=1"],
        ["-sUSE_ZLIB"],
        ["-s", "USE_ZLIB=1"],
        ["-sUSE_SDL=2"],
        ["-sUSE_SDL_IMAGE=2", '-sSDL2_IMAGE_FORMATS=["png"]'],
        ["-sUSE_SDL_IMAGE=2", "-sSDL2_IMAGE_FORMATS=[png]"],
        ["-sUSE_SDL_IMAGE=2", "-sSDL2_IMAGE_FORMATS=[]"],
        ["-sUSE_SDL_IMAGE=2", "-sSDL2_IMAGE_FORMATS=png,jpg"],
        ["-sUSE_SDL_MIXER=2", "-sSDL2_MIXER_FORMATS=['ogg']"],
        ["-sUSE_BOOST_HEADERS=1", "-flto", "-O2"],
    ],
)
def test_installed_ports_are_allowed_with_their_usual_spellings(args: list[str]) -> None:
    assert WITH_PORTS.check(args) == tuple(args)


@pytest.mark.parametrize(
    ("policy", "args", "reason"),
    [
        (WITH_PORTS, ["-sUSE_ZLIB=2"], "USE_ZLIB takes 1"),
        (WITH_PORTS, ["-sUSE_SDL"], "USE_SDL takes 2"),
        (WITH_PORTS, ["-sSDL2_IMAGE_FORMATS=[png,gif]"], "takes one of the installed lists"),
        (WITH_PORTS, ["-sSDL2_MIXER_FORMATS=[mod]"], "[] or [ogg] or [mp3] or [mp3,ogg]"),
        (WITH_PORTS, ["-sUSE_ICU=1"], "that port is not installed on this service"),
        (ZLIB_ONLY, ["-sUSE_SDL=2"], "not installed on this service (installed: -sUSE_ZLIB=1)"),
        (WITH_PORTS, ["-pthread", "-sUSE_ZLIB=1"], "the ports are built without threads"),
        (WITH_PORTS, ["-s", "USE_SDL=2", "-pthread"], "'-s USE_SDL=2' is not allowed with"),
        # Without an install, every port keeps the reason it had.
        (standard_policy(), ["-sUSE_ZLIB=1"], "ports (-sUSE_*) are not installed"),
        # The seed policy is emcc-sandboxd's closed list: no ports, installed or not.
        (
            make_policy("seed", 1024, ports=CATALOG),
            ["-sUSE_ZLIB=1"],
            "only the listed -sNAME=VALUE settings are allowed",
        ),
    ],
)
def test_refusals_name_the_reason(policy: Policy, args: list[str], reason: str) -> None:
    with pytest.raises(RequestError) as refused:
        policy.check(args)
    assert reason in str(refused.value)


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("[]", ()),
        ("[png]", ("png",)),
        ('["png"]', ("png",)),
        ("['png','bmp']", ("bmp", "png")),
        ("png,bmp", ("bmp", "png")),
        ("[ png , bmp ]", ("bmp", "png")),
        ("[../x]", None),
        ("[png;rm]", None),
    ],
)
def test_format_lists_parse_as_emcc_reads_them(value: str, parsed: tuple[str, ...] | None) -> None:
    assert format_list(value) == parsed


@given(st.text(max_size=40))
def test_a_format_list_is_accepted_only_when_it_names_an_installed_variant(value: str) -> None:
    installed = {(), ("png",), ("jpg",), ("jpg", "png")}
    try:
        WITH_PORTS.check([f"-sSDL2_IMAGE_FORMATS={value}"])
    except RequestError:
        assert format_list(value) not in installed
    else:
        assert format_list(value) in installed


def test_a_manifest_names_the_ports_it_holds() -> None:
    text = manifest_json("d" * 64, ["zlib", "sdl2"], 12.5, 1000)
    ports = parse(Path("/cache"), text)
    assert [port.name for port in ports.ports] == ["zlib", "sdl2"]
    assert (ports.digest, ports.built_seconds, ports.size_bytes) == ("d" * 64, 12.5, 1000)
    assert ports.by_setting["USE_SDL"].flag == "-sUSE_SDL=2"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("not json", "emcc-trio-ports.json"),
        ('{"format": 2, "digest": "", "ports": []}', "format 2, not 1"),
        (manifest_json("d", ["zlib", "doom"], 1, 1), "unknown ports ['doom']"),
        ('{"format": 1}', "KeyError"),
    ],
)
def test_a_bad_manifest_says_what_is_wrong(text: str, reason: str) -> None:
    with pytest.raises(ManifestError) as bad:
        parse(Path("/cache"), text)
    assert reason in str(bad.value)
