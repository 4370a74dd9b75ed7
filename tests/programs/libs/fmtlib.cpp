// fmt: format, print and write a file through fmt::output_file (emcc_trio/testing/libraries.py).
#include <fmt/core.h>
#include <fmt/format.h>
#include <fmt/os.h>

#include <fstream>
#include <string>
#include <vector>

int main() {
  fmt::print("fmt {}\n", FMT_VERSION);
  std::string line = fmt::format("{:>8}|{:.3f}", "x", 3.14159);
  fmt::print("{}\n", line);
  fmt::print("{}-{:04x}-{:+d}\n", "hex", 255, 7);
  fmt::print("{}\n", 1.0 / 3);
  fmt::print("{:*^11}\n", "mid");
  {
    auto out = fmt::output_file("/tmp/fmt-test.txt");
    out.print("written {} times\n", 2);
  }
  std::ifstream in("/tmp/fmt-test.txt");
  std::string back;
  std::getline(in, back);
  fmt::print("file: {}\n", back);
  return 0;
}
