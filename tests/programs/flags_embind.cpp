// C++20, an exception, Embind, -D values, and a last line without a newline.
#include <bit>
#include <concepts>
#include <cstdio>
#include <stdexcept>
#include <string>

#include <emscripten/bind.h>

template <std::integral T>
constexpr T twice(T value) { return value * 2; }

int add(int a, int b) { return a + b; }
std::string greet(const std::string& name) { return std::string(GREETING) + ", " + name; }

EMSCRIPTEN_BINDINGS(flags) {
  emscripten::function("add", &add);
  emscripten::function("greet", &greet);
}

int main() {
  std::printf("GREETING=%s LEVEL=%d\n", GREETING, LEVEL);
  std::printf("C++20: twice(21)=%d popcount(255)=%d\n", twice(21), std::popcount(255u));
  try {
    throw std::runtime_error("thrown");
  } catch (const std::exception& error) {
    std::printf("caught: %s\n", error.what());
  }
  std::printf("a last line without a newline");
  return 0;
}
