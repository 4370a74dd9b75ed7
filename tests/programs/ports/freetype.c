/* -sUSE_FREETYPE=1: load a font from memory (a small BDF font, so the test needs no font
   file), render a glyph, print its bitmap size and the bitmap itself. */
#include <ft2build.h>
#include FT_FREETYPE_H
#include <stdio.h>
#include <string.h>

static const char font[] =
    "STARTFONT 2.1\n"
    "FONT -emcc-trio-medium-r-normal--8-80-75-75-c-80-iso10646-1\n"
    "SIZE 8 75 75\n"
    "FONTBOUNDINGBOX 8 8 0 0\n"
    "STARTPROPERTIES 2\nFONT_ASCENT 8\nFONT_DESCENT 0\nENDPROPERTIES\n"
    "CHARS 1\n"
    "STARTCHAR A\nENCODING 65\nSWIDTH 500 0\nDWIDTH 8 0\nBBX 8 8 0 0\n"
    "BITMAP\n18\n24\n42\n42\n7E\n42\n42\n00\nENDCHAR\n"
    "ENDFONT\n";

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
