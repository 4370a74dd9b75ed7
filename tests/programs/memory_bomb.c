/* A memory bomb that allocates fast: each DUP pastes an identifier to itself, so the one
   identifier declared below is 2^30 characters long, and clang keeps every intermediate
   spelling. It needs gigabytes, and it passes 512 MB after about 1.3 s of CPU here (the
   macro-expansion bombs that double a token list need 5x that), so a memory cap ends it
   long before a CPU-time cap of several seconds could, on a machine several times slower too. */
#define PASTE(a, b) a##b
#define XPASTE(a, b) PASTE(a, b)
#define DUP(x) XPASTE(x, x)
#define D5(x) DUP(DUP(DUP(DUP(DUP(x)))))
int D5(D5(D5(D5(D5(D5(a))))));
int main(void) { return 0; }
