// -sUSE_BOOST_HEADERS=1: header-only Boost (string algorithms, format, optional).
#include <boost/algorithm/string.hpp>
#include <boost/format.hpp>
#include <boost/optional.hpp>
#include <boost/version.hpp>
#include <iostream>
#include <string>
#include <vector>

int main() {
  std::vector<std::string> words;
  boost::split(words, "ports,offline,in,wasm", boost::is_any_of(","));
  boost::optional<int> count = static_cast<int>(words.size());
  std::cout << "Boost " << BOOST_VERSION / 100000 << "." << BOOST_VERSION / 100 % 1000 << "\n";
  std::cout << boost::format("%1% words, the last %2%") % *count % boost::to_upper_copy(words.back())
            << "\n";
  return 0;
}
