/* -sUSE_OGG=1: put two packets into an Ogg stream, then read the pages back. */
#include <ogg/ogg.h>
#include <stdio.h>
#include <string.h>

int main(void) {
  ogg_stream_state out, in;
  ogg_sync_state sync;
  ogg_stream_init(&out, 0x5eed);
  unsigned char first[] = "first packet", second[] = "second packet";
  ogg_packet packet = {first, sizeof first, 1, 0, 0, 0};
  ogg_stream_packetin(&out, &packet);
  packet = (ogg_packet){second, sizeof second, 0, 1, 1, 1};
  ogg_stream_packetin(&out, &packet);

  ogg_sync_init(&sync);
  ogg_page page;
  int pages = 0;
  while (ogg_stream_flush(&out, &page)) {
    char *buffer = ogg_sync_buffer(&sync, page.header_len + page.body_len);
    memcpy(buffer, page.header, (size_t)page.header_len);
    memcpy(buffer + page.header_len, page.body, (size_t)page.body_len);
    ogg_sync_wrote(&sync, page.header_len + page.body_len);
    pages++;
  }
  ogg_stream_init(&in, 0x5eed);
  int packets = 0;
  while (ogg_sync_pageout(&sync, &page) == 1) {
    printf("page: serial %x, bos %d, eos %d\n", ogg_page_serialno(&page), ogg_page_bos(&page) != 0,
           ogg_page_eos(&page) != 0);
    ogg_stream_pagein(&in, &page);
    while (ogg_stream_packetout(&in, &packet) == 1)
      printf("packet %d: %s\n", ++packets, (char *)packet.packet);
  }
  printf("%d page(s) written, %d packet(s) read\n", pages, packets);
  return 0;
}
