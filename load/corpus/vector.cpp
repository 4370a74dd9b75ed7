// expect: squares 1,4,9,16,25 sum=55 mean=11.00
#include <cstdio>
#include <numeric>
#include <string>
#include <vector>
int main() {
  std::vector<int> v;
  for (int i = 1; i <= 5; i++) v.push_back(i * i);
  std::string joined;
  for (int x : v) joined += (joined.empty() ? "" : ",") + std::to_string(x);
  int sum = std::accumulate(v.begin(), v.end(), 0);
  std::printf("squares %s sum=%d mean=%.2f\n", joined.c_str(), sum, sum / double(v.size()));
}
