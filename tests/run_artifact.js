// Run an ENVIRONMENT=web, MODULARIZE=1 artifact under node and call its main.
// This emscripten's web build wants a `window` and, under node, the wasm bytes handed in
// (node's global fetch cannot load a file path).
globalThis.window = globalThis;
const fs = require("fs");
const path = require("path");
const [jsPath, wasmPath] = process.argv.slice(2);
const factory = require(path.resolve(jsPath));
factory({
  wasmBinary: fs.readFileSync(wasmPath),
  print: (text) => process.stdout.write(text + "\n"),
  printErr: (text) => process.stderr.write(text + "\n"),
}).then((module) => {
  const status = module._main ? module._main(0, 0) : module.callMain([]);
  process.exitCode = status || 0;
});
