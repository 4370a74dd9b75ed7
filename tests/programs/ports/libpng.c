/* -sUSE_LIBPNG=1: encode a 3x2 RGBA image as PNG in memory, decode it, print its size and a
   pixel. */
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void) {
  unsigned char pixels[3 * 2 * 4];
  for (int i = 0; i < 6; i++) {
    pixels[i * 4 + 0] = (unsigned char)(40 * i);
    pixels[i * 4 + 1] = (unsigned char)(255 - 40 * i);
    pixels[i * 4 + 2] = 7;
    pixels[i * 4 + 3] = 255;
  }
  png_image out;
  memset(&out, 0, sizeof out);
  out.version = PNG_IMAGE_VERSION;
  out.width = 3;
  out.height = 2;
  out.format = PNG_FORMAT_RGBA;
  png_alloc_size_t size = 0;
  if (!png_image_write_to_memory(&out, NULL, &size, 0, pixels, 0, NULL)) return 1;
  unsigned char *png = malloc(size);
  if (!png_image_write_to_memory(&out, png, &size, 0, pixels, 0, NULL)) return 2;
  printf("libpng %s: encoded %s\n", png_get_libpng_ver(NULL),
         memcmp(png, "\x89PNG\r\n\x1a\n", 8) == 0 ? "a PNG" : "something else");

  png_image in;
  memset(&in, 0, sizeof in);
  in.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&in, png, size)) return 3;
  in.format = PNG_FORMAT_RGBA;
  unsigned char decoded[3 * 2 * 4];
  if (!png_image_finish_read(&in, NULL, decoded, 0, NULL)) return 4;
  const unsigned char *p = decoded + (1 * 3 + 2) * 4; /* x=2, y=1 */
  printf("decoded %ux%u, pixel (2,1) = %d,%d,%d,%d\n", in.width, in.height, p[0], p[1], p[2], p[3]);
  free(png);
  return 0;
}
