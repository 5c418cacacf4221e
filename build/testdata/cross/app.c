/* A small program for the cross-build tests: it needs libm, pthreads
 * and a private library found through an $ORIGIN RUNPATH. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>

int priv_answer(void);

static void *worker(void *arg) {
	*(double *)arg = sqrt(1764.0);
	return NULL;
}

int main(void) {
	pthread_t t;
	double r = 0;
	if (pthread_create(&t, NULL, worker, &r) != 0)
		return 1;
	pthread_join(t, NULL);
	printf("sqrt=%.0f priv=%d cos0=%.0f\n", r, priv_answer(), cos(0.0));
	return 0;
}
