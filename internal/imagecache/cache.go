// Package imagecache is the mount cache: an image's squashfs is mounted
// once, keyed by its verified root hash, under STATE/images, and every
// instance bind-mounts it into its own mount namespace. squashfs keeps
// decompressed pages per mount, so a kept mount is what makes the second
// start of a real app warm. Nothing reaches mount(2) before the payload
// is known good: dm-verity where the kernel has it, else a user-space
// check of the whole hash tree once per boot per file.
//
// Locking: STATE/images/.gc.lock is held shared by every launch from
// before it looks at the cache until its bind of the cache mount exists
// in its own mount namespace (Mount to Lease.Release), and exclusive by
// GC. So GC never unmounts a cache mount that a launch has seen but not
// yet bound, and may remove the per-image lock files, which only holders
// of the shared lock create. Launching only tests the cache lock, and
// takes none. The per-image lock (STATE/images/HASH.lock)
// serialises concurrent first launches of one image.
package imagecache

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"

	"cimg.dev/cimg/format"
	"cimg.dev/cimg/internal/dmverity"
	"cimg.dev/cimg/internal/loop"
)

const gcLock = ".gc.lock"

// Lease is a launch's hold on a cache mount: GC leaves Dir mounted until
// Release.
type Lease struct {
	Dir   string // the cache mount, to bind
	Dev   uint64 // its device number, as this mount namespace sees it
	lock  *os.File
	state string
	cold  bool // this launch mounted Dir
}

// Release lets GC at the cache again. Call it once the launch's bind of
// Dir exists in a mount namespace that a process of its own is in (GC
// sees binds through /proc). It may be called more than once, and on a
// nil Lease. After a launch that mounted, it also unmounts cache mounts
// whose image file was deleted, if no instance uses them and no launch
// holds the cache (it does not wait for one).
func (l *Lease) Release() {
	if l == nil || l.lock == nil {
		return
	}
	l.lock.Close()
	l.lock = nil
	if l.cold {
		l.cold = false
		sweepDeleted(l.state)
	}
}

// The cache lock, STATE/images/.gc.lock, is two byte-range locks of
// the open file description (OFD locks, which a fork or an exec does not
// carry): byte 1 is the cache, read-locked by launches and write-locked
// by GC; byte 0 is a gate in front of it, which a launch read-locks only
// while it takes byte 1 and GC write-locks while it waits for byte 1.
// Without the gate GC could wait forever behind launches that overlap
// (the kernel grants a read lock whenever none is held for writing, however long a
// writer has waited); with it, launches that come while GC waits queue
// behind it.
const (
	gateByte  = 0
	cacheByte = 1
)

// lockState opens STATE/images/.gc.lock and locks it: shared (launches)
// or exclusive (GC), waiting unless nowait.
func lockState(s *stateDir, exclusive, nowait bool) (*os.File, error) {
	fd, err := unix.Openat(s.images, gcLock, unix.O_CREAT|unix.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("mount cache lock %s: %w", filepath.Join(s.imagesPath(), gcLock), err)
	}
	f := os.NewFile(uintptr(fd), filepath.Join(s.imagesPath(), gcLock))
	typ := int16(unix.F_RDLCK)
	if exclusive {
		typ = unix.F_WRLCK
	}
	err = rangeLock(fd, gateByte, typ, nowait)
	if err == nil {
		err = rangeLock(fd, cacheByte, typ, nowait)
	}
	if err == nil && !exclusive {
		err = rangeLock(fd, gateByte, unix.F_UNLCK, false)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("mount cache lock %s: %w", f.Name(), err)
	}
	return f, nil
}

// Launching reports whether a launch in state is between Mount and
// Release (building its root) or GC holds the cache. It only tests the
// lock (F_OFD_GETLK) and takes none, so neither waits for it. The
// launcher's hand-over to its slim waiter waits while it is true
// (launcher/wait.go, slimDue, says why).
func Launching(state string) bool {
	if state == "" {
		return false
	}
	fd, err := unix.Open(filepath.Join(imagesDir(state), gcLock), unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return false // no launch has used this state directory yet
	}
	defer unix.Close(fd)
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: cacheByte, Len: 1}
	return unix.FcntlFlock(uintptr(fd), unix.F_OFD_GETLK, &lk) == nil && lk.Type != unix.F_UNLCK
}

// openLocked opens the state directory and locks the cache (see
// lockState).
func openLocked(state string, create, exclusive, nowait bool) (*stateDir, *os.File, error) {
	s, err := openState(state, create)
	if err != nil {
		return nil, nil, err
	}
	lock, err := lockState(s, exclusive, nowait)
	if err != nil {
		s.close()
		return nil, nil, err
	}
	return s, lock, nil
}

// rangeLock sets an OFD lock of type typ on byte b of fd.
func rangeLock(fd int, b int64, typ int16, nowait bool) error {
	cmd := unix.F_OFD_SETLKW
	if nowait {
		cmd = unix.F_OFD_SETLK
	}
	lk := unix.Flock_t{Type: typ, Whence: 0, Start: b, Len: 1}
	for {
		err := unix.FcntlFlock(uintptr(fd), cmd, &lk)
		if err != unix.EINTR {
			return err
		}
	}
}

// cacheName is the name under STATE/images of the image with this root
// hash.
func cacheName(root [32]byte) string { return hex.EncodeToString(root[:16]) }

// isMounted reports whether STATE/images/name is a squashfs mount point.
func (s *stateDir) isMounted(name string) bool {
	_, ok := s.mountDev(name)
	return ok
}

// mountDev is the device number of the squashfs mounted at
// STATE/images/name; false when none is.
func (s *stateDir) mountDev(name string) (uint64, bool) {
	var st unix.Stat_t
	if unix.Fstatat(s.images, name, &st, unix.AT_SYMLINK_NOFOLLOW) != nil || st.Dev == s.imagesDev {
		return 0, false
	}
	var fs unix.Statfs_t
	return st.Dev, unix.Statfs(filepath.Join(s.imagesPath(), name), &fs) == nil && fs.Type == unix.SQUASHFS_MAGIC
}

// Mount returns a lease on the cache mount of img, creating the mount
// when absent: payload verified (unless this boot verified it already),
// the same fd loop-attached, squashfs mounted read-only. The caller binds
// Lease.Dir and then calls Release.
func Mount(state string, f *os.File, img *format.Image, verifyAlways bool) (*Lease, error) {
	s, lock, err := openLocked(state, true, false, false)
	if err != nil {
		return nil, err
	}
	defer s.close()
	name := cacheName(img.Footer.RootHash)
	l := &Lease{Dir: filepath.Join(s.imagesPath(), name), lock: lock, state: state}
	// Warm start: a mount appears whole, and GC waits for our Release.
	if !verifyAlways {
		var ok bool
		if l.Dev, ok = s.mountDev(name); ok {
			return l, nil
		}
	}
	if l.Dev, l.cold, err = s.mount(name, f, img, verifyAlways); err != nil {
		l.Release()
		return nil, err
	}
	return l, nil
}

// mount mounts the image at STATE/images/name unless it is there
// already (then, with verifyAlways, it only verifies), under the image's
// own lock. It returns the mount's device number and whether it mounted.
func (s *stateDir) mount(name string, f *os.File, img *format.Image, verifyAlways bool) (uint64, bool, error) {
	dir := filepath.Join(s.imagesPath(), name)
	fd, err := unix.Openat(s.images, name+".lock", unix.O_CREAT|unix.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return 0, false, fmt.Errorf("mount cache lock %s.lock: %w", dir, err)
	}
	defer unix.Close(fd)
	if err := unix.Flock(fd, unix.LOCK_EX); err != nil {
		return 0, false, fmt.Errorf("mount cache lock %s.lock: %w", dir, err)
	}
	if d, ok := s.mountDev(name); ok && !verifyAlways {
		return d, false, nil
	}
	// Nothing reaches mount(2) before the payload is known good: the
	// kernel's dm-verity checks each block as it is read (with the
	// image's own tree and the signed root hash); without device-mapper
	// the whole payload is checked here first.
	useDM := dmverity.Available()
	if !useDM || verifyAlways {
		if err := s.verify(f, img, verifyAlways); err != nil {
			return 0, false, err
		}
	}
	if d, ok := s.mountDev(name); ok {
		return d, false, nil
	}
	if err := unix.Mkdirat(s.images, name, 0o700); err != nil && err != unix.EEXIST {
		return 0, false, fmt.Errorf("mount cache %s: %w", dir, err)
	}
	ft := img.Footer
	size := ft.PayloadSize
	if useDM {
		size = ft.TreeOffset + ft.TreeSize // data and tree, one device
	}
	dev, err := loop.Attach(f.Fd(), 0, size)
	if err != nil {
		return 0, false, fmt.Errorf("loop-attach %s: %w", f.Name(), err)
	}
	defer dev.Close() // autoclear: the mount holds the device from here on
	source := dev.Path
	if useDM {
		vname := "cimg-" + name
		vd, err := dmverity.Create(dmverity.Params{Name: vname, Device: dev.Dev, DataBlocks: ft.DataBlocks(),
			HashStart: ft.TreeOffset / format.BlockSize, RootHash: ft.RootHash[:], Salt: ft.Salt})
		if errors.Is(err, unix.EBUSY) {
			// Left by a launcher killed mid-setup: it is ours to replace.
			dmverity.Remove(vname, false)
			vd, err = dmverity.Create(dmverity.Params{Name: vname, Device: dev.Dev, DataBlocks: ft.DataBlocks(),
				HashStart: ft.TreeOffset / format.BlockSize, RootHash: ft.RootHash[:], Salt: ft.Salt})
		}
		if err != nil {
			return 0, false, err
		}
		// Deferred: the device goes away with the mount, or now if the
		// mount fails.
		defer dmverity.Remove(vname, true)
		source = vd.Path()
	}
	if err := unix.Mount(source, dir, "squashfs", unix.MS_RDONLY|unix.MS_NODEV|unix.MS_NOSUID, ""); err != nil {
		return 0, false, mountAdvice(source, dir, f, err)
	}
	// The mount raised the readahead of the device under it.
	if !useDM {
		dev.LimitReadahead()
	} else if vf, err := os.Open(source); err == nil {
		loop.LimitReadahead(vf.Fd())
		vf.Close()
	}
	var st unix.Stat_t
	if err := unix.Fstatat(s.images, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return 0, false, fmt.Errorf("mount cache %s: %w", dir, err)
	}
	return st.Dev, true, nil
}

// mountAdvice turns a failed squashfs mount into what to do about it.
func mountAdvice(dev, dir string, f *os.File, err error) error {
	base := fmt.Errorf("mount squashfs %s on %s: %w", dev, dir, err)
	if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENODEV) {
		return base
	}
	fsys, _ := os.ReadFile("/proc/filesystems")
	if !strings.Contains(string(fsys), "squashfs") {
		return fmt.Errorf("%w: the kernel has no squashfs (CONFIG_SQUASHFS; modprobe squashfs)", base)
	}
	// The compressor id sits at offset 20 of the superblock; reading it
	// here keeps the squashfs writer and its encoders out of cimg-run.
	var id [2]byte
	if _, err := f.ReadAt(id[:], 20); err == nil {
		names := map[byte][2]string{1: {"gzip", "CONFIG_SQUASHFS_ZLIB"}, 4: {"xz", "CONFIG_SQUASHFS_XZ"},
			5: {"lz4", "CONFIG_SQUASHFS_LZ4"}, 6: {"zstd", "CONFIG_SQUASHFS_ZSTD"}}
		if n, ok := names[id[0]]; ok && id[1] == 0 {
			return fmt.Errorf("%w: either the kernel lacks squashfs %s (%s; `cimg-run doctor` shows its compressors), or the image's squashfs is malformed — its hash tree and signature vouch for the bytes, not for a valid filesystem: rebuild it with cimg-build", base, n[0], n[1])
		}
	}
	return base
}

// Verify checks the hash tree in user space, once per boot per
// file: the result is remembered in STATE/verified (a checked 0700
// directory of 0600 marks) keyed by device, inode, size, ctime and root
// hash, any of which changes when the file does.
func Verify(state string, f *os.File, img *format.Image, always bool) error {
	s, err := openState(state, true)
	if err != nil {
		return err
	}
	defer s.close()
	return s.verify(f, img, always)
}

func (s *stateDir) verify(f *os.File, img *format.Image, always bool) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return err
	}
	key := fmt.Sprintf("%x-%x-%x-%d.%d-%s", st.Dev, st.Ino, st.Size, st.Ctim.Sec, st.Ctim.Nsec, hex.EncodeToString(img.Footer.RootHash[:16]))
	dir, err := openDir(s.fd, "verified", filepath.Join(s.path, "verified"), true)
	if err != nil {
		return err
	}
	defer unix.Close(dir)
	if !always {
		var mark unix.Stat_t
		if unix.Fstatat(dir, key, &mark, unix.AT_SYMLINK_NOFOLLOW) == nil && mark.Mode&unix.S_IFMT == unix.S_IFREG {
			return nil
		}
	}
	// Hashing the payload is the launch's one parallel step: every core
	// for it (the launcher runs on one P otherwise).
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(runtime.NumCPU()))
	if err := img.VerifyPayload(); err != nil {
		return fmt.Errorf("%s: %w", f.Name(), err)
	}
	if fd, err := unix.Openat(dir, key, unix.O_CREAT|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600); err == nil {
		unix.Close(fd)
	}
	return nil
}

// GC unmounts the cached images of the state directory that no instance
// uses, and removes the per-image lock files and the directories left
// by images no longer mounted. It waits for launches between their look
// at the cache and their bind of it (see Lease). It returns what it
// unmounted.
func GC(state string) ([]string, error) {
	s, lock, err := openLocked(state, false, true, false)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil // nothing was ever cached here
	}
	if err != nil {
		return nil, err
	}
	defer s.close()
	defer lock.Close()
	return s.collect(false)
}

// sweepDeleted is GC of only the cache mounts whose image file was
// deleted (rebuilt, say), when it can have the cache at once.
func sweepDeleted(state string) {
	if s, lock, err := openLocked(state, false, true, true); err == nil {
		s.collect(true)
		lock.Close()
		s.close()
	}
}

// collect does GC's work; the caller holds .gc.lock exclusive. With
// onlyDeleted it unmounts only images whose file was deleted.
func (s *stateDir) collect(onlyDeleted bool) ([]string, error) {
	entries, err := os.ReadDir(s.imagesPath())
	if err != nil {
		return nil, err
	}
	var done []string
	var errs []error
	var used map[string]bool // mountinfo device numbers of other namespaces, read once if needed
	for _, e := range entries {
		name := e.Name()
		switch {
		case name == gcLock:
		case strings.HasSuffix(name, ".lock"):
			// Only holders of the shared lock create these.
			unix.Unlinkat(s.images, name, 0)
		case !e.IsDir():
		case !s.isMounted(name):
			unix.Unlinkat(s.images, name, unix.AT_REMOVEDIR) // left over; fails unless empty
		default:
			var st unix.Stat_t
			if unix.Fstatat(s.images, name, &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
				continue
			}
			if onlyDeleted && !backingDeleted(st.Dev) {
				continue
			}
			if used == nil {
				used = devsMountedElsewhere(s.imagesPath())
			}
			if used[fmt.Sprintf("%d:%d", unix.Major(st.Dev), unix.Minor(st.Dev))] {
				continue
			}
			dir := filepath.Join(s.imagesPath(), name)
			if err := unix.Unmount(dir, 0); err != nil {
				errs = append(errs, fmt.Errorf("unmount %s: %w", dir, err))
				continue
			}
			unix.Unlinkat(s.images, name, unix.AT_REMOVEDIR)
			done = append(done, dir)
		}
	}
	return done, errors.Join(errs...)
}

// backingDeleted reports whether the loop device under the block device
// dev (directly, or under its dm-verity device) has a deleted file.
func backingDeleted(dev uint64) bool {
	sys := fmt.Sprintf("/sys/dev/block/%d:%d", unix.Major(dev), unix.Minor(dev))
	files, _ := filepath.Glob(sys + "/slaves/*/loop/backing_file")
	for _, p := range append(files, sys+"/loop/backing_file") {
		if b, err := os.ReadFile(p); err == nil && strings.HasSuffix(strings.TrimSpace(string(b)), " (deleted)") {
			return true
		}
	}
	return false
}

// devsMountedElsewhere returns the device numbers ("major:minor") of
// every filesystem mounted in a mount namespace other than the calling
// thread's, but at a path under skip: an instance's bind of a cache
// mount shows up there under the mount's device number, while a
// namespace made as a copy of the host's (unshare -m, a service's
// private /tmp) has the cache mount itself, at its own path, which no
// instance uses. Threads are looked at, not only processes: a launcher
// builds its namespace on a thread of its own.
func devsMountedElsewhere(skip string) map[string]bool {
	self, _ := os.Readlink("/proc/thread-self/ns/mnt")
	seen := map[string]bool{self: true}
	devs := map[string]bool{}
	tasks, _ := filepath.Glob("/proc/[0-9]*/task/[0-9]*")
	for _, t := range tasks {
		ns, err := os.Readlink(t + "/ns/mnt")
		if err != nil || seen[ns] {
			continue
		}
		b, err := os.ReadFile(t + "/mountinfo")
		if err != nil {
			continue // gone; another task may share its namespace
		}
		seen[ns] = true
		for _, line := range strings.Split(string(b), "\n") {
			// ID PARENT MAJOR:MINOR ROOT MOUNTPOINT ...
			if f := strings.Fields(line); len(f) > 4 && !strings.HasPrefix(f[4], skip+"/") {
				devs[f[2]] = true
			}
		}
	}
	return devs
}
