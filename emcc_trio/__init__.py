"""emcc_trio: a sandboxed Emscripten compilation service on Trio."""

__version__ = "0.1.0"
