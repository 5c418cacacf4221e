// Package imagecache is the mount cache: an image's squashfs is mounted
// once, keyed by its verified root hash, under STATE/images, and every
// instance bind-mounts it into its own mount namespace. squashfs keeps
// decompressed pages per mount, so a kept mount is what makes the second
// start of a real app warm. Nothing reaches mount(2) before the payload
// is known good: dm-verity where the kernel has it, else a user-space
// check of the whole hash tree once per boot per file.
package imagecache

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"cimg.dev/cimg/format"
	"cimg.dev/cimg/internal/dmverity"
	"cimg.dev/cimg/internal/loop"
)

// cacheDir is the mount point of the image with this root hash.
func cacheDir(state string, root [32]byte) string {
	return filepath.Join(state, "images", hex.EncodeToString(root[:16]))
}

// isMounted reports whether dir is a squashfs mount point.
func isMounted(dir string) bool {
	var st, parent unix.Stat_t
	if unix.Stat(dir, &st) != nil || unix.Stat(filepath.Dir(dir), &parent) != nil {
		return false
	}
	var fs unix.Statfs_t
	return st.Dev != parent.Dev && unix.Statfs(dir, &fs) == nil && fs.Type == unix.SQUASHFS_MAGIC
}

// Mount returns the cache mount of img, creating it when absent:
// payload verified (unless this boot verified it already), the same fd
// loop-attached, squashfs mounted read-only. A lock file serialises
// concurrent first launches of one image.
func Mount(state string, f *os.File, img *format.Image, verifyAlways bool) (string, error) {
	dir := cacheDir(state, img.Footer.RootHash)
	// Warm start: a mount appears whole, so seeing it needs no lock.
	if !verifyAlways && isMounted(dir) {
		return dir, nil
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return "", fmt.Errorf("mount cache %s: %w", filepath.Dir(dir), err)
	}
	lock, err := os.OpenFile(dir+".lock", os.O_CREATE|os.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return "", fmt.Errorf("mount cache lock: %w", err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return "", fmt.Errorf("mount cache lock: %w", err)
	}
	if isMounted(dir) && !verifyAlways {
		return dir, nil
	}
	// Nothing reaches mount(2) before the payload is known good: the
	// kernel's dm-verity checks each block as it is read (with the
	// image's own tree and the signed root hash); without device-mapper
	// the whole payload is checked here first.
	useDM := dmverity.Available()
	if !useDM || verifyAlways {
		if err := Verify(state, f, img, verifyAlways); err != nil {
			return "", err
		}
	}
	if isMounted(dir) {
		return dir, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("mount cache %s: %w", dir, err)
	}
	ft := img.Footer
	size := ft.PayloadSize
	if useDM {
		size = ft.TreeOffset + ft.TreeSize // data and tree, one device
	}
	dev, err := loop.Attach(f.Fd(), 0, size)
	if err != nil {
		return "", fmt.Errorf("loop-attach %s: %w", f.Name(), err)
	}
	defer dev.Close() // autoclear: the mount holds the device from here on
	source := dev.Path
	if useDM {
		name := "cimg-" + filepath.Base(dir)
		vd, err := dmverity.Create(dmverity.Params{Name: name, Device: dev.Dev, DataBlocks: ft.DataBlocks(),
			HashStart: ft.TreeOffset / format.BlockSize, RootHash: ft.RootHash[:], Salt: ft.Salt})
		if errors.Is(err, unix.EBUSY) {
			// Left by a launcher killed mid-setup: it is ours to replace.
			dmverity.Remove(name, false)
			vd, err = dmverity.Create(dmverity.Params{Name: name, Device: dev.Dev, DataBlocks: ft.DataBlocks(),
				HashStart: ft.TreeOffset / format.BlockSize, RootHash: ft.RootHash[:], Salt: ft.Salt})
		}
		if err != nil {
			return "", err
		}
		// Deferred: the device goes away with the mount, or now if the
		// mount fails.
		defer dmverity.Remove(name, true)
		source = vd.Path()
	}
	if err := unix.Mount(source, dir, "squashfs", unix.MS_RDONLY|unix.MS_NODEV|unix.MS_NOSUID, ""); err != nil {
		return "", mountAdvice(source, dir, f, err)
	}
	return dir, nil
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
			return fmt.Errorf("%w: does the kernel have squashfs %s? (%s)", base, n[0], n[1])
		}
	}
	return base
}

// Verify checks the hash tree in user space, once per boot per
// file: the result is remembered in state keyed by device, inode, size,
// ctime and root hash, any of which changes when the file does.
func Verify(state string, f *os.File, img *format.Image, always bool) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return err
	}
	key := fmt.Sprintf("%x-%x-%x-%d.%d-%s", st.Dev, st.Ino, st.Size, st.Ctim.Sec, st.Ctim.Nsec, hex.EncodeToString(img.Footer.RootHash[:16]))
	mark := filepath.Join(state, "verified", key)
	if !always {
		if _, err := os.Stat(mark); err == nil {
			return nil
		}
	}
	if err := img.VerifyPayload(); err != nil {
		return fmt.Errorf("%s: %w", f.Name(), err)
	}
	if err := os.MkdirAll(filepath.Dir(mark), 0o700); err == nil {
		os.WriteFile(mark, nil, 0o600)
	}
	return nil
}

// GC unmounts cached images no instance uses. It returns what it
// unmounted.
func GC(state string) ([]string, error) {
	dirs, _ := filepath.Glob(filepath.Join(state, "images", "*"))
	var done []string
	var errs []error
	for _, d := range dirs {
		if strings.HasSuffix(d, ".lock") || !isMounted(d) {
			continue
		}
		if inUse(d) {
			continue
		}
		if err := unix.Unmount(d, 0); err != nil {
			errs = append(errs, fmt.Errorf("unmount %s: %w", d, err))
			continue
		}
		os.Remove(d)
		done = append(done, d)
	}
	return done, errors.Join(errs...)
}

// inUse reports whether any other mount namespace mounts the filesystem
// at dir: an instance's bind of it shows up in its processes' mountinfo
// under the same device number.
func inUse(dir string) bool {
	var st unix.Stat_t
	if unix.Stat(dir, &st) != nil {
		return false
	}
	devField := fmt.Sprintf(" %d:%d ", unix.Major(st.Dev), unix.Minor(st.Dev))
	self, _ := os.Readlink("/proc/self/ns/mnt")
	seen := map[string]bool{self: true}
	pids, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range pids {
		ns, err := os.Readlink(p + "/ns/mnt")
		if err != nil || seen[ns] {
			continue
		}
		seen[ns] = true
		b, _ := os.ReadFile(p + "/mountinfo")
		if strings.Contains(string(b), devField) {
			return true
		}
	}
	return false
}
