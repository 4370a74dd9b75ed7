/* -sUSE_SDL_IMAGE=2 -sSDL2_IMAGE_FORMATS=["jpg","png"]: load a PNG and a JPEG (made here with
   libpng and libjpeg, which the port brings) into SDL surfaces. */
#include <SDL2/SDL.h>
#include <SDL2/SDL_image.h>
#include <jpeglib.h>
#include <png.h>
#include <stdio.h>
#include <string.h>

static void show(const char *what, SDL_RWops *source, int is_format) {
  SDL_Surface *loaded = IMG_Load_RW(source, 1);
  if (!loaded) {
    printf("%s: %s\n", what, IMG_GetError());
    return;
  }
  SDL_Surface *surface = SDL_ConvertSurfaceFormat(loaded, SDL_PIXELFORMAT_RGBA32, 0);
  Uint8 *p = (Uint8 *)surface->pixels + 1 * surface->pitch + 1 * 4;
  printf("%s (detected: %d): %dx%d, pixel (1,1) = %d,%d,%d,%d\n", what, is_format, surface->w,
         surface->h, p[0], p[1], p[2], p[3]);
  SDL_FreeSurface(surface);
  SDL_FreeSurface(loaded);
}

int main(void) {
  unsigned char rgba[2 * 2 * 4] = {255, 0, 0, 255, 0, 255, 0, 255, 0, 0, 255, 255, 9, 8, 7, 255};
  png_image image;
  memset(&image, 0, sizeof image);
  image.version = PNG_IMAGE_VERSION;
  image.width = 2;
  image.height = 2;
  image.format = PNG_FORMAT_RGBA;
  static unsigned char png[1024];
  png_alloc_size_t png_size = sizeof png;
  if (!png_image_write_to_memory(&image, png, &png_size, 0, rgba, 0, NULL)) return 1;

  static unsigned char rgb[8 * 8 * 3];
  for (int i = 0; i < 8 * 8; i++) memcpy(rgb + i * 3, "\xc8\x64\x32", 3); /* 200,100,50 */
  struct jpeg_compress_struct out;
  struct jpeg_error_mgr errors;
  out.err = jpeg_std_error(&errors);
  jpeg_create_compress(&out);
  unsigned char *jpeg = NULL;
  unsigned long jpeg_size = 0;
  jpeg_mem_dest(&out, &jpeg, &jpeg_size);
  out.image_width = out.image_height = 8;
  out.input_components = 3;
  out.in_color_space = JCS_RGB;
  jpeg_set_defaults(&out);
  jpeg_start_compress(&out, TRUE);
  while (out.next_scanline < 8) {
    JSAMPROW row = &rgb[out.next_scanline * 8 * 3];
    jpeg_write_scanlines(&out, &row, 1);
  }
  jpeg_finish_compress(&out);
  jpeg_destroy_compress(&out);

  int flags = IMG_Init(IMG_INIT_JPG | IMG_INIT_PNG);
  printf("SDL2_image %d.%d.%d: JPEG %s, PNG %s\n", SDL_IMAGE_MAJOR_VERSION,
         SDL_IMAGE_MINOR_VERSION, SDL_IMAGE_PATCHLEVEL, flags & IMG_INIT_JPG ? "yes" : "no",
         flags & IMG_INIT_PNG ? "yes" : "no");
  SDL_RWops *png_source = SDL_RWFromConstMem(png, (int)png_size);
  show("PNG", png_source, IMG_isPNG(png_source));
  SDL_RWops *jpeg_source = SDL_RWFromConstMem(jpeg, (int)jpeg_size);
  show("JPEG", jpeg_source, IMG_isJPG(jpeg_source));
  free(jpeg);
  IMG_Quit();
  return 0;
}
