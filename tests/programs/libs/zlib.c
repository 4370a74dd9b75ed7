/* zlib: deflate and inflate a string, in memory and through a gzip file
   (emcc_trio/testing/libraries.py). */
#include <stdio.h>
#include <string.h>
#include <zlib.h>

int main(void) {
    const char *text = "hello, hello, hello from zlib inside wasm";
    uLong len = (uLong)strlen(text) + 1;
    Bytef packed[256], unpacked[256];
    uLongf plen = sizeof packed, ulen = sizeof unpacked;
    char back[256];
    printf("zlib %s\n", zlibVersion());
    printf("crc32 %08lx adler32 %08lx\n", crc32(0L, (const Bytef *)text, len - 1),
           adler32(1L, (const Bytef *)text, len - 1));
    if (compress2(packed, &plen, (const Bytef *)text, len, Z_BEST_COMPRESSION) != Z_OK) return 1;
    if (uncompress(unpacked, &ulen, packed, plen) != Z_OK) return 1;
    printf("deflated %lu -> %lu bytes\n", len, plen);
    printf("inflated: %s\n", (const char *)unpacked);
    gzFile out = gzopen("/tmp/zlib-test.gz", "wb");
    if (!out) return 1;
    gzprintf(out, "%s, %d\n", "gzip file", 42);
    gzclose(out);
    gzFile in = gzopen("/tmp/zlib-test.gz", "rb");
    if (!in || !gzgets(in, back, sizeof back)) return 1;
    gzclose(in);
    printf("gz: %s", back);
    return 0;
}
