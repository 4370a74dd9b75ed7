// expect: sum of squares 1..10 = 385
#include <stdio.h>
int main(void) {
  int total = 0;
  for (int i = 1; i <= 10; i++) total += i * i;
  printf("sum of squares 1..10 = %d\n", total);
  return 0;
}
