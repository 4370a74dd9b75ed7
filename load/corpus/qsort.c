// expect: sorted: 1 2 3 5 8 13
#include <stdio.h>
#include <stdlib.h>
static int cmp(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }
int main(void) {
  int v[] = {13, 2, 8, 1, 5, 3};
  qsort(v, 6, sizeof v[0], cmp);
  printf("sorted:");
  for (int i = 0; i < 6; i++) printf(" %d", v[i]);
  printf("\n");
  return 0;
}
