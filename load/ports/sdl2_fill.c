// expect: sdl2 64x48 filled 1,2,3
#include <SDL2/SDL.h>
#include <stdio.h>

int main(void) {
  SDL_Surface *surface = SDL_CreateRGBSurfaceWithFormat(0, 64, 48, 32, SDL_PIXELFORMAT_RGBA32);
  SDL_FillRect(surface, NULL, SDL_MapRGBA(surface->format, 1, 2, 3, 255));
  const Uint8 *pixel = (const Uint8 *)surface->pixels + 47 * surface->pitch + 63 * 4;
  printf("sdl2 %dx%d filled %d,%d,%d\n", surface->w, surface->h, pixel[0], pixel[1], pixel[2]);
  SDL_FreeSurface(surface);
  return 0;
}
