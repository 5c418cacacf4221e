/* The store benchmark's app (scripts/bench-store.sh): it says when it is
 * ready and when it stops serving, as lines appended to /data/stamps (a
 * volume the benchmark reads from outside):
 *   ready VERSION NS   first thing in main (VERSION is the image's /version)
 *   stop VERSION NS    on SIGTERM, then it exits
 * NS is CLOCK_REALTIME in nanoseconds (no namespace changes that clock).
 * "ready serve" (the default) then waits for SIGTERM; "ready once" exits
 * at once (a plain launch). */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char version[32] = "unknown";

static void stamp(const char *what) {
	struct timespec ts;
	char line[96];
	clock_gettime(CLOCK_REALTIME, &ts);
	int n = snprintf(line, sizeof line, "%s %s %lld\n", what, version,
			 (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
	int fd = open("/data/stamps", O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, line, n) != n)
		_exit(3);
	close(fd);
}

static void on_term(int sig) {
	(void)sig;
	stamp("stop");
	_exit(0);
}

int main(int argc, char **argv) {
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_term;
	sigaction(SIGTERM, &sa, NULL);
	int fd = open("/version", O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		ssize_t n = read(fd, version, sizeof version - 1);
		version[n > 0 ? n : 0] = 0;
		version[strcspn(version, "\n")] = 0;
		close(fd);
	}
	stamp("ready");
	if (argc > 1 && strcmp(argv[1], "once") == 0)
		return 0;
	for (;;)
		pause();
}
