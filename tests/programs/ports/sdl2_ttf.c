/* -sUSE_SDL_TTF=2: render text into an SDL surface with SDL2_ttf (FreeType and HarfBuzz,
   which it brings), from the small BDF font of bdf_font.h: no font file needed. */
#include <SDL2/SDL.h>
#include <SDL2/SDL_ttf.h>
#include <stdio.h>
#include <string.h>

#include "bdf_font.h"

int main(void) {
  if (SDL_Init(0) != 0 || TTF_Init() != 0) return 1;
  const SDL_version *version = TTF_Linked_Version();
  TTF_Font *face = TTF_OpenFontRW(SDL_RWFromConstMem(font, (int)strlen(font)), 1, 8);
  if (!face) { printf("open: %s\n", TTF_GetError()); return 2; }
  int w = 0, h = 0;
  TTF_SizeUTF8(face, "AA", &w, &h);
  SDL_Color white = {255, 255, 255, 255};
  SDL_Surface *text = TTF_RenderUTF8_Solid(face, "AA", white);
  if (!text) { printf("render: %s\n", TTF_GetError()); return 3; }
  printf("SDL2_ttf %d.%d.%d: \"AA\" is %dx%d, rendered %dx%d\n", version->major,
         version->minor, version->patch, w, h, text->w, text->h);
  SDL_FreeSurface(text);
  TTF_CloseFont(face);
  TTF_Quit();
  SDL_Quit();
  return 0;
}
