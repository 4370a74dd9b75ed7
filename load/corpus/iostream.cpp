// expect: hello from iostream 42
#include <iostream>
int main() { std::cout << "hello from iostream " << 6 * 7 << std::endl; }
