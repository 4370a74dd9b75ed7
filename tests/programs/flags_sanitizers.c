// AddressSanitizer and UndefinedBehaviorSanitizer: UBSan reports an overflow and carries on.
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

int main(void) {
#if defined(__has_feature) && __has_feature(address_sanitizer)
  printf("address sanitizer: on\n");
#endif
  volatile int big = INT_MAX;
  int wrapped = big + 1;
  int *numbers = malloc(4 * sizeof *numbers);
  for (int i = 0; i < 4; i++) numbers[i] = i * i;
  printf("numbers[3]=%d wrapped<0=%d\n", numbers[3], wrapped < 0);
  free(numbers);
  return 0;
}
