/* -sUSE_SDL_MIXER=2: SDL2_mixer links with its default codecs, and its Ogg Vorbis decoder
   (the vorbis and ogg ports, which it brings) starts. Playing needs an audio device, which
   a browser has and node does not. */
#include <SDL2/SDL.h>
#include <SDL2/SDL_mixer.h>
#include <stdio.h>

int main(void) {
  if (SDL_Init(0) != 0) return 1;
  const SDL_version *version = Mix_Linked_Version();
  int started = Mix_Init(MIX_INIT_OGG);
  printf("SDL2_mixer %d.%d.%d\n", version->major, version->minor, version->patch);
  printf("Ogg Vorbis decoder: %s\n", (started & MIX_INIT_OGG) ? "started" : Mix_GetError());
  printf("MP3 decoder: %s\n", (Mix_Init(MIX_INIT_MP3) & MIX_INIT_MP3) ? "started" : "not built");
  Mix_Quit();
  SDL_Quit();
  return 0;
}
