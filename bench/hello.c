/* The launch benchmark's app: prints one line and exits, or with the
 * argument "sleep" waits for a signal (for the memory measurement). */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
	if (argc > 1 && strcmp(argv[1], "sleep") == 0) {
		pause();
		return 0;
	}
	puts("hello");
	return 0;
}
