/* -sUSE_SDL=2: create a surface, fill it and a rectangle of it, blit it, read pixels back. */
#include <SDL2/SDL.h>
#include <stdio.h>

static Uint32 pixel(SDL_Surface *surface, int x, int y) {
  return *(Uint32 *)((Uint8 *)surface->pixels + y * surface->pitch + x * 4);
}

int main(void) {
  if (SDL_Init(0) != 0) return 1;
  SDL_version version;
  SDL_GetVersion(&version);
  SDL_Surface *surface = SDL_CreateRGBSurfaceWithFormat(0, 4, 3, 32, SDL_PIXELFORMAT_RGBA32);
  SDL_FillRect(surface, NULL, SDL_MapRGBA(surface->format, 10, 20, 30, 255));
  SDL_Rect rect = {1, 1, 2, 1};
  SDL_FillRect(surface, &rect, SDL_MapRGBA(surface->format, 200, 100, 50, 255));
  SDL_Surface *copy = SDL_CreateRGBSurfaceWithFormat(0, 4, 3, 32, SDL_PIXELFORMAT_RGBA32);
  SDL_BlitSurface(surface, NULL, copy, NULL);
  Uint8 r, g, b, a;
  printf("SDL %d.%d.%d, surface %dx%d\n", version.major, version.minor, version.patch,
         surface->w, surface->h);
  SDL_GetRGBA(pixel(copy, 2, 1), copy->format, &r, &g, &b, &a);
  printf("pixel (2,1) = %d,%d,%d,%d\n", r, g, b, a);
  SDL_GetRGBA(pixel(copy, 0, 0), copy->format, &r, &g, &b, &a);
  printf("pixel (0,0) = %d,%d,%d,%d\n", r, g, b, a);
  SDL_FreeSurface(copy);
  SDL_FreeSurface(surface);
  SDL_Quit();
  return 0;
}
