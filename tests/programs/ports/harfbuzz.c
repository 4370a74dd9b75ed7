/* -sUSE_HARFBUZZ=1: shape text with HarfBuzz over a FreeType face (the small BDF font of
   bdf_font.h, so the test needs no font file): glyphs, clusters and advances. */
#include <ft2build.h>
#include FT_FREETYPE_H
#include <hb-ft.h>
#include <hb.h>
#include <stdio.h>
#include <string.h>

#include "bdf_font.h"

int main(void) {
  FT_Library library;
  FT_Face face;
  if (FT_Init_FreeType(&library)) return 1;
  if (FT_New_Memory_Face(library, (const FT_Byte *)font, (FT_Long)strlen(font), 0, &face)) return 2;
  hb_font_t *hb_font = hb_ft_font_create_referenced(face);
  hb_buffer_t *buffer = hb_buffer_create();
  hb_buffer_add_utf8(buffer, "AAA", -1, 0, -1);
  hb_buffer_guess_segment_properties(buffer);
  hb_shape(hb_font, buffer, NULL, 0);
  unsigned int count = 0;
  hb_glyph_info_t *info = hb_buffer_get_glyph_infos(buffer, &count);
  hb_glyph_position_t *position = hb_buffer_get_glyph_positions(buffer, &count);
  printf("HarfBuzz %s: %u glyph(s), direction %s\n", hb_version_string(), count,
         hb_direction_to_string(hb_buffer_get_direction(buffer)));
  for (unsigned int i = 0; i < count; i++)
    printf("glyph %u cluster %u advance %d\n", info[i].codepoint, info[i].cluster,
           position[i].x_advance / 64);
  hb_buffer_destroy(buffer);
  hb_font_destroy(hb_font);
  FT_Done_FreeType(library);
  return 0;
}
