/* -sUSE_GIFLIB=1: write a 4x2 GIF to memory, read it back, print its size and a pixel. */
#include <gif_lib.h>
#include <stdio.h>
#include <string.h>

static GifByteType gif[4096];
static int written, read_at;

static int put(GifFileType *file, const GifByteType *data, int length) {
  (void)file;
  memcpy(gif + written, data, (size_t)length);
  written += length;
  return length;
}

static int get(GifFileType *file, GifByteType *data, int length) {
  (void)file;
  if (length > written - read_at) length = written - read_at;
  memcpy(data, gif + read_at, (size_t)length);
  read_at += length;
  return length;
}

int main(void) {
  GifColorType colours[4] = {{0, 0, 0}, {255, 0, 0}, {0, 255, 0}, {0, 0, 255}};
  int error = 0;
  GifFileType *out = EGifOpen(NULL, put, &error);
  ColorMapObject *map = GifMakeMapObject(4, colours);
  if (!out || EGifPutScreenDesc(out, 4, 2, 2, 0, map) == GIF_ERROR) return 1;
  if (EGifPutImageDesc(out, 0, 0, 4, 2, false, NULL) == GIF_ERROR) return 2;
  GifPixelType rows[2][4] = {{0, 1, 2, 3}, {3, 2, 1, 0}};
  for (int y = 0; y < 2; y++)
    if (EGifPutLine(out, rows[y], 4) == GIF_ERROR) return 3;
  if (EGifCloseFile(out, &error) == GIF_ERROR) return 4;
  GifFreeMapObject(map);

  GifFileType *in = DGifOpen(NULL, get, &error);
  if (!in || DGifSlurp(in) == GIF_ERROR) return 5;
  SavedImage *image = &in->SavedImages[0];
  int index = image->RasterBits[1 * 4 + 2]; /* x=2, y=1 */
  GifColorType c = in->SColorMap->Colors[index];
  printf("giflib %d.%d.%d: %s, %dx%d, %d image(s)\n", GIFLIB_MAJOR, GIFLIB_MINOR, GIFLIB_RELEASE,
         memcmp(gif, "GIF8", 4) == 0 ? "a GIF" : "not a GIF", in->SWidth, in->SHeight,
         in->ImageCount);
  printf("pixel (2,1) = index %d = %d,%d,%d\n", index, c.Red, c.Green, c.Blue);
  DGifCloseFile(in, &error);
  return 0;
}
