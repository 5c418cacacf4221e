package cgroup

import (
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"cimg.dev/cimg/manifest"
)

// TestLimitWriteSurvivesSignals (class: a launch failed by a signal the
// Go runtime sends itself): v1's memory.limit_in_bytes fails with EINTR
// whenever a signal is pending, and the runtime preempts its threads with
// SIGURG. Here the writing thread gets SIGURG as fast as another can send
// it, while it sets the limit again and again: every write must succeed.
// 50 launches at once failed so ("interrupted system call").
func TestLimitWriteSurvivesSignals(t *testing.T) {
	requireV1(t, "memory")
	cg, err := New(testID("eintr"), manifest.Limits{Memory: 64 << 20}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cg.Remove()
	limit := filepath.Join(cg.Dirs["memory"], "memory.limit_in_bytes")
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tid := unix.Gettid()
	var stop atomic.Bool
	done := make(chan int)
	go func() {
		n := 0
		for !stop.Load() {
			unix.Tgkill(os.Getpid(), tid, unix.SIGURG)
			n++
		}
		done <- n
	}()
	var failed error
	for i := 0; i < 5000 && failed == nil; i++ {
		failed = writeFile(limit, strconv.Itoa((64-i%2)<<20))
	}
	stop.Store(true)
	sent := <-done
	if failed != nil {
		t.Errorf("with SIGURG arriving (%d sent): %v", sent, failed)
	}
}
