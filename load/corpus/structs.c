// expect: area 12.0, perimeter 14.0
#include <stdio.h>
struct rect { double w, h; };
static double area(struct rect r) { return r.w * r.h; }
static double perimeter(struct rect r) { return 2 * (r.w + r.h); }
int main(void) {
  struct rect r = {3.0, 4.0};
  printf("area %.1f, perimeter %.1f\n", area(r), perimeter(r));
  return 0;
}
