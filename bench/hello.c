/* The launch benchmark's app: prints one line and exits, or with the
 * argument "sleep" says ready and waits for a signal (memory and scale measurements). */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
	if (argc > 1 && strcmp(argv[1], "sleep") == 0) {
		puts("ready");
		fflush(stdout);
		pause();
		return 0;
	}
	puts("hello");
	return 0;
}
