"""The documentation's sources (pure: no server, no Sphinx).

The configuration reference in docs/ is generated from the `Config` fields, so every field must
carry a description; the README's links into docs/ must lead somewhere.
"""

from __future__ import annotations

import re
from pathlib import Path

import attrs
import pytest

from emcc_trio.config import Config

REPO = Path(__file__).resolve().parent.parent
# The seed's keys, in the seed's order: the configuration reference lists them first.
SEED_KEYS = (
    "workingDir",
    "addr",
    "baseDir",
    "jobsDir",
    "artifactsDir",
    "enableStaticArtifacts",
    "artifactTTLDays",
    "cleanupIntervalMins",
    "defaultArgs",
    "nsjailEnabled",
    "nsjailPath",
    "cgroupV2Root",
    "enableResourceGating",
    "jobMemoryEstimateMB",
)


@pytest.mark.parametrize("field", attrs.fields(Config), ids=lambda f: f.metadata["key"])
def test_every_config_key_has_a_description(field: attrs.Attribute[object]) -> None:
    doc = field.metadata.get("doc")
    assert isinstance(doc, str)
    assert doc.strip(), f"{field.metadata['key']} has an empty doc"
    assert doc == doc.strip()
    assert doc.endswith("."), f"{field.metadata['key']}: end the description with a full stop"
    assert "\n" not in doc


def test_the_seed_keys_come_first() -> None:
    keys = [field.metadata["key"] for field in attrs.fields(Config)]
    assert tuple(keys[: len(SEED_KEYS)]) == SEED_KEYS


def test_the_readme_links_lead_somewhere() -> None:
    """Every relative link of the README names a file of the repository (the docs site
    checks its own links when it is built)."""
    readme = (REPO / "README.md").read_text()
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme)
    local = [t for t in targets if "://" not in t and not t.startswith("mailto:")]
    assert any(t.startswith("docs/") for t in local)
    missing = [t for t in local if not (REPO / t).exists()]
    assert not missing
