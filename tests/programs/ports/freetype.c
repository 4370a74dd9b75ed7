/* -sUSE_FREETYPE=1: load a font from memory (the small BDF font of bdf_font.h, so the test
   needs no font file), render a glyph, print its bitmap size and the bitmap itself. */
#include <ft2build.h>
#include FT_FREETYPE_H
#include <stdio.h>
#include <string.h>

#include "bdf_font.h"

int main(void) {
  FT_Library library;
  FT_Face face;
  FT_Int major, minor, patch;
  if (FT_Init_FreeType(&library)) return 1;
  FT_Library_Version(library, &major, &minor, &patch);
  if (FT_New_Memory_Face(library, (const FT_Byte *)font, (FT_Long)strlen(font), 0, &face)) return 2;
  if (FT_Load_Char(face, 'A', FT_LOAD_RENDER)) return 3;
  FT_Bitmap *bitmap = &face->glyph->bitmap;
  printf("FreeType %d.%d.%d, %s font, %ld glyph(s)\n", major, minor, patch,
         face->face_flags & FT_FACE_FLAG_FIXED_SIZES ? "a bitmap" : "an outline", face->num_glyphs);
  printf("glyph A: %ux%u\n", bitmap->width, bitmap->rows);
  for (unsigned y = 0; y < bitmap->rows; y++) {
    for (unsigned x = 0; x < bitmap->width; x++) {
      unsigned char byte = bitmap->buffer[y * bitmap->pitch + x / 8];
      putchar(byte & (0x80 >> (x % 8)) ? '#' : '.');
    }
    putchar('\n');
  }
  FT_Done_Face(face);
  FT_Done_FreeType(library);
  return 0;
}
