// Package warmup reads a cold app's program and the shared libraries it
// will load into the page cache ahead of it, on the cores the launch
// leaves idle.
//
// Why: from a compressed image, a cold launch of a dynamic app is mostly
// the kernel decompressing squashfs blocks in the app's own page faults,
// one block after another on one core. curl's closure is 18 MB of
// libraries, which this VM's kernel decompresses in 53 ms (zstd:19),
// against 8 ms to read the whole 7 MB image off its disk. Squashfs
// decompresses a readahead in the thread that asks for it, so threads
// that ask for the app's files while the launcher builds the app's world,
// and while ld.so maps and relocates, move that work to other cores.
//
// What it reads is what ld.so will: the program, its interpreter and the
// DT_NEEDED closure, looked up as ld.so does (RPATH, LD_LIBRARY_PATH,
// RUNPATH with $ORIGIN, then the default directories; ld.so.cache is not
// read, so a library found only through it is not warmed — a lost
// head start, never a wrong launch). Every file is opened below the
// image's root without leaving it (openat2 RESOLVE_IN_ROOT, no magic
// links, no other mount), must be a regular file, and the amount is
// bounded: the image is untrusted.
package warmup

import (
	"os"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Bounds on one warm-up.
const (
	maxFiles = 512
	maxBytes = 512 << 20
	// chunk is one readahead call. The kernel reads at most the device's
	// readahead window per call and drops the rest (mm/readahead.c,
	// force_page_cache_ra), 128 KiB on cimg's loop devices (internal/loop);
	// squashfs widens each call to whole blocks. Stop waits at most one.
	chunk = 128 << 10
)

// defaultPath is the PATH a command is looked up in when the app's
// environment has none (glibc's execvp default, plus sbin, as the launch
// itself uses).
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// A Warmup is one app's files being read ahead.
type Warmup struct {
	root int // our own dup of the image root
	env  []string
	stop atomic.Bool
	done sync.WaitGroup

	mu     sync.Mutex
	wake   *sync.Cond
	parse  []*file // ELF files whose dependencies are still to be found
	read   []*file // files to read ahead, in the order found
	busy   int
	seen   map[[2]uint64]bool // dev, inode: each file once
	tried  map[string]bool    // path → found: each lookup once
	files  int
	bytes  int64
	warmed []string // what was read ahead, for tests
}

type file struct {
	f    *os.File
	name string // the path in the image
	size int64
}

// Start reads ahead the program that argv0 names (a path in the image,
// or a command looked up in env's PATH) and what it will load, in the
// image whose root directory is open at root, with workers threads. It
// returns nil, having started nothing, when the program's first page is
// already in the page cache (a warm launch pays for two opens and one
// cachestat: 9 µs), when workers < 1, or when the program cannot be opened (the
// launch reports that itself). root may be closed once Start returns.
func Start(root int, argv0, workdir string, env []string, workers int) *Warmup {
	if workers < 1 {
		return nil
	}
	w := &Warmup{root: -1, env: env, seen: map[[2]uint64]bool{}, tried: map[string]bool{}}
	prog := w.findProgram(root, argv0, workdir)
	if prog == nil {
		return nil
	}
	if cached(prog) {
		prog.f.Close()
		return nil
	}
	fd, err := unix.FcntlInt(uintptr(root), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		prog.f.Close()
		return nil
	}
	w.root = fd
	w.wake = sync.NewCond(&w.mu)
	w.parse = append(w.parse, prog)
	w.files, w.bytes = 1, prog.size
	w.done.Add(workers)
	for range workers {
		go w.work()
	}
	return w
}

// Stop ends the warm-up (after at most one chunk per thread) and waits
// for its threads; what they read stays cached. Safe on nil.
func (w *Warmup) Stop() {
	if w == nil {
		return
	}
	w.stop.Store(true)
	w.mu.Lock()
	w.wake.Broadcast()
	w.mu.Unlock()
	w.done.Wait()
}

// Wait waits until every file has been read ahead. Safe on nil.
func (w *Warmup) Wait() {
	if w != nil {
		w.done.Wait()
	}
}

// Warmed lists the image paths read ahead so far, in order.
func (w *Warmup) Warmed() []string {
	if w == nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.warmed...)
}

// work takes files until none is left: finding dependencies first, as
// ld.so opens every library before it relocates any, then reading whole
// files in the order they were found.
func (w *Warmup) work() {
	defer w.done.Done()
	for {
		f, isParse := w.next()
		if f == nil {
			return
		}
		if isParse {
			w.findDeps(f)
			w.mu.Lock()
			w.read = append(w.read, f)
		} else {
			w.readAhead(f)
			f.f.Close()
			w.mu.Lock()
		}
		w.busy--
		w.wake.Broadcast()
		w.mu.Unlock()
	}
}

// next waits for a file to work on; nil once there is none and no other
// thread can make more, or once stopped. The last one out closes root.
func (w *Warmup) next() (*file, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for {
		if w.stop.Load() {
			w.drain()
			return nil, false
		}
		if len(w.parse) > 0 {
			f := w.parse[0]
			w.parse = w.parse[1:]
			w.busy++
			return f, true
		}
		if len(w.read) > 0 {
			f := w.read[0]
			w.read = w.read[1:]
			w.busy++
			return f, false
		}
		if w.busy == 0 {
			w.drain()
			return nil, false
		}
		w.wake.Wait()
	}
}

// drain closes what is queued, and root once no thread is busy (w.mu held).
func (w *Warmup) drain() {
	for _, f := range append(w.parse, w.read...) {
		f.f.Close()
	}
	w.parse, w.read = nil, nil
	if w.busy == 0 && w.root >= 0 {
		unix.Close(w.root)
		w.root = -1
	}
}

// readAhead asks the kernel for the whole file, a chunk at a time; on
// squashfs the decompression happens here, on this thread.
func (w *Warmup) readAhead(f *file) {
	for off := int64(0); off < f.size && !w.stop.Load(); off += chunk {
		if unix.Fadvise(int(f.f.Fd()), off, chunk, unix.FADV_WILLNEED) != nil {
			return
		}
	}
	w.mu.Lock()
	w.warmed = append(w.warmed, f.name)
	w.mu.Unlock()
}

// findDeps queues f's interpreter and the libraries it names.
func (w *Warmup) findDeps(f *file) {
	d, err := readDyn(f.f)
	if err != nil {
		return
	}
	if d.interp != "" && path.IsAbs(d.interp) {
		w.add(d.interp)
	}
	origin := path.Dir(f.name)
	var dirs []string
	dirs = append(dirs, splitPath(d.rpath, origin)...)
	for _, e := range w.env {
		if v, ok := strings.CutPrefix(e, "LD_LIBRARY_PATH="); ok {
			dirs = append(dirs, splitPath(v, origin)...)
		}
	}
	dirs = append(dirs, splitPath(d.runpath, origin)...)
	dirs = append(dirs, defaultDirs(d.machine)...)
	for _, lib := range d.needed {
		if strings.Contains(lib, "/") {
			if path.IsAbs(lib) {
				w.add(lib)
			}
			continue
		}
		for _, dir := range dirs {
			if w.add(path.Join(dir, lib)) {
				break
			}
		}
	}
}

// splitPath splits an RPATH, RUNPATH or LD_LIBRARY_PATH into absolute
// directories, $ORIGIN expanded; entries with other tokens ($LIB,
// $PLATFORM) or relative ones are skipped.
func splitPath(s, origin string) []string {
	var out []string
	for _, e := range strings.Split(s, ":") {
		e = strings.ReplaceAll(strings.ReplaceAll(e, "${ORIGIN}", origin), "$ORIGIN", origin)
		if e != "" && path.IsAbs(e) && !strings.Contains(e, "$") {
			out = append(out, e)
		}
	}
	return out
}

// defaultDirs are ld.so's trusted directories for the machine: the
// multiarch ones Debian and Yocto's multilib use, then the classic ones.
func defaultDirs(machine uint16) []string {
	var triple string
	switch machine {
	case 62: // EM_X86_64
		triple = "x86_64-linux-gnu"
	case 183: // EM_AARCH64
		triple = "aarch64-linux-gnu"
	case 40: // EM_ARM
		triple = "arm-linux-gnueabihf"
	case 3: // EM_386
		triple = "i386-linux-gnu"
	case 243: // EM_RISCV
		triple = "riscv64-linux-gnu"
	}
	dirs := []string{"/lib64", "/usr/lib64", "/lib", "/usr/lib", "/usr/local/lib"}
	if triple != "" {
		dirs = append([]string{"/lib/" + triple, "/usr/lib/" + triple}, dirs...)
	}
	return dirs
}

// findProgram opens the program argv0 names, as execvp would find it.
func (w *Warmup) findProgram(root int, argv0, workdir string) *file {
	if strings.Contains(argv0, "/") {
		if !path.IsAbs(argv0) {
			argv0 = path.Join("/", workdir, argv0)
		}
		return w.open(root, argv0)
	}
	p := defaultPath
	for _, e := range w.env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			p = v
		}
	}
	for _, dir := range strings.Split(p, ":") {
		if path.IsAbs(dir) {
			if f := w.open(root, path.Join(dir, argv0)); f != nil {
				return f
			}
		}
	}
	return nil
}

// add opens name in the image and queues it for its dependencies (and
// then its read); false if there is no such regular file. A file seen
// before counts as found and is not queued again.
func (w *Warmup) add(name string) bool {
	w.mu.Lock()
	found, tried := w.tried[name]
	w.mu.Unlock()
	if tried {
		return found
	}
	f := w.open(w.root, name)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.tried[name] = f != nil
	if f == nil {
		return false
	}
	if f.f == nil {
		return true
	}
	if w.files >= maxFiles || w.bytes+f.size > maxBytes || w.stop.Load() {
		f.f.Close()
		return true
	}
	w.files++
	w.bytes += f.size
	w.parse = append(w.parse, f)
	w.wake.Broadcast()
	return true
}

// open opens name below root, never leaving the image: its symlinks
// resolve inside it, and a FIFO or device cannot block or be touched
// (O_NONBLOCK, then only a regular file is kept). It returns nil if there
// is no such regular file, and a file with a nil f if it was seen before.
func (w *Warmup) open(root int, name string) *file {
	fd, err := unix.Openat2(root, name, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NONBLOCK | unix.O_NOCTTY,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	})
	if err != nil {
		return nil
	}
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return nil
	}
	key := [2]uint64{uint64(st.Dev), st.Ino}
	w.mu.Lock()
	seen := w.seen[key]
	w.seen[key] = true
	w.mu.Unlock()
	if seen {
		unix.Close(fd)
		return &file{name: name}
	}
	return &file{f: os.NewFile(uintptr(fd), name), name: name, size: st.Size}
}

// cachestat is unix.Cachestat; a test plays an older kernel.
var cachestat = unix.Cachestat

// cached reports whether the first page of f is in the page cache:
// cachestat (Linux 6.5; 0.5 µs here), or on older kernels one page mapped
// and asked about (mincore; 5 µs). preadv2's RWF_NOWAIT would be one call
// too, but squashfs refuses it (EOPNOTSUPP).
func cached(f *file) bool {
	if f.size == 0 {
		return true
	}
	var cs unix.Cachestat_t
	err := cachestat(uint(f.f.Fd()), &unix.CachestatRange{Len: 1}, &cs, 0)
	if err == nil {
		return cs.Cache != 0
	}
	if err != unix.ENOSYS {
		return true // cannot tell: leave the launch as it was
	}
	m, err := unix.Mmap(int(f.f.Fd()), 0, 1, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return true // cannot tell: leave the launch as it was
	}
	defer unix.Munmap(m)
	var vec [1]byte
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), 1, uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		return true
	}
	return vec[0]&1 != 0
}
