/* zstd: compress a buffer, decompress it, compare (emcc_trio/testing/libraries.py). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

int main(void) {
    static char input[10000];
    const char *line = "the quick brown fox jumps over the lazy dog; ";
    size_t n = strlen(line), i;
    for (i = 0; i < sizeof input; i++) input[i] = line[i % n];
    size_t bound = ZSTD_compressBound(sizeof input);
    char *packed = malloc(bound), *unpacked = malloc(sizeof input);
    size_t csize = ZSTD_compress(packed, bound, input, sizeof input, 3);
    if (ZSTD_isError(csize)) {
        printf("compress: %s\n", ZSTD_getErrorName(csize));
        return 1;
    }
    unsigned long long content = ZSTD_getFrameContentSize(packed, csize);
    size_t dsize = ZSTD_decompress(unpacked, sizeof input, packed, csize);
    if (ZSTD_isError(dsize)) {
        printf("decompress: %s\n", ZSTD_getErrorName(dsize));
        return 1;
    }
    printf("zstd %s\n", ZSTD_versionString());
    printf("input %zu bytes, compressed %zu bytes, frame says %llu\n", sizeof input, csize,
           content);
    printf("decompressed %zu bytes\n", dsize);
    printf(dsize == sizeof input && memcmp(input, unpacked, dsize) == 0 ? "roundtrip ok\n"
                                                                          : "roundtrip FAILED\n");
    free(packed);
    free(unpacked);
    return 0;
}
