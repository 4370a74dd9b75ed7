// Runs one artifact (a -sENVIRONMENT=web, -sMODULARIZE=1 build) under node, in the run jail.
//   node runner.js DIR STATUS_FD
// DIR holds app.js, app.wasm (absent for -sSINGLE_FILE), `stdin` and `argv.json`. The
// program's stdout and stderr go to fds 1 and 2 byte for byte (emscripten's Module.stdout
// and Module.stderr devices), its stdin comes from DIR/stdin (Module.stdin: a byte at a
// time, then EOF), and how it ended goes to STATUS_FD as one JSON object.
"use strict";
globalThis.window = globalThis; // this emscripten's web build wants a window
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

const [dir, statusArg] = process.argv.slice(2);
const statusFd = Number(statusArg);
const FLUSH_BYTES = 4096;
const NEWLINE = 10;

function writeAll(fd, buffer) {
  let offset = 0;
  while (offset < buffer.length) {
    try {
      offset += fs.writeSync(fd, buffer, offset);
    } catch (error) {
      if (error.code !== "EAGAIN") throw error;
    }
  }
}

// A byte device: bytes kept until a newline or FLUSH_BYTES, so a killed run loses at most
// its last partial line, and a flood costs a write per 4 KiB, not per byte.
function device(fd) {
  const pending = Buffer.alloc(FLUSH_BYTES);
  let used = 0;
  const flush = () => {
    if (used) writeAll(fd, pending.subarray(0, used));
    used = 0;
  };
  const put = (byte) => {
    if (byte === null || byte === undefined) return flush();
    pending[used++] = byte & 0xff;
    if (byte === NEWLINE || used === FLUSH_BYTES) flush();
  };
  return { put, flush, line: (text) => writeAll(fd, Buffer.from(text + "\n")) };
}

const stdout = device(1);
const stderr = device(2);
const input = fs.readFileSync(path.join(dir, "stdin"));
let inputAt = 0;
let aborted = false;
let finished = false;

// How a wasm trap would have ended a native process.
function trapSignal(error) {
  const message = String(error && error.message);
  if (/out of bounds|call stack|stack overflow/i.test(message)) return "SIGSEGV";
  if (/divide by zero|integer overflow|invalid conversion/i.test(message)) return "SIGFPE";
  if (/unreachable/i.test(message)) return "SIGILL";
  return null;
}

function finish(status) {
  if (finished) return;
  finished = true;
  stdout.flush();
  stderr.flush();
  writeAll(statusFd, Buffer.from(JSON.stringify(status)));
  process.exit(0);
}

function failed(error) {
  if (error && error.name === "ExitStatus") return finish({ exitCode: error.status });
  stdout.flush();
  if (aborted) return finish({ signal: "SIGABRT" });
  const signal = trapSignal(error);
  stderr.line(String((error && error.stack) || error));
  finish(signal ? { signal } : { exitCode: 1 });
}

async function loadFactory(jsPath) {
  const source = fs.readFileSync(jsPath, "utf8");
  if (!/^export default /m.test(source)) return require(jsPath);
  // -sEXPORT_ES6=1: an ES module, imported from a copy on the jail's tmpfs.
  const copy = path.join(require("os").tmpdir(), "app.mjs");
  fs.writeFileSync(copy, source);
  return (await import(pathToFileURL(copy).href)).default;
}

process.on("uncaughtException", failed);
process.on("unhandledRejection", failed);

(async () => {
  const argv = JSON.parse(fs.readFileSync(path.join(dir, "argv.json"), "utf8"));
  const wasmPath = path.join(dir, "app.wasm");
  const factory = await loadFactory(path.join(dir, "app.js"));
  const module = await factory({
    ...(fs.existsSync(wasmPath) ? { wasmBinary: fs.readFileSync(wasmPath) } : {}),
    stdin: () => (inputAt < input.length ? input[inputAt++] : null),
    stdout: stdout.put,
    stderr: stderr.put,
    // Without a filesystem (-sFILESYSTEM=0) output comes as text lines.
    print: stdout.line,
    printErr: stderr.line,
    onAbort: () => {
      aborted = true;
    },
    onExit: (code) => finish({ exitCode: code }),
  });
  try {
    module.callMain(argv);
  } catch (error) {
    failed(error);
  }
})().catch(failed);
