#include <stdio.h>

int main(void) {
  printf("hello from a raw body\n");
  return 0;
}
