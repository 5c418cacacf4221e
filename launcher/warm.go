package launcher

import (
	"runtime"

	"golang.org/x/sys/unix"

	"cimg.dev/cimg/internal/warmup"
)

// maxWarmers bounds the threads a cold launch reads ahead with.
const maxWarmers = 3

// warmUp starts reading the app's program and libraries ahead
// (internal/warmup) when they are not in the page cache, with a thread
// per core beyond the launch's own. A cold curl launch from the mount
// cache is mostly the kernel decompressing its 18 MB of libraries in
// curl's page faults; read ahead from the mount cache step on, that work
// overlaps the launcher's own until the app's exec (cold curl: 0.925× the
// time, 95 % CI 0.888–0.949, 40 pairs; warm unchanged, 0.994×). nil, with
// nothing started, when warm, on one core, with a private mount (the
// image is mounted later, by the launch thread), or when GOMAXPROCS is
// the caller's (oneP false).
func warmUp(p *Plan, oneP bool) *warmup.Warmup {
	workers := min(runtime.NumCPU()-1, maxWarmers)
	if workers < 1 || p.Image == "" || len(p.Argv) == 0 || !oneP {
		return nil
	}
	root, err := unix.Open(p.Image, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	defer unix.Close(root)
	w := warmup.Start(root, p.Argv[0], p.Workdir, p.Env, workers)
	if w != nil {
		// Run's one P would keep the readers' Go code waiting on the
		// launch's; their time is mostly in the kernel, off any P.
		runtime.GOMAXPROCS(1 + workers)
	}
	return w
}

// stopWarmUp ends a warm-up and gives the launch back its one P.
func stopWarmUp(w *warmup.Warmup) {
	if w != nil {
		w.Stop()
		runtime.GOMAXPROCS(1)
	}
}
