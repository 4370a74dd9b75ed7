// expect: fib(20) = 6765, max = 9
#include <algorithm>
#include <array>
#include <iostream>
template <unsigned N> struct Fib { static constexpr unsigned long value = Fib<N - 1>::value + Fib<N - 2>::value; };
template <> struct Fib<0> { static constexpr unsigned long value = 0; };
template <> struct Fib<1> { static constexpr unsigned long value = 1; };
int main() {
  std::array<int, 5> a{3, 9, 1, 7, 5};
  std::cout << "fib(20) = " << Fib<20>::value << ", max = " << *std::max_element(a.begin(), a.end()) << "\n";
}
