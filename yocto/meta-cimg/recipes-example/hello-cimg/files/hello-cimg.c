/* hello-cimg: the example app of meta-cimg. It prints a greeting and, as a
 * service, a line every few seconds; it links libm so that the image it is
 * packed into carries a library besides the C library. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	const char *who = argc > 1 ? argv[1] : "world";
	const char *every = getenv("HELLO_EVERY");
	int n = every ? atoi(every) : 0;

	printf("hello, %s (sqrt(%d) = %.4f)\n", who, argc + 1, sqrt((double)argc + 1));
	fflush(stdout);
	for (int i = 1; n > 0; i++) {
		sleep((unsigned)n);
		printf("hello again, %s: %d\n", who, i);
		fflush(stdout);
	}
	return 0;
}
