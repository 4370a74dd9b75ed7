#include <stdio.h>
char big[96 << 20] = {1};
int main(int argc, char **argv) { (void)argv; printf("%d\n", big[argc]); return 0; }
