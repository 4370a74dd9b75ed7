// One program for the run tests, compiled once: argv[1] picks what it does, each mode able
// to meet one cap only (see tests/test_run.py).
#include <emscripten.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int echo(int argc, char **argv) {
  for (int i = 0; i < argc; i++) printf("argv[%d]=%s\n", i, argv[i]);
  char buffer[4096];
  size_t got;
  while ((got = fread(buffer, 1, sizeof buffer, stdin)) > 0) fwrite(buffer, 1, got, stdout);
  fputs("to stderr\n", stderr);
  return argc > 2 ? atoi(argv[2]) : 0;
}

// Grows its heap a MiB at a time and touches every page: only the memory cap ends it.
static int memory(void) {
  for (;;) {
    char *block = malloc(1 << 20);
    if (block == NULL) return 99;  // wasm32's 2 GiB is past any run cap
    memset(block, 1, 1 << 20);
  }
}

// Constant memory, no output: only the CPU cap (or the wall clock, set far above it) ends it.
static int spin(void) {
  volatile unsigned long n = 0;
  for (;;) n++;
}

// Output as fast as it can go, constant memory: only the output cap ends it.
static int flood(void) {
  static char line[65536];
  memset(line, 'x', sizeof line);
  for (;;) fwrite(line, 1, sizeof line, stdout);
}

// Sleeps without using the CPU (a wait on a futex nobody wakes): only the wall clock ends it.
static int sleep_forever(void) {
  EM_ASM({ Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0); });
  return 0;
}

// What the jail lets the program's JavaScript reach: files by path, the network, writes.
static int escape(int argc, char **argv) {
  for (int i = 2; i < argc; i++) {
    EM_ASM({
      const fs = require("fs");
      const target = UTF8ToString($0);
      if (target.startsWith("port:")) {
        const script = `require("net").connect(${target.slice(5)}, "127.0.0.1")` +
          `.on("connect", () => console.log("connected"))` +
          `.on("error", (e) => console.log(e.code))`;
        try {
          const child = require("child_process");
          out(target + " " + child.execFileSync(process.execPath, ["-e", script]).toString().trim());
        } catch (e) { out(target + " spawn " + e.code); }
      } else if (target.startsWith("write:")) {
        try { fs.writeFileSync(target.slice(6), "x"); out(target + " written"); }
        catch (e) { out(target + " " + e.code); }
      } else {
        try { out(target + " read " + fs.readFileSync(target).length); }
        catch (e) { out(target + " " + e.code); }
      }
    }, argv[i]);
  }
  return 0;
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "echo";
  if (!strcmp(mode, "abort")) abort();
  if (!strcmp(mode, "segv")) return *(volatile int *)0x7ffffff0;
  if (!strcmp(mode, "exit")) exit(argc > 2 ? atoi(argv[2]) : 0);
  if (!strcmp(mode, "memory")) return memory();
  if (!strcmp(mode, "spin")) return spin();
  if (!strcmp(mode, "flood")) return flood();
  if (!strcmp(mode, "sleep")) return sleep_forever();
  if (!strcmp(mode, "escape")) return escape(argc, argv);
  return echo(argc, argv);
}
