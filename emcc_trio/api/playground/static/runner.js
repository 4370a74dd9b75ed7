// Runs one compiled program inside the playground's sandboxed iframe (sandbox="allow-scripts",
// no allow-same-origin: an opaque origin with no access to the service's cookies or pages).
// The parent sends {type: "run", js, wasm} (the artifact's text and bytes, wasm null for a
// -sSINGLE_FILE build); this frame sends
// back {type: "stdout"|"stderr", text}, then {type: "exit", code, drawing} or
// {type: "error", message}, or {type: "running"} when main handed control back to the
// browser (emscripten_set_main_loop) and the program goes on in its callbacks. It sends
// {type: "drawing"} when the program first asks the canvas for a drawing context (SDL2 does
// for its window surface or renderer).
"use strict";
(() => {
  let started = false;
  let drawing = false;
  const send = (message) => window.parent.postMessage(message, "*");
  const canvas = document.getElementById("canvas");
  const getContext = canvas.getContext.bind(canvas);
  canvas.getContext = (...args) => {
    if (!drawing) send({ type: "drawing" });
    drawing = true;
    return getContext(...args);
  };

  window.addEventListener("message", async (event) => {
    if (event.source !== window.parent || started) return;
    const data = event.data;
    if (!data || data.type !== "run") return;
    started = true;
    let exitCode = null;
    try {
      // app.js is a MODULARIZE=1 factory that declares `var Module`.
      const factory = new Function(`${data.js}\n;return Module;`)();
      const module = await factory({
        // null for a -sSINGLE_FILE build, which carries its wasm.
        ...(data.wasm ? { wasmBinary: new Uint8Array(data.wasm) } : {}),
        canvas,
        noInitialRun: true,
        print: (text) => send({ type: "stdout", text: `${text}\n` }),
        printErr: (text) => send({ type: "stderr", text: `${text}\n` }),
        quit: (status, toThrow) => {
          exitCode = status;
          throw toThrow;
        },
      });
      let code;
      try {
        // callMain when really exported (a debug build puts an anonymous stub that aborts in
        // its place, or a getter in later releases): under -sEXIT_RUNTIME=1 it exits the
        // runtime, which flushes a last line without a newline. _main otherwise: it is
        // exported by default.
        const callMain = Object.getOwnPropertyDescriptor(module, "callMain");
        const real =
          callMain && typeof callMain.value === "function" && callMain.value.name !== "";
        code = real ? module.callMain([]) : module._main(0, 0);
      } catch (error) {
        if (error === "unwind" && exitCode === null) {
          send({ type: "running" });
          return;
        }
        if (exitCode === null) throw error;
        code = exitCode;
      }
      if (exitCode !== null) code = exitCode;
      send({ type: "exit", code: typeof code === "number" ? code : 0, drawing });
    } catch (error) {
      if (exitCode !== null) {
        send({ type: "exit", code: exitCode, drawing });
      } else {
        send({ type: "error", message: String((error && error.stack) || error) });
      }
    }
  });
  send({ type: "ready" });
})();
