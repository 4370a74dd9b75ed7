/* A compile of a few seconds: 2^14 small functions. */
#include <stdio.h>
#define X0(p) int p##a(int x){int s=0; for(int i=0;i<x;i++){s+=i*x%7;} return s;} int p##b(int x){return x*5+2;}
#define X1(p) X0(p##a) X0(p##b)
#define X2(p) X1(p##a) X1(p##b)
#define X3(p) X2(p##a) X2(p##b)
#define X4(p) X3(p##a) X3(p##b)
#define X5(p) X4(p##a) X4(p##b)
#define X6(p) X5(p##a) X5(p##b)
#define X7(p) X6(p##a) X6(p##b)
#define X8(p) X7(p##a) X7(p##b)
#define X9(p) X8(p##a) X8(p##b)
#define X10(p) X9(p##a) X9(p##b)
#define X11(p) X10(p##a) X10(p##b)
#define X12(p) X11(p##a) X11(p##b)
#define X13(p) X12(p##a) X12(p##b)
X13(f)
int main(void) { printf("medium\n"); return 0; }
