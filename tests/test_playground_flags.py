"""The playground with the standard policy's flags, compiled and run in Chromium: the last line
without a newline shows (-sEXIT_RUNTIME=1 and the runner's callMain), Embind binds C++ for
JavaScript (-lembind), and a -sSINGLE_FILE build runs with no app.wasm."""

from __future__ import annotations

import pytest
import test_playground as playground
from conftest import Server
from playwright.sync_api import BrowserContext, Page
from playwright.sync_api import expect as pw_expect

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


def test_a_single_file_build_runs_and_so_does_its_share_link(
    page: Page, context: BrowserContext, live: Server
) -> None:
    """-sSINGLE_FILE: the answer has no wasm URL and the runner gets none; the share link,
    which cannot know, finds no app.wasm and runs app.js alone."""
    playground.open_playground(page, live)
    playground.choose_example(page, "hello C")
    page.fill("#args", "-O1 -sSINGLE_FILE=1")
    wasm_requests: list[str] = []
    page.on("request", lambda r: wasm_requests.append(r.url) if r.url.endswith(".wasm") else None)
    playground.compile_and_wait(page)
    assert playground.run_and_wait(page) == ("hello from C\n", "", 0)
    assert wasm_requests == []
    link = page.get_attribute("#share-link", "href")
    assert link is not None
    other = context.new_page()
    other.goto(link)
    exit_code = other.locator("#exit-code")
    pw_expect(exit_code).to_be_visible(timeout=playground.RUN_MS)
    assert other.inner_text("#stdout") == "hello from C\n"
    assert exit_code.get_attribute("data-code") == "0"
    other.close()
