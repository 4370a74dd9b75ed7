/* A CPU bomb in constant memory: each static_assert runs a constexpr loop of 100 000 steps
   (under clang's per-evaluation step limit), and there are 2^12 of them, about 20 minutes
   of CPU here. Memory stays near 90 MB however fast or slow the machine is, so only a
   CPU-time or wall-clock cap (or a hang-up) can end it. */
constexpr unsigned spin(unsigned seed) {
  unsigned s = seed;
  for (unsigned i = 0; i < 100000; ++i) s = s * 1664525u + 1013904223u;
  return s;
}
#define S0 static_assert(spin(__COUNTER__) != 0x12345678u, "");
#define S1 S0 S0
#define S2 S1 S1
#define S3 S2 S2
#define S4 S3 S3
#define S5 S4 S4
#define S6 S5 S5
#define S7 S6 S6
#define S8 S7 S7
#define S9 S8 S8
#define S10 S9 S9
#define S11 S10 S10
#define S12 S11 S11
S12
int main() { return 0; }
