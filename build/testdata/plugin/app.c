/* The program of the input-closure tests, linked statically so that a
 * sysroot without a libc can hold it. */
#include <stdio.h>

int main(void) {
	puts("static app");
	return 0;
}
