/* -sUSE_VORBIS=1: make the three Vorbis header packets of a 44.1 kHz stereo stream (as an
   Ogg Vorbis file begins), then read them back as a decoder does. */
#include <stdio.h>
#include <vorbis/codec.h>
#include <vorbis/vorbisenc.h>

int main(void) {
  vorbis_info info;
  vorbis_comment comment;
  vorbis_dsp_state dsp;
  vorbis_info_init(&info);
  if (vorbis_encode_init_vbr(&info, 2, 44100, 0.4f) != 0) return 1;
  vorbis_comment_init(&comment);
  vorbis_comment_add_tag(&comment, "TITLE", "emcc-trio");
  vorbis_analysis_init(&dsp, &info);
  ogg_packet headers[3];
  vorbis_analysis_headerout(&dsp, &comment, &headers[0], &headers[1], &headers[2]);

  vorbis_info read_info;
  vorbis_comment read_comment;
  vorbis_info_init(&read_info);
  vorbis_comment_init(&read_comment);
  for (int i = 0; i < 3; i++)
    if (vorbis_synthesis_headerin(&read_info, &read_comment, &headers[i]) != 0) return 2 + i;
  printf("vorbis header: %d channel(s), %ld Hz\n", read_info.channels, read_info.rate);
  printf("comment: %s\n", vorbis_comment_query(&read_comment, "TITLE", 0));
  printf("vendor: %s\n", read_comment.vendor);
  return 0;
}
