/* -sUSE_BZIP2=1: a round trip through BZ2_bzBuffToBuff*. */
#include <bzlib.h>
#include <stdio.h>
#include <string.h>

int main(void) {
  char text[2000], packed[2000], back[2000];
  for (int i = 0; i < 1999; i++) text[i] = "bzip2 "[i % 6];
  text[1999] = 0;
  unsigned int packed_len = sizeof packed, back_len = sizeof back;
  if (BZ2_bzBuffToBuffCompress(packed, &packed_len, text, 2000, 9, 0, 0) != BZ_OK) return 1;
  if (BZ2_bzBuffToBuffDecompress(back, &back_len, packed, packed_len, 0, 0) != BZ_OK) return 2;
  printf("bzip2 %.5s\n", BZ2_bzlibVersion());
  printf("2000 bytes -> %s than 200 -> %u bytes, %s\n", packed_len < 200 ? "fewer" : "more",
         back_len, memcmp(text, back, 2000) == 0 ? "same" : "different");
  return 0;
}
