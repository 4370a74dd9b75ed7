// Run an artifact through the playground's own runner (static/runner.js) under node, with a
// stand-in for the iframe's window and document; print the runner's messages as JSON, one per line.
//   node run_in_runner.js runner.js app.js app.wasm
const fs = require("fs");
const [runnerPath, jsPath, wasmPath] = process.argv.slice(2);
const parent = { postMessage: (message) => process.stdout.write(`${JSON.stringify(message)}\n`) };
const listeners = [];
globalThis.window = globalThis;
globalThis.parent = parent;
globalThis.addEventListener = (type, listener) => listeners.push(listener);
// The frame's canvas: these programs draw nothing (the SDL2 one runs in Chromium).
const canvas = { getContext: () => null };
globalThis.document = { getElementById: (id) => (id === "canvas" ? canvas : null) };
new Function(fs.readFileSync(runnerPath, "utf8"))();
const wasm = fs.readFileSync(wasmPath);
const data = {
  type: "run",
  js: fs.readFileSync(jsPath, "utf8"),
  wasm: wasm.buffer.slice(wasm.byteOffset, wasm.byteOffset + wasm.length),
};
for (const listener of listeners) listener({ source: parent, data });
