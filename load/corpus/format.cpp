// expect: [  7] [3.500] [hex ff]
#include <cstdio>
#include <string>
int main() {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "[%3d] [%.3f] [hex %x]", 7, 3.5, 255);
  std::puts(std::string(buffer).c_str());
}
