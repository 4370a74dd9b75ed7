// Native wasm exceptions, Embind through --bind, SIMD, an ES module; built with -O2 -flto.
#include <cstdio>
#include <stdexcept>
#include <wasm_simd128.h>

#include <emscripten/bind.h>

double scale(double value, double factor) { return value * factor; }

EMSCRIPTEN_BINDINGS(flags) { emscripten::function("scale", &scale); }

static int lanes_sum() {
  v128_t v = wasm_i32x4_add(wasm_i32x4_make(1, 2, 3, 4), wasm_i32x4_splat(10));
  return wasm_i32x4_extract_lane(v, 0) + wasm_i32x4_extract_lane(v, 3);
}

int main() {
  try {
    throw std::out_of_range("wasm exception");
  } catch (const std::out_of_range& error) {
    std::printf("caught: %s\n", error.what());
  }
  std::printf("simd: %d\n", lanes_sum());
  std::printf("MODE=%s\n", MODE);
  std::printf("this last line stays in the buffer");
  return 0;
}
