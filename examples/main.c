#include <stdio.h>
#include "util.h"

int main(void) {
  printf("sum of squares 1..4 = %d\n", sum_of_squares(4));
  return 0;
}
