/* Two threads add to one counter under a mutex; main joins them and prints the sum. */
#include <pthread.h>
#include <stdio.h>

static int counter;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static void *add(void *arg) {
  for (int i = 0; i < 1000; i++) {
    pthread_mutex_lock(&lock);
    counter += *(int *)arg;
    pthread_mutex_unlock(&lock);
  }
  return NULL;
}

int main(void) {
  pthread_t threads[2];
  int steps[2] = {1, 2};
  for (int i = 0; i < 2; i++) pthread_create(&threads[i], NULL, add, &steps[i]);
  for (int i = 0; i < 2; i++) pthread_join(threads[i], NULL);
  printf("two threads counted %d\n", counter);
  return 0;
}
