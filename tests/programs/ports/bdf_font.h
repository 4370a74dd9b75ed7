/* A one-glyph BDF font ("A", 8x8) for the font ports' programs, sent beside them as a project
   file: FreeType reads it from memory, so the tests need no font file of the machine. */
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
