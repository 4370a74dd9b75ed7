// Minimal UBSan runtime, SAFE_HEAP, dlmalloc, full LTO at -O1; main exported directly.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void) {
  char *text = malloc(16);
  strcpy(text, "safe heap");
  printf("%s, %s\n", text, NAME);
  free(text);
  printf("flushed by EXIT_RUNTIME");
  return 0;
}
