"""The standard policy's flags in Chromium: in the playground, the last line without a newline
shows (-sEXIT_RUNTIME=1 and the runner's callMain), Embind binds C++ for JavaScript
(-lembind), and a -sSINGLE_FILE build runs with no app.wasm; on a cross-origin-isolated page
(COOP same-origin, COEP require-corp, as the argument policy reference says to serve it), a
-pthread build's threads run as workers loaded from the service. Threads need a browser here:
the policy blocks -sENVIRONMENT=node, and this emscripten's web build starts web workers."""

from __future__ import annotations

import pytest
import test_playground as playground
from playwright.sync_api import BrowserContext, Page
from playwright.sync_api import expect as pw_expect
from test_flags_compile import THREAD_ARGS

from emcc_trio.testing.harness import Server
from emcc_trio.testing.programs import program

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


ISOLATED = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
}


def host_page(artifact: str) -> str:
    """A page that loads the artifact by its URL and runs main once the thread pool is up."""
    return f"""<!doctype html><meta charset="utf-8"><title>threads</title>
<script src="{artifact}"></script>
<script>
window.lines = [];
createModule({{
  print: (text) => window.lines.push(text),
  printErr: (text) => window.lines.push("stderr: " + text),
}}).then((module) => {{ window.lines.push("main returned " + module._main(0, 0)); }},
         (error) => {{ window.lines.push("failed: " + error); }});
</script>"""


def test_threads_run_as_workers_on_an_isolated_page(page: Page, live: Server) -> None:
    response = live.compile(program("threads.c"), "c", THREAD_ARGS)
    body = response.json()
    assert response.status_code == 200, body
    assert body["worker"] == f"/artifacts/{body['id']}/app.worker.js"
    with live.client() as client:
        worker = client.get(body["worker"])
    assert worker.status_code == 200
    assert worker.headers["cross-origin-embedder-policy"] == "require-corp"
    assert worker.headers["cross-origin-resource-policy"] == "cross-origin"
    workers: list[str] = []
    page.on("worker", lambda started: workers.append(started.url))
    page.route(
        f"{live.url}/threads.html",
        lambda route: route.fulfill(
            body=host_page(body["js"]), content_type="text/html", headers=ISOLATED
        ),
    )
    page.goto(f"{live.url}/threads.html")
    page.wait_for_function(
        "window.lines.some((line) => /^(main returned|failed)/.test(line))",
        timeout=playground.RUN_MS,
    )
    assert page.evaluate("crossOriginIsolated") is True
    stdout = [line for line in page.evaluate("window.lines") if not line.startswith("stderr: ")]
    assert stdout == ["two threads counted 3000", "main returned 0"]
    # PTHREAD_POOL_SIZE=2: both workers started before main, from the artifact's own URL.
    assert workers == [f"{live.url}{body['worker']}"] * 2
