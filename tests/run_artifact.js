// Run an ENVIRONMENT=web, MODULARIZE=1 artifact under node and call its main.
//   node run_artifact.js app.js app.wasm [NAME ARG...]
// (app.wasm "-" for a -sSINGLE_FILE build, whose wasm is inside app.js)
// With NAME, first call the module's function NAME (an Embind binding, say) with the ARGs
// (numbers where they parse as numbers) and print `NAME(ARGS) = RESULT`, then run main.
// This emscripten's web build wants a `window` and, under node, the wasm bytes handed in
// (node's global fetch cannot load a file path). An -sEXPORT_ES6=1 build is an ES module:
// it is imported from a .mjs copy.
globalThis.window = globalThis;
// SDL2's web build (-sUSE_SDL=2) reads `document` as it starts (its event targets): a page
// with no elements stands in, as there is no display here.
globalThis.document = {
  addEventListener() {},
  removeEventListener() {},
  getElementById: () => null,
  querySelector: () => null,
};
const fs = require("fs");
const path = require("path");
const { pathToFileURL } = require("url");
const [jsPath, wasmPath, callName, ...callArgs] = process.argv.slice(2);

async function loadFactory() {
  const source = fs.readFileSync(jsPath, "utf8");
  if (!/^export default /m.test(source)) return require(path.resolve(jsPath));
  const copy = path.resolve(jsPath).replace(/\.js$/, ".mjs");
  fs.writeFileSync(copy, source);
  return (await import(pathToFileURL(copy).href)).default;
}

// callMain only when really exported: a debug build puts an anonymous stub that aborts in its
// place (or, in later releases, a getter). callMain exits the runtime (flushing a last line
// without a newline) under -sEXIT_RUNTIME=1; _main does not.
function runMain(module) {
  const callMain = Object.getOwnPropertyDescriptor(module, "callMain");
  const real = callMain && typeof callMain.value === "function" && callMain.value.name !== "";
  return real ? module.callMain([]) : module._main(0, 0);
}

(async () => {
  const factory = await loadFactory();
  const module = await factory({
    ...(wasmPath === "-" ? {} : { wasmBinary: fs.readFileSync(wasmPath) }),
    print: (text) => process.stdout.write(text + "\n"),
    printErr: (text) => process.stderr.write(text + "\n"),
  });
  if (callName) {
    const values = callArgs.map((arg) => (Number.isNaN(Number(arg)) ? arg : Number(arg)));
    const result = module[callName](...values);
    process.stdout.write(`${callName}(${callArgs.join(", ")}) = ${result}\n`);
  }
  const status = runMain(module);
  process.exitCode = status || 0;
})();
