#ifndef UTIL_H
#define UTIL_H
int sum_of_squares(int n);
#endif
