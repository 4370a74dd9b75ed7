"""-pthread in Chromium: the artifact is app.js, app.wasm and app.worker.js, and on a
cross-origin-isolated page (COOP same-origin, COEP require-corp, as the README says to serve
it) its threads run as workers loaded from the service. Threads need a browser here: the
policy blocks -sENVIRONMENT=node, and this emscripten's web build starts web workers."""

from __future__ import annotations

import pytest
import test_playground as playground
from conftest import Server, program
from playwright.sync_api import Page
from test_flags_compile import THREAD_ARGS

pytestmark = pytest.mark.browser

playwright = playground.playwright
context = playground.context
problems = playground.problems
page = playground.page
live = playground.live

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
