/* -sUSE_ZLIB=1: inflate what deflate made. */
#include <stdio.h>
#include <string.h>
#include <zlib.h>

int main(void) {
  const char *text = "the zlib port, the zlib port, the zlib port";
  unsigned char packed[256], back[256];
  uLongf packed_len = sizeof packed, back_len = sizeof back;
  if (compress2(packed, &packed_len, (const Bytef *)text, strlen(text), 9) != Z_OK) return 1;
  if (uncompress(back, &back_len, packed, packed_len) != Z_OK) return 2;
  back[back_len] = 0;
  printf("zlib %s\n", zlibVersion());
  printf("deflated %u -> %s bytes\n", (unsigned)strlen(text), packed_len < strlen(text) ? "fewer" : "more");
  printf("inflated: %s\n", back);
  printf("crc32 %08lx\n", crc32(0, (const Bytef *)text, strlen(text)));
  return 0;
}
