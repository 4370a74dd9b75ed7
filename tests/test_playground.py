"""The playground at `GET /` in Debian's Chromium, driven by Playwright, against a real server
and the real emcc: type, compile, run, read the output; diagnostics marked at their lines;
"Run on server" against a jailed server.

Needs /usr/bin/chromium (apt-get install chromium) and the `playwright` package; Playwright's
own browser download is not used. Run by `nox -s browser`. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import (
    BrowserContext,
    ConsoleMessage,
    Frame,
    Page,
    Playwright,
    sync_playwright,
)
from playwright.sync_api import expect as pw_expect

from emcc_trio.api.playground import ASSET_TYPES
from emcc_trio.api.tokens import new_token
from emcc_trio.isolation.leftovers import descendants
from emcc_trio.testing.harness import REPO, Server, eventually, server_config, start_server

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = REPO / "test-artifacts"
PLAYGROUND = REPO / "emcc_trio" / "api" / "playground"
# A compile under real cgroups takes about a second; the first -O2 link takes several.
COMPILE_MS = 120_000
RUN_MS = 30_000

TYPED_PROGRAM = [
    "#include <stdio.h>",
    'int main(void) { printf("typed %d\\n", 6 * 7); return 0; }',
]


def _stop(server: Server) -> None:
    if server.proc.poll() is None:
        server.stop()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the module: the tests only read what their own compiles produce."""
    workdir = tmp_path_factory.mktemp("playground-server")
    server = start_server(workdir, server_config(workdir))
    yield server
    _stop(server)


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install chromium"
    with sync_playwright() as driver:
        yield driver


@pytest.fixture
def context(playwright: Playwright, tmp_path: Path) -> Iterator[BrowserContext]:
    context = playwright.chromium.launch_persistent_context(
        str(tmp_path / "chromium-profile"),  # a fresh --user-data-dir per test
        executable_path=CHROMIUM,
        headless=True,
        args=CHROMIUM_FLAGS,
        viewport={"width": 1400, "height": 860},
    )
    yield context
    context.close()


# The page answers the API's 4xx itself; Chromium still logs each one.
EXPECTED_CONSOLE = re.compile(r"Failed to load resource: the server responded with a status of 4")


@pytest.fixture
def problems() -> list[str]:
    """Script errors and console errors of the page (CSP violations included)."""
    return []


@pytest.fixture
def page(context: BrowserContext, problems: list[str]) -> Iterator[Page]:
    """A page that fails the test on a script error or an unexpected console error."""
    page = context.pages[0] if context.pages else context.new_page()

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error" and not EXPECTED_CONSOLE.match(message.text):
            problems.append(f"console: {message.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    yield page
    assert problems == []


def screenshot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / f"playground-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def open_playground(page: Page, server: Server, fragment: str = "") -> None:
    page.goto(server.url + "/" + fragment)
    pw_expect(page.locator(".cm-content")).to_be_visible()


def choose_example(page: Page, name: str) -> None:
    page.select_option("#example", label=name)


def compile_and_wait(page: Page, state: str = "ok") -> None:
    page.click("#compile")
    status = page.locator("#status")
    pw_expect(status).not_to_have_attribute("data-state", "busy", timeout=COMPILE_MS)
    pw_expect(status).to_have_attribute("data-state", state)


def run_and_wait(page: Page) -> tuple[str, str, int]:
    page.click("#run")
    exit_code = page.locator("#exit-code")
    pw_expect(exit_code).to_be_visible(timeout=RUN_MS)
    code = exit_code.get_attribute("data-code")
    assert code is not None
    return page.inner_text("#stdout"), page.inner_text("#stderr"), int(code)


def set_code(page: Page, code: str) -> None:
    page.evaluate("code => window.playground.editor.setCode(code)", code)


def editor_code(page: Page) -> str:
    return str(page.evaluate("window.playground.editor.getCode()"))


def test_type_compile_run(page: Page, live: Server) -> None:
    open_playground(page, live)
    page.select_option("#language", "c")
    page.click(".cm-content")
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    for number, line in enumerate(TYPED_PROGRAM):
        if number:
            page.keyboard.press("Enter")
        page.keyboard.type(line)
    # CodeMirror closes brackets and quotes as they are typed: typing the closer steps over.
    assert editor_code(page) == "\n".join(TYPED_PROGRAM)
    compile_and_wait(page)
    pw_expect(page.locator("#usage")).to_be_visible()
    assert re.fullmatch(r"\d+\.\d{3} s", page.inner_text("#usage-duration"))
    assert re.fullmatch(r"\d+\.\d MiB", page.inner_text("#usage-memory"))
    stdout, stderr, code = run_and_wait(page)
    assert (stdout, stderr, code) == ("typed 42\n", "", 0)
    pw_expect(page.locator("#status")).to_have_attribute("data-state", "ok")
    screenshot(page, "run")


def test_stdout_stderr_and_exit_code_apart(page: Page, live: Server) -> None:
    open_playground(page, live)
    choose_example(page, "stdout, stderr and an exit code")
    compile_and_wait(page)
    assert run_and_wait(page) == ("to stdout\n", "to stderr\n", 3)


def doc_compile_bodies() -> list[dict[str, Any]]:
    """The JSON bodies of the examples page's successful `POST /compile` examples, in order."""
    page = (REPO / "docs" / "tutorial" / "examples.md").read_text()
    section = page.split("## Compiling C and C++", 1)[1].split("\n## ", 1)[0]
    bodies = [json.loads(body) for body in re.findall(r"/compile .*-d '(\{.*\})'\n", section)]
    return [body for body in bodies if "missing" not in body["code"]][:3]


@pytest.mark.parametrize(
    ("index", "example", "printed"),
    [
        (0, "hello C", "hello from C\n"),
        (1, "hello C++", "hello from C++\n"),
        (2, "sqrt (-O2, callMain)", "sqrt(2) = 1.414\n"),
    ],
)
def test_doc_examples(page: Page, live: Server, index: int, example: str, printed: str) -> None:
    """The menu's first three examples are the examples page's, verbatim; each compiles and
    runs."""
    doc = doc_compile_bodies()[index]
    open_playground(page, live)
    choose_example(page, example)
    assert editor_code(page) == doc["code"]
    assert page.input_value("#language") == doc.get("type", "c")
    assert page.input_value("#args") == " ".join(doc.get("args", []))
    compile_and_wait(page)
    assert run_and_wait(page) == (printed, "", 0)


def test_compile_error_is_marked_at_its_line(page: Page, live: Server) -> None:
    open_playground(page, live)
    choose_example(page, "a compile error")
    code_lines = editor_code(page).split("\n")
    assert code_lines[4].strip() == "return missing + x;"
    compile_and_wait(page, "error")
    diagnostic = page.locator("#diagnostics .diagnostic.error")
    pw_expect(diagnostic).to_have_count(1)
    assert diagnostic.get_attribute("data-line") == "5"
    assert "use of undeclared identifier 'missing'" in diagnostic.inner_text()
    # The editor marks exactly that line, in its state and on screen.
    assert page.evaluate("window.playground.editor.markedLines()") == [[5, "error"]]
    marked = page.locator(".cm-line.cm-errorLine")
    pw_expect(marked).to_have_count(1)
    assert marked.inner_text().strip() == "return missing + x;"
    pw_expect(page.locator(".cm-markGutter-error")).to_have_count(1)
    # Clicking the diagnostic puts the cursor on line 5.
    page.evaluate("window.playground.editor.goTo(1)")
    diagnostic.click()
    assert page.evaluate("window.playground.editor.cursorLine()") == 5
    pw_expect(page.locator("#run")).to_be_disabled()
    pw_expect(page.locator("#compiler-output")).to_contain_text("main.c:5:")
    screenshot(page, "compile-error")
    # Fixing the code and compiling again clears the marks.
    set_code(page, "int main(void) {\n    return 0;\n}\n")
    compile_and_wait(page)
    pw_expect(page.locator(".cm-errorLine")).to_have_count(0)
    pw_expect(page.locator("#diagnostics .diagnostic")).to_have_count(0)


NEVER_ENDS = """#include <stdio.h>
int main(void) {
    for (volatile unsigned long i = 0;; ++i) {
    }
}
"""
RUN_TIMEOUT_S = 20  # RUN_TIMEOUT_MS in playground.js
SPIN_SAMPLES = 10  # a renderer runnable at every one of these samples is running the program
SPIN_SAMPLE_S = 0.1


def _renderers() -> dict[int, tuple[str, int]]:
    """pid -> (scheduler state, user + system CPU ticks) of the Chromium renderers below this
    test process."""
    found = {}
    for pid in descendants(os.getpid()):
        try:
            if b"--type=renderer" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                continue
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        found[pid] = (fields[0], int(fields[11]) + int(fields[12]))
    return found


def spinning_renderers() -> set[int]:
    """Renderers that never waited during SPIN_SAMPLES samples and used CPU meanwhile. Not
    "used more than X of a CPU": on a busy machine a spinning process gets less, but it is
    always runnable (R), while an idle renderer sleeps."""
    first = _renderers()
    spinning = set(first)
    for _ in range(SPIN_SAMPLES):
        time.sleep(SPIN_SAMPLE_S)
        now = _renderers()
        spinning &= {pid for pid, (state, _) in now.items() if state == "R"}
    last = _renderers()
    return {pid for pid in spinning if pid in last and last[pid][1] > first[pid][1]}


def test_a_program_that_never_ends_is_stopped(page: Page, live: Server) -> None:
    """The program spins in its sandboxed frame's own process while the page stays live: the
    run timeout fires, Stop works, the spinning process goes away, and the page compiles and
    runs afterwards."""
    open_playground(page, live)
    set_code(page, NEVER_ENDS)
    compile_and_wait(page)
    frames = page.locator("#runner-host iframe")
    status = page.locator("#status")
    page.click("#run")
    pw_expect(status).to_have_text(
        f"Stopped: the program ran longer than {RUN_TIMEOUT_S} s.", timeout=RUN_MS * 2
    )
    pw_expect(frames).to_have_count(0)
    page.click("#run")
    eventually(lambda: len(spinning_renderers()) == 1, RUN_MS / 1000, "the program to spin")
    page.click("#stop")
    pw_expect(status).to_have_text("Stopped.")
    pw_expect(frames).to_have_count(0)
    pw_expect(page.locator("#exit-code")).to_be_hidden()
    eventually(lambda: not spinning_renderers(), 10, "the program's process to stop")
    choose_example(page, "hello C")
    compile_and_wait(page)
    assert run_and_wait(page) == ("hello from C\n", "", 0)


def test_refused_argument_is_shown_inline(page: Page, live: Server) -> None:
    open_playground(page, live)
    page.fill("#args", "-O2 --js-library /etc/passwd")
    compile_and_wait(page, "error")
    error = page.locator("#args-error")
    pw_expect(error).to_be_visible()
    pw_expect(error).to_have_text("argument '--js-library' is not allowed: it reads a file by path")
    pw_expect(page.locator("#args")).to_have_attribute("aria-invalid", "true")
    screenshot(page, "refused-argument")
    page.fill("#args", "-O1")
    pw_expect(error).to_be_hidden()


def test_share_link_runs_the_compile(page: Page, context: BrowserContext, live: Server) -> None:
    open_playground(page, live)
    choose_example(page, "hello C")
    compile_and_wait(page)
    link = page.get_attribute("#share-link", "href")
    assert link is not None
    match = re.fullmatch(re.escape(live.url) + r"/#id=([0-9a-f]{32})", link)
    assert match, link
    other = context.new_page()
    other.goto(link)
    exit_code = other.locator("#exit-code")
    pw_expect(exit_code).to_be_visible(timeout=RUN_MS)
    assert other.inner_text("#stdout") == "hello from C\n"
    assert exit_code.get_attribute("data-code") == "0"
    other.close()


def test_program_is_confined_to_its_frame(page: Page, live: Server, problems: list[str]) -> None:
    """The program runs in an opaque origin: no parent DOM, no cookies, no network."""
    open_playground(page, live)
    set_code(page, _ESCAPE_ATTEMPTS)
    compile_and_wait(page)
    stdout, stderr, code = run_and_wait(page)
    assert stdout.splitlines() == [
        "parent: blocked",
        "cookie: blocked",
        "storage: blocked",
        "fetch: blocked",
    ]
    assert (stderr, code) == ("", 0)
    # The runner's CSP (connect-src falls back to default-src 'none') stopped the request.
    blocked = [p for p in problems if "violates the following Content Security Policy" in p]
    assert len(blocked) == 1, problems
    assert "/healthz" in blocked[0]
    problems.remove(blocked[0])


_ESCAPE_ATTEMPTS = r"""#include <emscripten.h>
int main(void) {
    EM_ASM({
        const t = (name, f) => { try { f(); out(name + ": reached"); }
                                 catch (e) { out(name + ": blocked"); } };
        t("parent", () => window.parent.document.title);
        t("cookie", () => document.cookie);
        t("storage", () => window.localStorage.length);
        t("fetch", () => { const x = new XMLHttpRequest(); x.open("GET", "/healthz", false);
                           x.send(); });
    });
    return 0;
}
"""


@pytest.fixture(scope="module")
def tiny_output_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("playground-capped")
    server = start_server(workdir, server_config(workdir, maxOutputBytes=400))
    yield server
    _stop(server)


def test_cap_that_ended_the_job_is_shown(page: Page, tiny_output_server: Server) -> None:
    open_playground(page, tiny_output_server)
    code = "".join(f"#warning noisy {n}\n" for n in range(40)) + "int main(void) { return 0; }\n"
    set_code(page, code)
    compile_and_wait(page, "error")
    limit = page.locator("#limit")
    pw_expect(limit).to_be_visible()
    assert limit.get_attribute("data-limit") == "output"
    pw_expect(limit).to_contain_text("output cap")
    pw_expect(page.locator("#usage")).to_be_visible()
    screenshot(page, "cap")


def test_assets_are_served_from_the_package(live: Server) -> None:
    with httpx.Client(base_url=live.url) as client:
        page = client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        # Everything the page loads comes from this service: no CDN.
        for src in re.findall(r'(?:src|href)="([^"]+)"', page.text):
            assert src.startswith(("/", "data:")), src
        for name in ASSET_TYPES:
            asset = client.get(f"/playground/{name}")
            assert asset.status_code == 200, name
            assert asset.content == (PLAYGROUND / "static" / name).read_bytes()
            again = client.get(
                f"/playground/{name}", headers={"If-None-Match": asset.headers["etag"]}
            )
            assert again.status_code == 304
        runner = client.get("/playground/runner.html")
        assert runner.headers["content-security-policy"].startswith("sandbox allow-scripts;")
        missing = client.get("/playground/../app.py")
        assert missing.status_code == 404


def test_committed_editor_bundle_is_built_from_the_lockfile(tmp_path: Path) -> None:
    """static/editor.js is what build.mjs makes from package-lock.json (needs npm ci first)."""
    if not (PLAYGROUND / "node_modules" / "esbuild").exists():
        if shutil.which("npm") is None:
            pytest.fail("npm is needed to check the editor bundle")
        done = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=PLAYGROUND,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert done.returncode == 0, done.stderr
    rebuilt = tmp_path / "editor.js"
    done = subprocess.run(
        ["node", "build.mjs", str(rebuilt)],
        cwd=PLAYGROUND,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    committed = PLAYGROUND / "static" / "editor.js"
    assert rebuilt.read_bytes() == committed.read_bytes(), (
        "static/editor.js is stale: run `npm run build` in emcc_trio/api/playground and commit it"
    )


def test_api_token_field_is_kept_in_session_storage_only(
    page: Page, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """With apiTokensFile set, the page says a token is needed, sends the one typed in the
    token field as a Bearer token, and keeps it in this tab's session storage only."""
    token, line = new_token("playground")
    workdir = tmp_path_factory.mktemp("token-server")
    (workdir / "tokens").write_text(line + "\n")
    server = start_server(workdir, server_config(workdir, apiTokensFile="tokens"))
    try:
        open_playground(page, server)
        set_code(page, TYPED_PROGRAM[0] + "\n" + TYPED_PROGRAM[1] + "\n")
        compile_and_wait(page, "error")
        pw_expect(page.locator("#status")).to_contain_text("a valid API token is required")
        page.fill("#token", token)
        compile_and_wait(page)
        assert run_and_wait(page) == ("typed 42\n", "", 0)
        stored = page.evaluate(
            "[sessionStorage.getItem('emcc-trio-token'), JSON.stringify(localStorage),"
            " location.href]"
        )
        assert stored[0] == token
        assert token not in stored[1]
        assert token not in stored[2]
        page.reload()
        pw_expect(page.locator("#token")).to_have_value(token)
        assert token not in server.log()
        names = {e.get("client") for e in server.log_events() if e.get("status") == 200}
        assert "playground" in names
    finally:
        _stop(server)


@pytest.fixture(scope="module")
def jailed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server that runs programs (POST /run): jailed, in a dir nsjail's outside user can
    traverse (pytest's tmp dirs are 0700), with a CPU cap a spin meets at once."""
    workdir = Path(tempfile.mkdtemp(prefix="emcc-trio-playground-run-"))
    workdir.chmod(0o711)
    try:
        server = start_server(workdir, server_config(workdir, nsjailEnabled=True, runCpuSeconds=1))
        yield server
        _stop(server)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


STDIN_ECHO = """#include <stdio.h>
int main(void) {
    char line[256];
    while (fgets(line, sizeof line, stdin)) printf("read: %s", line);
    fprintf(stderr, "done reading\\n");
    return 5;
}
"""


def run_on_server_and_wait(page: Page) -> None:
    page.click("#run-server")
    pw_expect(page.locator("#exit-code")).to_be_visible(timeout=COMPILE_MS)


def test_run_on_server_sends_stdin_and_shows_both_streams_and_the_exit(
    page: Page, jailed: Server
) -> None:
    open_playground(page, jailed)
    set_code(page, STDIN_ECHO)
    page.fill("#args", "-O1")
    page.fill("#stdin", "first line\nsecond line\n")
    run_on_server_and_wait(page)
    assert page.inner_text("#stdout") == "read: first line\nread: second line\n"
    assert page.inner_text("#stderr") == "done reading\n"
    exit_code = page.locator("#exit-code")
    assert exit_code.inner_text() == "exit code 5"
    assert exit_code.get_attribute("data-code") == "5"
    pw_expect(page.locator("#run-limit")).to_be_hidden()
    pw_expect(page.locator("#status")).to_have_attribute("data-state", "ok")
    # Its artifact is built for the server's runner: no in-browser Run, no share link to it.
    pw_expect(page.locator("#run")).to_be_disabled()
    pw_expect(page.locator("#share")).to_be_hidden()
    # stderr is set apart from stdout: its own box, in another colour.
    colours = page.evaluate(
        "['stdout', 'stderr'].map(id => getComputedStyle(document.getElementById(id)).color)"
    )
    assert colours[0] != colours[1]
    screenshot(page, "run-on-server")


def test_run_on_server_shows_the_signal_and_the_cap_that_ended_it(
    page: Page, jailed: Server
) -> None:
    open_playground(page, jailed)
    set_code(page, NEVER_ENDS)
    run_on_server_and_wait(page)
    exit_code = page.locator("#exit-code")
    assert exit_code.inner_text() == "signal SIGKILL"
    assert exit_code.get_attribute("data-signal") == "SIGKILL"
    assert exit_code.get_attribute("data-code") is None
    limit = page.locator("#run-limit")
    pw_expect(limit).to_have_text(
        "the program exceeded its CPU-time cap (runCpuSeconds) and was killed"
    )
    pw_expect(page.locator("#status")).to_have_attribute("data-state", "error")


def test_run_on_server_shows_a_compile_error_as_compile_does(page: Page, jailed: Server) -> None:
    open_playground(page, jailed)
    choose_example(page, "a compile error")
    page.click("#run-server")
    status = page.locator("#status")
    pw_expect(status).to_have_attribute("data-state", "error", timeout=COMPILE_MS)
    pw_expect(status).to_have_text("Compile failed: 1 error(s).")
    pw_expect(page.locator("#diagnostics .diagnostic.error")).to_have_attribute("data-line", "5")
    pw_expect(page.locator("#exit-code")).to_be_hidden()


SDL2_EXAMPLE = "SDL2: draw, and move with the arrow keys"
SQUARE = [230, 60, 40, 255]  # the example's first colour
BACKGROUND = [20, 20, 30, 255]
GREEN = [40, 180, 90, 255]  # its second


_PIXEL_JS = (
    "Array.from(document.getElementById('canvas').getContext('2d').getImageData(x, y, 1, 1).data)"
)


def canvas_pixel(frame: Frame, x: int, y: int) -> list[int]:
    """A pixel of the runner frame's canvas, read back from the canvas itself."""
    pixel: list[int] = frame.evaluate(f"([x, y]) => {_PIXEL_JS}", [x, y])
    return pixel


def wait_for_pixel(frame: Frame, x: int, y: int, rgba: list[int]) -> None:
    """Until the program's main loop has drawn `rgba` at (x, y)."""
    frame.wait_for_function(
        f"([x, y, rgba]) => {_PIXEL_JS}.join() === rgba.join()", arg=[x, y, rgba], timeout=RUN_MS
    )


def test_an_sdl2_program_draws_on_the_canvas_and_takes_keys(page: Page, live: Server) -> None:
    """The SDL2 example (-sUSE_SDL=2, a port) compiled through the service: it draws a square
    on the runner frame's canvas, and the arrow keys move it (read back from the canvas)."""
    open_playground(page, live)
    choose_example(page, SDL2_EXAMPLE)
    assert page.input_value("#args") == "-sUSE_SDL=2"
    compile_and_wait(page)
    page.click("#run")
    status = page.locator("#status")
    pw_expect(status).to_contain_text("runs on the canvas", timeout=RUN_MS)
    pw_expect(page.locator("#stop")).to_be_visible()
    pw_expect(page.locator("#stdout")).to_have_text("click the canvas, then press the arrow keys\n")
    frame = page.frame_locator("#runner-host iframe")
    [runner] = [f for f in page.frames if f.url.endswith("/playground/runner.html")]
    canvas = frame.locator("canvas")
    pw_expect(canvas).to_have_attribute("width", "320")
    # The first frame is drawn by the main loop once the page shows it: wait for the square.
    wait_for_pixel(runner, 60, 60, SQUARE)
    assert canvas_pixel(runner, 10, 10) == BACKGROUND
    canvas.click(position={"x": 5, "y": 5})
    page.keyboard.press("ArrowRight")
    pw_expect(page.locator("#stdout")).to_contain_text("Right: the square is at 60,40")
    wait_for_pixel(runner, 45, 60, BACKGROUND)  # where its left edge was
    assert canvas_pixel(runner, 95, 60) == SQUARE
    page.keyboard.press("c")
    pw_expect(page.locator("#stdout")).to_contain_text("C: the square is at 60,40")
    wait_for_pixel(runner, 80, 60, GREEN)
    screenshot(page, "sdl2-canvas")
    page.click("#stop")
    pw_expect(page.locator("#runner-host")).to_be_hidden()
    # The page removes the runner's frame (Playwright's own list of frames learns it later).
    pw_expect(page.locator("#runner-host iframe")).to_have_count(0)
