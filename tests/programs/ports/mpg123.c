/* -sUSE_MPG123=1: decode MPEG audio with libmpg123: three silent MPEG-1 Layer III frames made
   here (128 kbit/s, 44.1 kHz, stereo: a header and zeros), fed to the decoder from memory. */
#include <mpg123.h>
#include <stdio.h>
#include <string.h>

int main(void) {
  enum { FRAME = 417, FRAMES = 3 }; /* 144 * 128000 / 44100 bytes, no padding */
  static unsigned char mp3[FRAME * FRAMES];
  for (int i = 0; i < FRAMES; i++) memcpy(mp3 + i * FRAME, "\xff\xfb\x90\x64", 4);
  int error = MPG123_OK;
  mpg123_handle *decoder = mpg123_new(NULL, &error);
  if (!decoder || mpg123_open_feed(decoder) != MPG123_OK) return 1;
  static unsigned char pcm[32768];
  size_t done = 0, total = 0;
  long rate = 0;
  int channels = 0, encoding = 0;
  int status = mpg123_decode(decoder, mp3, sizeof mp3, pcm, sizeof pcm, &done);
  total += done;
  if (status == MPG123_NEW_FORMAT) mpg123_getformat(decoder, &rate, &channels, &encoding);
  while (status != MPG123_ERR && status != MPG123_NEED_MORE) {
    status = mpg123_decode(decoder, NULL, 0, pcm, sizeof pcm, &done);
    total += done;
  }
  printf("mpg123 API %d: %ld Hz, %d channel(s), 16-bit: %s\n", MPG123_API_VERSION, rate,
         channels, encoding == MPG123_ENC_SIGNED_16 ? "yes" : "no");
  printf("decoded %zu bytes of PCM\n", total);
  mpg123_delete(decoder);
  return 0;
}
