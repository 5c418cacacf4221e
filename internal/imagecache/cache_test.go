package imagecache

// These tests mount for real (loop devices, squashfs) and need root, as
// CI has; they fail without it.

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"cimg.dev/cimg/build"
	"cimg.dev/cimg/format"
	"cimg.dev/cimg/internal/mounttest"
	"cimg.dev/cimg/manifest"
)

// The main goroutine keeps the main thread: launch's threads, which
// unshare their mount namespace and end with it, are never the main
// thread, which would be parked, not ended, and with it the namespace
// (and /proc/self, the main thread's, would show that namespace).
func init() { runtime.LockOSThread() }

// testImage builds a small image whose /etc/data is data, and opens it
// as the launcher does.
func testImage(t testing.TB, data []byte) (string, *os.File, *format.Image) {
	t.Helper()
	mounttest.RequireRoot(t)
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	for p, b := range map[string][]byte{"bin/app": []byte("#!/bin/sh\n"), "etc/data": data} {
		os.MkdirAll(filepath.Join(root, filepath.Dir(p)), 0o755)
		if err := os.WriteFile(filepath.Join(root, p), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	m := manifest.Default()
	m.Name, m.Arch = "cachetest", manifest.CanonicalArch(runtime.GOARCH)
	out := filepath.Join(dir, "cachetest.cimg")
	if _, err := build.Build(context.Background(), build.Spec{Manifest: &m, Rootfs: root, Entrypoint: "/bin/app", Output: out}); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	fi, _ := f.Stat()
	img, err := format.Open(f, fi.Size())
	if err != nil {
		t.Fatal(err)
	}
	return out, f, img
}

// launch does what a launch does with the cache, in the same order:
// Mount (in the host's namespace), a bind of the cache mount in a mount
// namespace of its own (a thread of its own, as the launcher's), Release,
// then a read of /etc/data through the bind, compared with want. The
// bind goes when hold is closed.
func launch(state string, f *os.File, img *format.Image, target string, want []byte, hold <-chan struct{}) error {
	l, err := Mount(state, f, img, false)
	if err != nil {
		return fmt.Errorf("mount: %w", err)
	}
	defer l.Release()
	bound := make(chan error)
	read := make(chan error)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread goes with its namespace
		err := unix.Unshare(unix.CLONE_NEWNS)
		if err == nil {
			err = unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, "")
		}
		if err == nil {
			if err = unix.Mount(l.Dir, target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
				err = fmt.Errorf("bind %s: %w", l.Dir, err)
			}
		}
		if err == nil {
			// This namespace's copy of the cache mount goes, as the
			// launcher's goes with the old root after pivot_root.
			if err = unix.Unmount(l.Dir, unix.MNT_DETACH); err != nil {
				err = fmt.Errorf("detach this namespace's copy of %s: %w", l.Dir, err)
			}
		}
		bound <- err
		if err != nil {
			return
		}
		b, err := os.ReadFile(filepath.Join(target, "etc/data"))
		if err == nil && !bytes.Equal(b, want) {
			err = fmt.Errorf("read %q through the bind, want %q", b, want)
		}
		read <- err
		<-hold
		// Undone rather than left to the thread's end: a locked thread
		// that is the process's main thread is parked, not ended.
		unix.Unmount(target, unix.MNT_DETACH)
	}()
	if err := <-bound; err != nil {
		return err
	}
	l.Release()
	return <-read
}

// leftovers lists what of the cache remains: mounts under state, loop
// devices of the image files, and files in STATE/images but .gc.lock.
func leftovers(state string, images ...string) []string {
	var left []string
	mi, _ := os.ReadFile("/proc/thread-self/mountinfo")
	for _, line := range strings.Split(string(mi), "\n") {
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], state+"/") {
			left = append(left, "mount "+f[4])
		}
	}
	backing, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, p := range backing {
		b, _ := os.ReadFile(p)
		for _, img := range images {
			if s := strings.TrimSpace(string(b)); s == img || s == img+" (deleted)" {
				left = append(left, "loop device "+filepath.Base(filepath.Dir(filepath.Dir(p)))+" of "+s)
			}
		}
	}
	entries, _ := os.ReadDir(filepath.Join(state, "images"))
	for _, e := range entries {
		if e.Name() != gcLock {
			left = append(left, "file images/"+e.Name())
		}
	}
	return left
}

// gcUntilClean runs GC until nothing of the cache is left (namespaces
// of ended threads go a little after them), or fails.
func gcUntilClean(t *testing.T, state string, images ...string) {
	t.Helper()
	var left []string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if _, err := GC(state); err != nil {
			t.Errorf("gc: %v", err)
		}
		if left = leftovers(state, images...); len(left) == 0 {
			return
		}
	}
	t.Errorf("after the last gc, left: %q", left)
	for _, l := range left {
		if dir, ok := strings.CutPrefix(l, "mount "); ok {
			unix.Unmount(dir, unix.MNT_DETACH) // so that the temporary directory goes
		}
	}
}

// TestGCRacesLaunches runs launches while GC runs in a loop: no launch
// may fail, and the last GC must leave nothing behind.
func TestGCRacesLaunches(t *testing.T) {
	data := []byte("racing gc")
	imgPath, f, img := testImage(t, data)
	state := filepath.Join(t.TempDir(), "state")
	target := t.TempDir()
	const launches, parallel = 300, 8
	stop := make(chan struct{})
	var gcs, unmounted atomic.Int64
	var gcWG sync.WaitGroup
	gcWG.Add(1)
	go func() {
		defer gcWG.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			done, err := GC(state)
			if err != nil {
				t.Errorf("gc: %v", err)
			}
			gcs.Add(1)
			unmounted.Add(int64(len(done)))
		}
	}()
	var failed atomic.Int64
	var wg sync.WaitGroup
	sem := make(chan struct{}, parallel)
	for i := 0; i < launches; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			hold := make(chan struct{})
			// Instances live a little: some are running when gc looks.
			time.AfterFunc(time.Duration(i%5)*time.Millisecond, func() { close(hold) })
			if err := launch(state, f, img, target, data, hold); err != nil {
				if failed.Add(1) <= 5 {
					t.Errorf("launch %d: %v", i, err)
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	gcWG.Wait()
	t.Logf("%d launches, %d failed; %d gc runs unmounted the cache %d times", launches, failed.Load(), gcs.Load(), unmounted.Load())
	if failed.Load() > 0 {
		t.Errorf("%d of %d launches failed", failed.Load(), launches)
	}
	if unmounted.Load() == 0 {
		t.Errorf("gc never unmounted the cache during the launches: the race was not exercised")
	}
	gcUntilClean(t, state, imgPath)
}

// TestDeletedImageUnmounted: once an image file is deleted (rebuilt),
// the next launch that mounts unmounts its cache mount at Release, if no
// instance uses it; GC also removes leftover directories and lock files,
// and leaves a mount that an instance uses.
func TestDeletedImageUnmounted(t *testing.T) {
	oldPath, oldF, oldImg := testImage(t, []byte("old"))
	newPath, newF, newImg := testImage(t, []byte("new"))
	state := filepath.Join(t.TempDir(), "state")
	target := t.TempDir()
	if err := launch(state, oldF, oldImg, target, []byte("old"), closed()); err != nil {
		t.Fatal(err)
	}
	oldDir := filepath.Join(state, "images", cacheName(oldImg.Footer.RootHash))
	os.Mkdir(filepath.Join(state, "images", "0123456789abcdef0123456789abcdef"), 0o700) // a leftover
	if err := os.Remove(oldPath); err != nil {
		t.Fatal(err)
	}
	// An instance of the new image stays while GC runs.
	hold := make(chan struct{})
	if err := launch(state, newF, newImg, target, []byte("new"), hold); err != nil {
		t.Fatal(err)
	}
	s, _ := openState(state, false)
	if s.isMounted(filepath.Base(oldDir)) {
		t.Errorf("%s still mounted after its file was deleted and a launch mounted", oldDir)
	}
	newName := cacheName(newImg.Footer.RootHash)
	if !s.isMounted(newName) {
		t.Errorf("%s not mounted", newName)
	}
	if done, err := GC(state); err != nil || len(done) > 0 {
		t.Errorf("GC unmounted %q (%v), while an instance uses it", done, err)
	}
	left := leftovers(state, oldPath, newPath)
	if len(left) != 3 || left[0] != "mount "+filepath.Join(s.imagesPath(), newName) ||
		!strings.HasSuffix(left[1], " of "+newPath) || left[2] != "file images/"+newName {
		t.Errorf("after GC: %q, want only the new image's mount and loop device", left)
	}
	s.close()
	close(hold)
	gcUntilClean(t, state, oldPath, newPath)
}

func closed() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}

// BenchmarkMountWarm is a warm launch's cache work: Mount of a mounted
// image, then Release.
func BenchmarkMountWarm(b *testing.B) {
	_, f, img := testImage(b, []byte("bench"))
	state := filepath.Join(b.TempDir(), "state")
	l, err := Mount(state, f, img, false)
	if err != nil {
		b.Fatal(err)
	}
	l.Release()
	defer GC(state)
	b.ResetTimer()
	for b.Loop() {
		l, err := Mount(state, f, img, false)
		if err != nil {
			b.Fatal(err)
		}
		l.Release()
	}
}

// TestLaunchingSeesLeasesAndGC: Launching is true exactly while a launch
// holds its lease (Mount to Release) or GC holds the cache, and testing
// it neither takes the lock nor waits for it.
func TestLaunchingSeesLeasesAndGC(t *testing.T) {
	imgPath, f, img := testImage(t, []byte("launching"))
	state := filepath.Join(t.TempDir(), "state")
	if Launching(state) {
		t.Error("Launching is true for a state directory no launch has used")
	}
	lease, err := Mount(state, f, img, false)
	if err != nil {
		t.Fatal(err)
	}
	if !Launching(state) {
		t.Error("Launching is false while a launch holds its lease")
	}
	// A second launch's lease is granted beside it: Launching took none.
	second, err := Mount(state, f, img, false)
	if err != nil {
		t.Fatal(err)
	}
	second.Release()
	lease.Release()
	if Launching(state) {
		t.Error("Launching is true after every lease was released")
	}
	s, lock, err := openLocked(state, false, true, true)
	if err != nil {
		t.Fatalf("GC's lock after Launching: %v (did Launching leave a lock?)", err)
	}
	if !Launching(state) {
		t.Error("Launching is false while GC holds the cache")
	}
	lock.Close()
	s.close()
	gcUntilClean(t, state, imgPath)
}
