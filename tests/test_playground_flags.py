"""The playground's examples that need the standard policy, compiled and run in Chromium: the
last line without a newline shows (-sEXIT_RUNTIME=1 and the runner's callMain), and Embind
binds C++ for JavaScript (-lembind)."""

from __future__ import annotations

import pytest
import test_playground as playground
from conftest import Server
from playwright.sync_api import Page

pytestmark = pytest.mark.browser

# pytest finds fixtures among a module's names: the browser ones are test_playground's.
playwright = playground.playwright
context = playground.context
problems = playground.problems
page = playground.page
live = playground.live


@pytest.mark.parametrize(
    ("example", "printed"),
    [
        (
            "a last line without a newline (EXIT_RUNTIME)",
            "a whole line\nthe last line, without a newline\n",
        ),
        ("Embind: C++ called from JavaScript", "hello, Embind\n"),
    ],
)
def test_examples_that_need_the_standard_policy(
    page: Page, live: Server, example: str, printed: str
) -> None:
    playground.open_playground(page, live)
    playground.choose_example(page, example)
    playground.compile_and_wait(page)
    assert playground.run_and_wait(page) == (printed, "", 0)
