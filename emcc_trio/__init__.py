"""emcc_trio: a sandboxed Emscripten compilation service on Trio.

Where a request goes, top to bottom (imports flow the same way; `nox -s lint` checks it):

- `__main__` parses the command line; `server` builds every part from `config` and serves.
- `api/`: the only HTTP code (Quart-Trio app, routes, bodies, middleware, the HTTP server).
- `compile/`: one compile as the service runs it (per-client bound, cache key, single flight,
  the memory gate, the argument policy, the compiler).
- `isolation/`: where untrusted work runs (the job runner, nsjail, cgroup drivers).
- `storage/`: where artifacts and results live (local disk, Redis).
- `models` and `errors`: the data every layer passes, and what each can refuse.
- `client/`: the command-line client; `testing/`: the harness tests and load tests share.
"""

__version__ = "0.1.0"
