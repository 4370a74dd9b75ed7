/* -sUSE_SDL_IMAGE=2 -sSDL2_IMAGE_FORMATS=["png"]: load a PNG (made here with libpng, which the
   port brings) into an SDL surface. */
#include <SDL2/SDL.h>
#include <SDL2/SDL_image.h>
#include <png.h>
#include <stdio.h>
#include <string.h>

int main(void) {
  unsigned char rgba[2 * 2 * 4] = {255, 0, 0, 255, 0, 255, 0, 255, 0, 0, 255, 255, 9, 8, 7, 255};
  png_image image;
  memset(&image, 0, sizeof image);
  image.version = PNG_IMAGE_VERSION;
  image.width = 2;
  image.height = 2;
  image.format = PNG_FORMAT_RGBA;
  static unsigned char png[1024];
  png_alloc_size_t size = sizeof png;
  if (!png_image_write_to_memory(&image, png, &size, 0, rgba, 0, NULL)) return 1;

  if (IMG_Init(IMG_INIT_PNG) != IMG_INIT_PNG) return 2;
  SDL_RWops *source = SDL_RWFromConstMem(png, (int)size);
  printf("SDL2_image %d.%d.%d, is a PNG: %d\n", SDL_IMAGE_MAJOR_VERSION, SDL_IMAGE_MINOR_VERSION,
         SDL_IMAGE_PATCHLEVEL, IMG_isPNG(source));
  SDL_Surface *loaded = IMG_Load_RW(source, 1);
  if (!loaded) return 3;
  SDL_Surface *surface = SDL_ConvertSurfaceFormat(loaded, SDL_PIXELFORMAT_RGBA32, 0);
  Uint8 *p = (Uint8 *)surface->pixels + 1 * surface->pitch + 1 * 4;
  printf("loaded %dx%d, pixel (1,1) = %d,%d,%d,%d\n", surface->w, surface->h, p[0], p[1], p[2],
         p[3]);
  SDL_FreeSurface(surface);
  SDL_FreeSurface(loaded);
  IMG_Quit();
  return 0;
}
