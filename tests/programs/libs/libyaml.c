/* libyaml: parse a small document and print its events (emcc_trio/testing/libraries.py). */
#include <stdio.h>
#include <string.h>
#include <yaml.h>

static const char *const NAMES[] = {
    "NONE",         "STREAM-START",  "STREAM-END", "DOCUMENT-START", "DOCUMENT-END",
    "ALIAS",        "SCALAR",        "SEQUENCE-START", "SEQUENCE-END", "MAPPING-START",
    "MAPPING-END",
};

int main(void) {
    const char *doc = "name: emcc\nlangs: [c, cpp]\ncount: 3\n";
    yaml_parser_t parser;
    yaml_event_t event;
    int done = 0, events = 0;
    printf("libyaml %s\n", yaml_get_version_string());
    if (!yaml_parser_initialize(&parser)) return 1;
    yaml_parser_set_input_string(&parser, (const unsigned char *)doc, strlen(doc));
    while (!done) {
        if (!yaml_parser_parse(&parser, &event)) {
            printf("parse error: %s\n", parser.problem);
            yaml_parser_delete(&parser);
            return 1;
        }
        if (event.type == YAML_SCALAR_EVENT)
            printf("%s %s\n", NAMES[event.type], (const char *)event.data.scalar.value);
        else
            printf("%s\n", NAMES[event.type]);
        done = event.type == YAML_STREAM_END_EVENT;
        events++;
        yaml_event_delete(&event);
    }
    yaml_parser_delete(&parser);
    printf("%d events\n", events);
    return 0;
}
