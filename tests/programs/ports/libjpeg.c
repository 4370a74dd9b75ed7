/* -sUSE_LIBJPEG=1: compress a 16x8 RGB image to JPEG in memory, decompress it, print its size
   and a pixel (libjpeg-turbo, the libjpeg 6b API). */
#include <stdio.h>
#include <stdlib.h>
#include <jpeglib.h>

int main(void) {
  enum { W = 16, H = 8 };
  static unsigned char rgb[W * H * 3];
  for (int i = 0; i < W * H; i++) {
    rgb[i * 3] = 200;
    rgb[i * 3 + 1] = 100;
    rgb[i * 3 + 2] = 50;
  }
  struct jpeg_compress_struct out;
  struct jpeg_error_mgr errors;
  out.err = jpeg_std_error(&errors);
  jpeg_create_compress(&out);
  unsigned char *jpeg = NULL;
  unsigned long size = 0;
  jpeg_mem_dest(&out, &jpeg, &size);
  out.image_width = W;
  out.image_height = H;
  out.input_components = 3;
  out.in_color_space = JCS_RGB;
  jpeg_set_defaults(&out);
  jpeg_set_quality(&out, 90, TRUE);
  jpeg_start_compress(&out, TRUE);
  while (out.next_scanline < H) {
    JSAMPROW row = &rgb[out.next_scanline * W * 3];
    jpeg_write_scanlines(&out, &row, 1);
  }
  jpeg_finish_compress(&out);
  jpeg_destroy_compress(&out);
  printf("libjpeg %d (turbo %d): %s\n", JPEG_LIB_VERSION, LIBJPEG_TURBO_VERSION_NUMBER,
         jpeg[0] == 0xFF && jpeg[1] == 0xD8 ? "a JPEG" : "not a JPEG");

  struct jpeg_decompress_struct in;
  in.err = jpeg_std_error(&errors);
  jpeg_create_decompress(&in);
  jpeg_mem_src(&in, jpeg, size);
  jpeg_read_header(&in, TRUE);
  jpeg_start_decompress(&in);
  unsigned char *line = malloc(in.output_width * in.output_components);
  unsigned char pixel[3] = {0, 0, 0};
  while (in.output_scanline < in.output_height) {
    JSAMPROW row = line;
    jpeg_read_scanlines(&in, &row, 1);
    if (in.output_scanline == 4) {  /* row 3, x = 5 */
      for (int c = 0; c < 3; c++) pixel[c] = line[5 * 3 + c];
    }
  }
  printf("decoded %ux%u, %d components, pixel (5,3) = %d,%d,%d\n", in.output_width,
         in.output_height, in.output_components, pixel[0], pixel[1], pixel[2]);
  jpeg_finish_decompress(&in);
  jpeg_destroy_decompress(&in);
  free(line);
  free(jpeg);
  return 0;
}
