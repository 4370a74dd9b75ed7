// The playground page: editor, compile, diagnostics, run in a sandboxed iframe or on the
// server (POST /run), share links.
// Plain browser JavaScript served as is; the editor itself comes from editor.js (CodeMirror 6).
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const TOKEN_KEY = "emcc-trio-token";

  const EXAMPLES = [
    {
      name: "hello C",
      type: "c",
      args: "",
      code: '#include <stdio.h>\nint main(void) { printf("hello from C\\n"); return 0; }\n',
    },
    {
      name: "hello C++",
      type: "cpp",
      args: "",
      code: '#include <iostream>\nint main() { std::cout << "hello from C++" << std::endl; }\n',
    },
    {
      name: "sqrt (-O2, callMain)",
      type: "c",
      args: "-O2 -sEXPORTED_RUNTIME_METHODS=[callMain]",
      code:
        '#include <stdio.h>\n#include <math.h>\n' +
        'int main(void) { printf("sqrt(2) = %.3f\\n", sqrt(2.0)); return 0; }\n',
    },
    {
      name: "stdout, stderr and an exit code",
      type: "c",
      args: "",
      code:
        "#include <stdio.h>\n\nint main(void) {\n" +
        '    printf("to stdout\\n");\n' +
        '    fprintf(stderr, "to stderr\\n");\n' +
        "    return 3;\n}\n",
    },
    {
      name: "a last line without a newline (EXIT_RUNTIME)",
      type: "c",
      args: "-sEXIT_RUNTIME=1 -sEXPORTED_RUNTIME_METHODS=[callMain]",
      code:
        "#include <stdio.h>\n\nint main(void) {\n" +
        '    printf("a whole line\\n");\n' +
        "    // Without -sEXIT_RUNTIME=1 this stays in the runtime's buffer.\n" +
        '    printf("the last line, without a newline");\n' +
        "    return 0;\n}\n",
    },
    {
      name: "Embind: C++ called from JavaScript",
      type: "cpp",
      args: "-std=c++20 -lembind -sEXIT_RUNTIME=1 -sEXPORTED_RUNTIME_METHODS=[callMain]",
      code:
        "#include <cstdio>\n#include <string>\n\n" +
        "#include <emscripten/bind.h>\n#include <emscripten/val.h>\n\n" +
        "std::string greet(const std::string& name) { return \"hello, \" + name; }\n\n" +
        "// After loading, JavaScript can call Module.greet(\"web\").\n" +
        "EMSCRIPTEN_BINDINGS(example) { emscripten::function(\"greet\", &greet); }\n\n" +
        "int main() {\n" +
        "    // The same call, made through JavaScript from C++.\n" +
        '    auto greeting = emscripten::val::module_property("greet")(std::string("Embind"));\n' +
        '    std::printf("%s\\n", greeting.as<std::string>().c_str());\n' +
        "    return 0;\n}\n",
    },
    {
      name: "SDL2: draw, and move with the arrow keys",
      type: "c",
      args: "-sUSE_SDL=2",
      code: `#include <SDL2/SDL.h>
#include <emscripten.h>
#include <stdio.h>

// The arrow keys move the square; any other key changes its colour.
static SDL_Window *window;
static int x = 40, y = 40, colour = 0;
static const Uint8 colours[3][3] = {{230, 60, 40}, {40, 180, 90}, {50, 110, 230}};

static void frame(void) {
    SDL_Event event;
    while (SDL_PollEvent(&event)) {
        if (event.type != SDL_KEYDOWN) continue;
        switch (event.key.keysym.sym) {
            case SDLK_LEFT: x -= 20; break;
            case SDLK_RIGHT: x += 20; break;
            case SDLK_UP: y -= 20; break;
            case SDLK_DOWN: y += 20; break;
            default: colour = (colour + 1) % 3;
        }
        printf("%s: the square is at %d,%d\\n", SDL_GetKeyName(event.key.keysym.sym), x, y);
    }
    SDL_Surface *screen = SDL_GetWindowSurface(window);
    SDL_FillRect(screen, NULL, SDL_MapRGB(screen->format, 20, 20, 30));
    SDL_Rect square = {x, y, 40, 40};
    const Uint8 *c = colours[colour];
    SDL_FillRect(screen, &square, SDL_MapRGB(screen->format, c[0], c[1], c[2]));
    SDL_UpdateWindowSurface(window);
}

int main(void) {
    SDL_Init(SDL_INIT_VIDEO);
    window = SDL_CreateWindow("square", SDL_WINDOWPOS_UNDEFINED, SDL_WINDOWPOS_UNDEFINED,
                              320, 240, 0);
    printf("click the canvas, then press the arrow keys\\n");
    emscripten_set_main_loop(frame, 0, 1);
    return 0;
}
`,
    },
    {
      name: "a compile error",
      type: "c",
      args: "",
      code: "#include <stdio.h>\n\nint main(void) {\n    int x = 1;\n    return missing + x;\n}\n",
    },
  ];

  // The editor holds the main source; diagnostics in other files are not marked in it.
  const MAIN_FILES = new Set(["main.c", "main.cpp"]);
  const RUN_TIMEOUT_MS = 20000;

  const state = {
    compiled: null, // {id, js, wasm}
    frame: null,
    runTimer: null,
    mainLoop: false, // the running program's main returned to the browser (a main loop)
    drawing: false, // it asked its canvas for a drawing context
  };

  const editor = window.EmccEditor.create($("editor"), {
    doc: EXAMPLES[0].code,
    onChange: () => {
      state.compiled = null;
      $("run").disabled = true;
    },
  });
  window.playground = { editor, examples: EXAMPLES };

  // ---- helpers ------------------------------------------------------------------------------

  function setStatus(text, kind) {
    const status = $("status");
    status.textContent = text;
    status.dataset.state = kind;
  }

  function splitArgs(text) {
    return text.split(/\s+/).filter((part) => part.length > 0);
  }

  function formatBytes(bytes) {
    if (bytes === null || bytes === undefined) return "n/a";
    return `${(bytes / (1024 * 1024)).toFixed(1)} MiB`;
  }

  function formatSeconds(seconds) {
    if (seconds === null || seconds === undefined) return "n/a";
    return `${Number(seconds).toFixed(3)} s`;
  }

  function showUsage(usage, cached) {
    const box = $("usage");
    if (!usage) {
      box.hidden = true;
      return;
    }
    $("usage-duration").textContent = formatSeconds(usage.durationSeconds);
    $("usage-memory").textContent = formatBytes(usage.peakMemoryBytes);
    $("usage-cpu").textContent = formatSeconds(usage.cpuSeconds);
    $("usage-cached").textContent = cached ? "yes" : "no";
    box.hidden = false;
  }

  function showArgsError(message) {
    const box = $("args-error");
    const input = $("args");
    if (message) {
      box.textContent = message;
      box.hidden = false;
      input.setAttribute("aria-invalid", "true");
    } else {
      box.textContent = "";
      box.hidden = true;
      input.removeAttribute("aria-invalid");
    }
  }

  // The server's structured diagnostics, reduced to the ones in the editor's file (the
  // playground sends one file: main.c or main.cpp).
  function editorDiagnostics(diagnostics) {
    return (diagnostics || [])
      .filter((d) => MAIN_FILES.has(d.file))
      .map((d) => ({ line: d.line, col: d.column, severity: d.severity, message: d.message }));
  }

  function showDiagnostics(diagnostics, rawOutput) {
    const list = $("diagnostics");
    list.replaceChildren();
    for (const d of diagnostics) {
      const item = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.className = `diagnostic ${d.severity}`;
      button.dataset.line = String(d.line);
      button.dataset.col = String(d.col);
      const where = document.createElement("span");
      where.className = "where";
      where.textContent = `${d.line}:${d.col}`;
      const severity = document.createElement("span");
      severity.className = "severity";
      severity.textContent = d.severity;
      const message = document.createElement("span");
      message.className = "message";
      message.textContent = d.message;
      button.append(where, severity, message);
      button.addEventListener("click", () => editor.goTo(d.line, d.col));
      item.append(button);
      list.append(item);
    }
    editor.mark(diagnostics);
    const output = $("compiler-output");
    output.textContent = rawOutput || "";
    output.hidden = !rawOutput;
  }

  function showShare(id) {
    const link = $("share-link");
    const url = new URL(window.location.href);
    url.hash = `id=${id}`;
    link.href = url.toString();
    link.textContent = url.toString();
    $("share").hidden = false;
  }

  function clearRun() {
    $("stdout").textContent = "";
    $("stderr").textContent = "";
    const exit = $("exit-code");
    exit.hidden = true;
    exit.textContent = "";
    delete exit.dataset.code;
    delete exit.dataset.signal;
    $("run-limit").hidden = true;
  }

  function resetCompile() {
    showArgsError("");
    showUsage(null, false);
    $("limit").hidden = true;
    $("share").hidden = true;
    showDiagnostics([], "");
  }

  // ---- compile ------------------------------------------------------------------------------

  function compileBody() {
    const body = { type: $("language").value, code: editor.getCode() };
    const args = splitArgs($("args").value);
    if (args.length) body.args = args;
    return body;
  }

  // POST the body to /compile or /run with the page cleared and its buttons off meanwhile:
  // {response, answer}, or null once the failure is shown.
  async function post(path, body, busyText) {
    stopRun();
    resetCompile();
    clearRun();
    state.compiled = null;
    $("run").disabled = true;
    $("compile").disabled = true;
    $("run-server").disabled = true;
    setStatus(busyText, "busy");
    const headers = { "Content-Type": "application/json" };
    const token = $("token").value.trim();
    if (token) headers.Authorization = `Bearer ${token}`;
    try {
      const response = await fetch(path, {
        method: "POST",
        headers,
        body: JSON.stringify(body),
      });
      return { response, answer: await response.json() };
    } catch (error) {
      setStatus(`The request failed: ${error}`, "error");
      return null;
    } finally {
      $("compile").disabled = false;
      $("run-server").disabled = false;
    }
  }

  async function compile() {
    const sent = await post("/compile", compileBody(), "Compiling…");
    return sent !== null && handleAnswer(sent.response, sent.answer);
  }

  // `runsHere`: false for a /run answer, whose artifact is built for the server's runner (not
  // started on load), so it gets neither the Run button nor a share link.
  function handleAnswer(response, answer, runsHere = true) {
    const status = response.status;
    showUsage(answer.usage, answer.cached);
    if (status === 200 && answer.ok) {
      const warnings = editorDiagnostics(answer.diagnostics);
      showDiagnostics(warnings, answer.output);
      setStatus(
        warnings.length ? `Compiled with ${warnings.length} warning(s).` : "Compiled.",
        "ok",
      );
      if (runsHere) {
        state.compiled = { id: answer.id, js: answer.js, wasm: answer.wasm };
        $("run").disabled = false;
        showShare(answer.id);
        history.replaceState(null, "", `#id=${answer.id}`);
      }
      return true;
    }
    if (status === 400 && answer.id) {
      const diagnostics = editorDiagnostics(answer.diagnostics);
      showDiagnostics(diagnostics, answer.error);
      const errors = diagnostics.filter((d) => d.severity === "error").length;
      setStatus(`Compile failed: ${errors} error(s).`, "error");
      return false;
    }
    if (status === 400) {
      // A bad request: a refused argument names it; anything else is about the body.
      if (/^(argument |too many args|an argument )/.test(answer.error)) {
        showArgsError(answer.error);
        setStatus("An argument was refused.", "error");
      } else {
        setStatus(answer.error, "error");
      }
      return false;
    }
    if (status === 422) {
      const limit = $("limit");
      limit.textContent = `Stopped by the ${answer.limit} cap (limit: ${answer.limit}).`;
      limit.dataset.limit = answer.limit;
      limit.hidden = false;
      showDiagnostics(editorDiagnostics(answer.diagnostics), answer.error);
      setStatus("A resource cap ended the compile.", "error");
      return false;
    }
    if (status === 401) {
      setStatus(`${answer.error} (enter it under API token)`, "error");
      $("token").focus();
      return false;
    }
    if (status === 503 || status === 429) {
      const retry = response.headers.get("Retry-After");
      setStatus(`${answer.error}${retry ? ` (retry after ${retry} s)` : ""}`, "error");
      return false;
    }
    setStatus(`${status}: ${answer.error || "unexpected answer"}`, "error");
    return false;
  }

  // ---- run ----------------------------------------------------------------------------------

  function stopRun(message) {
    if (state.runTimer !== null) {
      clearTimeout(state.runTimer);
      state.runTimer = null;
    }
    if (state.frame) {
      state.frame.remove();
      state.frame = null;
    }
    $("runner-host").hidden = true;
    $("stop").hidden = true;
    state.mainLoop = false;
    state.drawing = false;
    if (message) setStatus(message, "error");
  }

  function showDrawing(frame) {
    clearTimeout(state.runTimer);
    state.runTimer = null;
    frame.focus();
    setStatus("The program runs on the canvas below (click it for the keys); Stop ends it.", "ok");
  }

  // A run that ended with a picture: its frame stays on show (no timer, nothing to stop).
  function finishRun(frame) {
    if (state.runTimer !== null) {
      clearTimeout(state.runTimer);
      state.runTimer = null;
    }
    $("runner-host").hidden = false;
    $("stop").hidden = true;
    state.frame = frame;
  }

  function showExit(code) {
    const exit = $("exit-code");
    exit.textContent = `exit code ${code}`;
    exit.dataset.code = String(code);
    exit.hidden = false;
  }

  async function run(compiled) {
    stopRun();
    clearRun();
    setStatus(`Running ${compiled.id}…`, "busy");
    let js;
    let wasm = null; // stays null for a -sSINGLE_FILE build: the wasm is inside app.js
    try {
      const [jsResponse, wasmResponse] = await Promise.all([
        fetch(compiled.js),
        compiled.wasm ? fetch(compiled.wasm) : null,
      ]);
      // A share link does not know whether the build was SINGLE_FILE: a 404 for app.wasm
      // (with app.js there) means it was.
      const wasmMissing = wasmResponse && !wasmResponse.ok && wasmResponse.status !== 404;
      if (!jsResponse.ok || wasmMissing) {
        setStatus(`Cannot fetch the artifact ${compiled.id} (it may have expired).`, "error");
        return;
      }
      js = await jsResponse.text();
      if (wasmResponse && wasmResponse.ok) wasm = await wasmResponse.arrayBuffer();
    } catch (error) {
      setStatus(`Cannot fetch the artifact: ${error}`, "error");
      return;
    }
    // A fresh frame per run. sandbox="allow-scripts" without allow-same-origin: the program
    // runs in an opaque origin and cannot reach this page, its storage or the service.
    const frame = document.createElement("iframe");
    frame.setAttribute("sandbox", "allow-scripts");
    frame.setAttribute("title", "program runner");
    frame.src = "/playground/runner.html";
    state.frame = frame;
    $("stop").hidden = false;
    const onMessage = (event) => {
      if (state.frame !== frame || event.source !== frame.contentWindow) return;
      const data = event.data || {};
      if (data.type === "ready") {
        frame.contentWindow.postMessage({ type: "run", js, wasm }, "*", wasm ? [wasm] : []);
      } else if (data.type === "stdout") {
        $("stdout").textContent += data.text;
      } else if (data.type === "stderr") {
        $("stderr").textContent += data.text;
      } else if (data.type === "exit") {
        showExit(data.code);
        window.removeEventListener("message", onMessage);
        if (data.drawing) {
          // What it drew stays on show until the next run.
          finishRun(frame);
          setStatus(`Ran ${compiled.id}; its canvas stays until the next run.`, "ok");
        } else {
          stopRun();
          setStatus(`Ran ${compiled.id}.`, "ok");
        }
      } else if (data.type === "running") {
        // main handed control back to the browser: the program runs on in its callbacks
        // (an SDL2 main loop) until Stop. Its frame is shown: a hidden one gets no frames.
        state.mainLoop = true;
        $("runner-host").hidden = false;
        if (state.drawing) showDrawing(frame);
        else setStatus("The program runs on in a main loop; Stop ends it.", "ok");
      } else if (data.type === "drawing") {
        // A program that draws is interactive: no time limit while it runs on.
        $("runner-host").hidden = false;
        if (state.mainLoop) showDrawing(frame);
        else state.drawing = true;
      } else if (data.type === "error") {
        $("stderr").textContent += `${data.message}\n`;
        setStatus("The program crashed.", "error");
        window.removeEventListener("message", onMessage);
        stopRun();
      }
    };
    window.addEventListener("message", onMessage);
    state.runTimer = setTimeout(() => {
      window.removeEventListener("message", onMessage);
      stopRun(`Stopped: the program ran longer than ${RUN_TIMEOUT_MS / 1000} s.`);
    }, RUN_TIMEOUT_MS);
    $("runner-host").append(frame);
  }

  // ---- run on the server: POST /run compiles, then runs the program in the server's jail -----

  // A stream of the run's answer as text: base64 when it was not UTF-8 (shown with
  // replacement characters where it is not).
  function streamText(text, encoding) {
    if (encoding !== "base64") return text;
    const bytes = Uint8Array.from(atob(text), (char) => char.charCodeAt(0));
    return new TextDecoder().decode(bytes);
  }

  function showServerRun(id, ran) {
    $("stdout").textContent = streamText(ran.stdout, ran.stdoutEncoding);
    $("stderr").textContent = streamText(ran.stderr, ran.stderrEncoding);
    const cut = ["stdout", "stderr"].filter((stream) => ran[`${stream}Truncated`]);
    const note = ran.message || (cut.length ? `The ${cut.join(" and ")} was cut short.` : "");
    const limit = $("run-limit");
    limit.textContent = note;
    limit.hidden = !note;
    if (ran.signal) {
      const exit = $("exit-code");
      exit.textContent = `signal ${ran.signal}`;
      exit.dataset.signal = ran.signal;
      exit.hidden = false;
    } else {
      showExit(ran.exitCode);
    }
    setStatus(`Ran ${id} on the server.`, ran.limit ? "error" : "ok");
  }

  async function runOnServer() {
    const body = compileBody();
    const stdin = $("stdin").value;
    if (stdin) body.stdin = stdin;
    const sent = await post("/run", body, "Compiling and running on the server…");
    // A compile that failed answers as /compile does, and is shown the same way.
    if (sent !== null && handleAnswer(sent.response, sent.answer, false)) {
      showServerRun(sent.answer.id, sent.answer.run);
    }
  }

  // ---- share links: /#id=<id> ---------------------------------------------------------------

  function loadFromHash() {
    const params = new URLSearchParams(window.location.hash.slice(1));
    const id = params.get("id");
    if (!id) return;
    if (!/^[0-9a-f]{32}$/.test(id)) {
      setStatus(`Not a compile id: ${id}`, "error");
      return;
    }
    resetCompile();
    state.compiled = { id, js: `/artifacts/${id}/app.js`, wasm: `/artifacts/${id}/app.wasm` };
    $("run").disabled = false;
    showShare(id);
    run(state.compiled);
  }

  // ---- wiring -------------------------------------------------------------------------------

  const select = $("example");
  EXAMPLES.forEach((example, index) => {
    const option = document.createElement("option");
    option.value = String(index);
    option.textContent = example.name;
    select.append(option);
  });
  select.addEventListener("change", () => {
    const example = EXAMPLES[Number(select.value)];
    if (!example) return;
    $("language").value = example.type;
    $("args").value = example.args;
    editor.setCode(example.code);
    resetCompile();
    clearRun();
    setStatus(`Example: ${example.name}. Press Compile.`, "idle");
  });

  $("compile").addEventListener("click", () => {
    compile();
  });
  $("run").addEventListener("click", () => {
    if (state.compiled) run(state.compiled);
  });
  $("run-server").addEventListener("click", () => {
    runOnServer();
  });
  $("stop").addEventListener("click", () => stopRun("Stopped."));
  $("args").addEventListener("input", () => showArgsError(""));
  // The token lives in this tab's session storage only: never in the URL or localStorage.
  $("token").value = sessionStorage.getItem(TOKEN_KEY) || "";
  $("token").addEventListener("input", () => {
    const token = $("token").value.trim();
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      compile();
    }
  });
  window.addEventListener("hashchange", loadFromHash);
  loadFromHash();
})();
