// expect: apple=3 banana=1 cherry=2
#include <iostream>
#include <map>
#include <sstream>
#include <string>
int main() {
  std::map<std::string, int> counts;
  std::istringstream words("apple cherry apple banana cherry apple");
  for (std::string w; words >> w;) counts[w]++;
  std::string sep;
  for (const auto &entry : counts) { std::cout << sep << entry.first << "=" << entry.second; sep = " "; }
  std::cout << "\n";
}
