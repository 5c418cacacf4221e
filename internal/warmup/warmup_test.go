package warmup

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// diskDir is a directory whose files' pages can be dropped from the page
// cache (POSIX_FADV_DONTNEED), so a test can make them cold without
// dropping the whole machine's cache; tmpfs cannot.
func diskDir(t *testing.T) string {
	t.Helper()
	for _, base := range []string{os.TempDir(), "/var/tmp"} {
		var st unix.Statfs_t
		if unix.Statfs(base, &st) == nil && st.Type != unix.TMPFS_MAGIC {
			d, err := os.MkdirTemp(base, "warmup-test-")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(d) })
			return d
		}
	}
	t.Fatalf("neither %s nor /var/tmp is on a disk file system: the test needs one to make files cold", os.TempDir())
	return ""
}

// evict makes every regular file below dir cold, and fails if the kernel
// kept any page of it.
func evict(t *testing.T, dir string) {
	t.Helper()
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		f.Sync()
		unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
		if n, _ := residency(t, f); n != 0 {
			t.Fatalf("%s: %d pages still cached after POSIX_FADV_DONTNEED", p, n)
		}
		return nil
	})
}

// residency counts f's pages in the page cache, and all of its pages.
func residency(t *testing.T, f *os.File) (cached, pages int) {
	t.Helper()
	st, err := f.Stat()
	if err != nil || st.Size() == 0 {
		return 0, 0
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	pages = (len(m) + os.Getpagesize() - 1) / os.Getpagesize()
	vec := make([]byte, pages)
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		t.Fatal(e)
	}
	for _, v := range vec {
		cached += int(v & 1)
	}
	return cached, pages
}

// hostClosure copies /bin/ls, and every file ldd says it loads, into a
// new tree at the same paths (symlinks as symlinks), and returns the tree
// and those paths: ld.so's own answer, to hold the warm-up's against.
func hostClosure(t *testing.T) (string, []string) {
	t.Helper()
	out, err := exec.Command("ldd", "/bin/ls").Output()
	if err != nil {
		t.Fatalf("ldd /bin/ls: %v (the test needs a dynamically linked /bin/ls and ldd, as on Debian)", err)
	}
	want := []string{"/usr/bin/ls"}
	for _, m := range regexp.MustCompile(`(?m)(?:=> )?(/\S+) \(0x`).FindAllStringSubmatch(string(out), -1) {
		want = append(want, m[1])
	}
	if len(want) < 3 {
		t.Fatalf("ldd /bin/ls named too few libraries:\n%s", out)
	}
	root := diskDir(t)
	copyFile := func(src, dst string) {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		os.MkdirAll(filepath.Dir(dst), 0o755)
		if err := os.WriteFile(dst, b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	copyFile("/bin/ls", filepath.Join(root, "usr/bin/ls"))
	for _, p := range want[1:] {
		dst := filepath.Join(root, p)
		if target, err := os.Readlink(p); err == nil && !strings.Contains(target, "/") {
			os.MkdirAll(filepath.Dir(dst), 0o755)
			if err := os.Symlink(target, dst); err != nil {
				t.Fatal(err)
			}
			copyFile(filepath.Join(filepath.Dir(p), target), filepath.Join(filepath.Dir(dst), target))
			continue
		}
		copyFile(p, dst)
	}
	return root, want
}

func openRoot(t *testing.T, dir string) int {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// wait waits for w, failing instead of hanging.
func wait(t *testing.T, w *Warmup) {
	t.Helper()
	done := make(chan struct{})
	go func() { w.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("the warm-up has not ended after 30s; it read %q", w.Warmed())
	}
}

// TestWarmsWhatLdSoLoads: from a cold tree, the program found through
// PATH, its interpreter and its libraries (one reached by a symlink) are
// read ahead, whole, and nothing else; ldd is the oracle.
func TestWarmsWhatLdSoLoads(t *testing.T) {
	root, want := hostClosure(t)
	os.WriteFile(filepath.Join(root, "usr/bin/unrelated"), bytes.Repeat([]byte("x"), 1<<20), 0o644)
	evict(t, root)
	w := Start(openRoot(t, root), "ls", "/", []string{"PATH=/usr/local/bin:/usr/bin"}, 2)
	if w == nil {
		t.Fatal("Start on a cold tree started nothing")
	}
	wait(t, w)
	got := w.Warmed()
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("warmed %q\nld.so loads %q", got, want)
	}
	// A disk file system reads ahead asynchronously (squashfs does not):
	// the pages come in shortly after.
	for _, p := range want {
		f, err := os.Open(filepath.Join(root, p))
		if err != nil {
			t.Fatal(err)
		}
		cached, pages := residency(t, f)
		for deadline := time.Now().Add(10 * time.Second); cached != pages && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
			cached, pages = residency(t, f)
		}
		f.Close()
		if cached != pages {
			t.Errorf("%s: %d of %d pages cached after the warm-up", p, cached, pages)
		}
	}
	u, _ := os.Open(filepath.Join(root, "usr/bin/unrelated"))
	defer u.Close()
	if cached, _ := residency(t, u); cached != 0 {
		t.Errorf("a file the program does not load was read ahead (%d pages)", cached)
	}
}

// TestWarmProgramStartsNothing: a launch whose program is in the page
// cache starts no thread and reads nothing more.
func TestWarmProgramStartsNothing(t *testing.T) {
	root, _ := hostClosure(t)
	evict(t, root)
	os.ReadFile(filepath.Join(root, "usr/bin/ls"))
	if w := Start(openRoot(t, root), "/usr/bin/ls", "/", nil, 2); w != nil {
		wait(t, w)
		t.Fatalf("a warm program started a warm-up, which read %q", w.Warmed())
	}
	libc, _ := os.Open(filepath.Join(root, "lib/x86_64-linux-gnu/libc.so.6"))
	defer libc.Close()
	if cached, _ := residency(t, libc); cached != 0 {
		t.Errorf("libc was read ahead for a warm program (%d pages)", cached)
	}
}

// TestColdCheckBeforeCachestat: on a kernel without cachestat (before
// 6.5, as many devices run), the mincore path tells cold from warm too.
func TestColdCheckBeforeCachestat(t *testing.T) {
	cachestat = func(uint, *unix.CachestatRange, *unix.Cachestat_t, uint) error { return unix.ENOSYS }
	defer func() { cachestat = unix.Cachestat }()
	root, _ := hostClosure(t)
	evict(t, root)
	w := Start(openRoot(t, root), "/usr/bin/ls", "/", nil, 1)
	if w == nil {
		t.Fatal("a cold program started no warm-up")
	}
	wait(t, w)
	if w := Start(openRoot(t, root), "/usr/bin/ls", "/", nil, 1); w != nil {
		wait(t, w)
		t.Fatal("a warm program started a warm-up")
	}
}

// TestStopEndsEarly: Stop returns with a large file still unread.
func TestStopEndsEarly(t *testing.T) {
	root := diskDir(t)
	big := bytes.Repeat([]byte{1}, 64<<20)
	copy(big, elfFile(t, "", []string{"libbig.so"}, ""))
	os.MkdirAll(filepath.Join(root, "lib"), 0o755)
	os.WriteFile(filepath.Join(root, "app"), big[:4096], 0o755)
	os.WriteFile(filepath.Join(root, "lib/libbig.so"), big, 0o644)
	evict(t, root)
	w := Start(openRoot(t, root), "/app", "/", nil, 1)
	if w == nil {
		t.Fatal("nothing started")
	}
	w.Stop()
	if w.root != -1 {
		t.Error("Stop returned with the root fd open")
	}
	f, _ := os.Open(filepath.Join(root, "lib/libbig.so"))
	defer f.Close()
	if cached, pages := residency(t, f); cached == pages {
		t.Errorf("Stop returned after all of a 64 MiB file was read")
	}
}

// TestHostileImageStaysInside (the class of CVE-2018-15664: host-side
// code resolving an image's paths): the image's symlinks, absolute and
// dotted names and special files must not lead the warm-up to anything
// outside its root, nor block it; a loop of libraries ends.
func TestHostileImageStaysInside(t *testing.T) {
	outside := diskDir(t)
	secret := filepath.Join(outside, "secret.so")
	os.WriteFile(secret, elfFile(t, "", nil, ""), 0o644)
	root := diskDir(t)
	os.MkdirAll(filepath.Join(root, "lib"), 0o755)
	os.MkdirAll(filepath.Join(root, "evil"), 0o755)
	os.Symlink(secret, filepath.Join(root, "lib/libabs.so"))                         // absolute link to the host file
	os.Symlink("../../../../../../.."+secret, filepath.Join(root, "lib/libdots.so")) // climbs out
	if err := unix.Mkfifo(filepath.Join(root, "lib/libfifo.so"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(root, "evil/libown.so"), elfFile(t, "", nil, ""), 0o644)
	needed := []string{"libabs.so", "libdots.so", "libfifo.so", secret, "../../../../.." + secret, "libown.so"}
	os.WriteFile(filepath.Join(root, "app"), elfFile(t, "/proc/self/exe", needed, "$ORIGIN/../../../..:/evil"), 0o755)
	// A library that names itself and the app: a loop must end.
	os.WriteFile(filepath.Join(root, "evil/libloop.so"), elfFile(t, "", []string{"libloop.so", "/app"}, "/evil"), 0o644)
	os.WriteFile(filepath.Join(root, "app2"), elfFile(t, "", []string{"libloop.so"}, "/evil"), 0o755)
	evict(t, outside)
	for _, c := range []struct {
		app  string
		want []string
	}{
		{"/app", []string{"/app", "/evil/libown.so"}},
		{"/app2", []string{"/app2", "/evil/libloop.so", "/app", "/evil/libown.so"}},
	} {
		app, want := c.app, c.want
		evict(t, root)
		w := Start(openRoot(t, root), app, "/", nil, 2)
		if w == nil {
			t.Fatalf("%s: nothing started", app)
		}
		wait(t, w)
		got := w.Warmed()
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("%s: warmed %q, want %q", app, got, want)
		}
	}
	f, _ := os.Open(secret)
	defer f.Close()
	if cached, _ := residency(t, f); cached != 0 {
		t.Errorf("the host file outside the image was read (%d pages cached)", cached)
	}
}

// TestMalformedELF: truncated or lying headers are errors, never a panic
// or a read beyond the bounds.
func TestMalformedELF(t *testing.T) {
	good := elfFile(t, "/lib/ld.so", []string{"liba.so"}, "/x")
	d, err := readDyn(bytes.NewReader(good))
	if err != nil || d.interp != "/lib/ld.so" || !slices.Equal(d.needed, []string{"liba.so"}) || d.runpath != "/x" {
		t.Fatalf("readDyn of a good file: %+v, %v", d, err)
	}
	for name, mutate := range map[string]func([]byte) []byte{
		"truncated header": func(b []byte) []byte { return b[:40] },
		"no phdrs":         func(b []byte) []byte { return b[:64] },
		"phnum 65535":      func(b []byte) []byte { binary.LittleEndian.PutUint16(b[56:], 0xffff); return b },
		"phoff huge":       func(b []byte) []byte { binary.LittleEndian.PutUint64(b[32:], 1<<62); return b },
		"bad class":        func(b []byte) []byte { b[4] = 9; return b },
	} {
		if _, err := readDyn(bytes.NewReader(mutate(slices.Clone(good)))); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// FuzzReadDyn: no input panics or allocates past the bounds.
func FuzzReadDyn(f *testing.F) {
	f.Add(elfFile(f, "/lib/ld.so", []string{"liba.so", "libb.so"}, "$ORIGIN"))
	if b, err := os.ReadFile("/bin/ls"); err == nil {
		f.Add(b[:min(len(b), 64<<10)])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		readDyn(bytes.NewReader(b))
	})
}

// elfFile makes a minimal x86-64 ELF file: one PT_LOAD over the whole
// file, a PT_INTERP if interp is set, and a PT_DYNAMIC naming needed and
// a DT_RUNPATH if set.
func elfFile(t testing.TB, interp string, needed []string, runpath string) []byte {
	t.Helper()
	le := binary.LittleEndian
	var str bytes.Buffer
	str.WriteByte(0)
	add := func(s string) uint64 { off := str.Len(); str.WriteString(s); str.WriteByte(0); return uint64(off) }
	var dyn []uint64
	for _, n := range needed {
		dyn = append(dyn, dtNeeded, add(n))
	}
	if runpath != "" {
		dyn = append(dyn, dtRunpath, add(runpath))
	}
	interpOff := add(interp)
	const phnum = 3
	strOff := uint64(64 + 56*phnum)
	dynOff := strOff + uint64(str.Len())
	dyn = append(dyn, dtStrtab, strOff, dtStrsz, uint64(str.Len()), dtNull, 0)
	size := dynOff + uint64(8*len(dyn))
	b := make([]byte, size)
	copy(b, "\x7fELF\x02\x01\x01")
	le.PutUint16(b[16:], 3)  // ET_DYN
	le.PutUint16(b[18:], 62) // EM_X86_64
	le.PutUint32(b[20:], 1)
	le.PutUint64(b[32:], 64)
	le.PutUint16(b[52:], 64)
	le.PutUint16(b[54:], 56)
	le.PutUint16(b[56:], phnum)
	ph := func(i int, typ uint32, off, sz uint64) {
		p := b[64+56*i:]
		le.PutUint32(p, typ)
		le.PutUint64(p[8:], off)
		le.PutUint64(p[16:], off)
		le.PutUint64(p[32:], sz)
		le.PutUint64(p[40:], sz)
	}
	ph(0, ptLoad, 0, size)
	typ := uint32(ptInterp)
	if interp == "" {
		typ = 6 // PT_PHDR: ignored
	}
	ph(1, typ, strOff+interpOff, uint64(len(interp)+1))
	ph(2, ptDynamic, dynOff, uint64(8*len(dyn)))
	copy(b[strOff:], str.Bytes())
	for i, v := range dyn {
		le.PutUint64(b[dynOff+uint64(8*i):], v)
	}
	return b
}
