"""Sphinx configuration: Markdown sources (MyST), the furo theme, and the reference pages that
`_ext/emcc_trio_docs.py` generates from the code at every build."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "_ext"))

project = "emcc_trio"
author = "the emcc_trio authors"
extensions = ["myst_parser", "emcc_trio_docs"]
source_suffix = {".md": "markdown"}
root_doc = "index"
# _generated/ holds the generated reference tables: pages include them, they are not pages.
exclude_patterns = ["_build", "_generated", "_ext"]
nitpicky = True

myst_enable_extensions = ["colon_fence", "deflist"]
# `[text](page.md#a-heading)` links: every heading down to ### has an anchor.
myst_heading_anchors = 4

html_theme = "furo"
html_title = "emcc_trio"
html_copy_source = False
html_show_sourcelink = False
