"""CORS (`corsAllowedOrigins`): the headers over HTTP, and in Debian's Chromium a page from an
allowed second origin compiles, fetches and instantiates an artifact while a page from another
origin is refused by the browser itself. The Chromium test runs in `nox -s browser`."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, sync_playwright

from emcc_trio.testing.harness import MakeServer, Server, eventually, server_config, start_server
from emcc_trio.testing.programs import HELLO_C

ALLOWED = "http://allowed.example:8443"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"]
COMPILE_MS = 120_000


def test_without_the_key_nothing_changes(server: Server) -> None:
    with server.client() as client:
        preflight = client.options(
            "/compile",
            headers={"Origin": ALLOWED, "Access-Control-Request-Method": "POST"},
        )
        health = client.get("/healthz", headers={"Origin": ALLOWED})
    assert not [h for h in preflight.headers if h.lower().startswith("access-control-")]
    assert "access-control-allow-origin" not in health.headers


def test_allowed_origin_gets_a_bodiless_preflight_and_headers_on_every_answer(
    make_server: MakeServer,
) -> None:
    server = make_server(corsAllowedOrigins=[ALLOWED])
    with server.client() as client:
        preflight = client.options(
            "/compile",
            headers={
                "Origin": ALLOWED,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type, authorization",
            },
        )
        compiled = client.post("/compile", json={"code": HELLO_C}, headers={"Origin": ALLOWED})
        wasm = client.get(compiled.json()["wasm"], headers={"Origin": ALLOWED})
        refused = client.post("/compile", json={"code": ""}, headers={"Origin": ALLOWED})
        other = client.get(compiled.json()["wasm"], headers={"Origin": "http://evil.example"})
        other_preflight = client.options(
            "/compile",
            headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
        )
    assert preflight.status_code == 204
    assert preflight.content == b""
    assert "content-type" not in preflight.headers
    assert preflight.headers["access-control-allow-origin"] == ALLOWED
    assert preflight.headers["access-control-allow-methods"] == "GET, POST, OPTIONS"
    assert preflight.headers["access-control-allow-headers"] == "Content-Type, Authorization"
    assert "Origin" in preflight.headers["vary"]
    for answer in (compiled, wasm, refused):
        assert answer.headers["access-control-allow-origin"] == ALLOWED
        assert "Origin" in answer.headers.get_list("vary")
    assert wasm.headers["content-type"] == "application/wasm"
    assert wasm.content.startswith(b"\0asm")
    assert refused.json() == {"ok": False, "error": '"code" must not be empty'}
    assert "access-control-allow-origin" not in other.headers
    assert other.status_code == 200  # the bytes are public by URL; only browsers read CORS
    assert other_preflight.status_code == 403
    assert other_preflight.json() == {
        "ok": False,
        "error": "origin http://evil.example is not in corsAllowedOrigins",
    }
    assert "access-control-allow-origin" not in other_preflight.headers


def test_a_star_allows_any_origin_without_credentials(make_server: MakeServer) -> None:
    server = make_server(corsAllowedOrigins=["*"])
    with server.client() as client:
        answer = client.get("/healthz", headers={"Origin": "http://anywhere.example"})
    assert answer.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in answer.headers


class PageServer:
    """A static file server on its own port: its own origin for the browser."""

    def __init__(self, directory: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1"],
            cwd=directory,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # "Serving HTTP on 127.0.0.1 port N (...) ..."
        match = re.search(r"port (\d+)", line)
        assert match, line
        self.origin = f"http://127.0.0.1:{match[1]}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def page_servers(tmp_path: Path) -> Iterator[tuple[PageServer, PageServer]]:
    pages = tmp_path / "pages"
    pages.mkdir()
    (pages / "index.html").write_text("<!doctype html><title>a client page</title>\n")
    allowed, other = PageServer(pages), PageServer(pages)
    yield allowed, other
    allowed.stop()
    other.stop()


@pytest.fixture
def browser_context(tmp_path: Path) -> Iterator[BrowserContext]:
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install chromium"
    with sync_playwright() as driver:
        context = driver.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_FLAGS,
        )
        yield context
        context.close()


# Runs in the page: compile, stream-compile the wasm, then load app.js and call main.
COMPILE_AND_RUN = """async ({server, code}) => {
  const answer = await fetch(server + "/compile", {
    method: "POST",
    headers: {"Content-Type": "application/json"},
    body: JSON.stringify({code, args: ["-sEXPORTED_RUNTIME_METHODS=[callMain]"]}),
  });
  const body = await answer.json();
  const module = await WebAssembly.compileStreaming(fetch(server + body.wasm));
  const imports = WebAssembly.Module.imports(module).length;
  await new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = server + body.js;
    script.onload = resolve;
    script.onerror = reject;
    document.head.append(script);
  });
  const printed = [];
  const instance = await Module({print: (text) => printed.push(text)});
  instance.callMain([]);
  return {status: answer.status, imports, printed};
}"""

# Runs in the page: what the browser lets a page from an origin not on the list do.
TRY_FROM_OTHER_ORIGIN = """async ({server, wasm}) => {
  const outcome = async (promise) => {
    try { await promise; return "allowed"; } catch (error) { return error.name; }
  };
  return {
    compile: await outcome(fetch(server + "/compile", {
      method: "POST",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify({code: "int main(void) { return 0; }"}),
    })),
    wasm: await outcome(fetch(server + wasm)),
  };
}"""


@pytest.mark.browser
def test_chromium_page_from_an_allowed_origin_builds_and_runs_another_is_refused(
    page_servers: tuple[PageServer, PageServer], browser_context: BrowserContext, tmp_path: Path
) -> None:
    allowed, other = page_servers
    workdir = tmp_path / "server"
    server = start_server(workdir, server_config(workdir, corsAllowedOrigins=[allowed.origin]))
    try:
        page = browser_context.new_page()
        console: list[str] = []
        page.on("console", lambda message: console.append(message.text))
        page.goto(allowed.origin + "/index.html")
        result: dict[str, Any] = page.evaluate(
            COMPILE_AND_RUN, {"server": server.url, "code": HELLO_C}
        )
        assert result["status"] == 200
        assert result["imports"] > 0
        assert result["printed"] == ["hello from C"]

        with server.client() as client:
            wasm = client.post("/compile", json={"code": HELLO_C}).json()["wasm"]
        page.goto(other.origin + "/index.html")
        refused = page.evaluate(TRY_FROM_OTHER_ORIGIN, {"server": server.url, "wasm": wasm})
        assert refused == {"compile": "TypeError", "wasm": "TypeError"}
        # The refused preflight kept that compile from ever reaching the server.
        preflights = eventually(
            lambda: (
                [e for e in server.log_events() if e.get("method") == "OPTIONS"]
                if any(e.get("status") == 403 for e in server.log_events())
                else []
            ),
            10,
            "the refused preflight in the access log",
        )
        assert [(e["path"], e["status"]) for e in preflights] == [
            ("/compile", 204),  # the allowed page's
            ("/compile", 403),
        ]
        posts = [e for e in server.log_events() if e.get("method") == "POST"]
        assert len(posts) == 2  # the allowed page's compile and this test's own
    finally:
        server.stop()
