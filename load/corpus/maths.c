// expect: pi ~ 3.14159
#include <math.h>
#include <stdio.h>
int main(void) {
  double pi = 4.0 * atan(1.0);
  printf("pi ~ %.5f\n", pi);
  return (int)(sqrt(pi) > 2.0);
}
