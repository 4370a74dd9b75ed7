// expect: reversed: dlrow olleh
#include <stdio.h>
#include <string.h>
int main(void) {
  char text[] = "hello world";
  size_t n = strlen(text);
  for (size_t i = 0; i < n / 2; i++) { char c = text[i]; text[i] = text[n - 1 - i]; text[n - 1 - i] = c; }
  printf("reversed: %s\n", text);
  return 0;
}
