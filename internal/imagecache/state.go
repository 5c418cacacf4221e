package imagecache

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// The state directory is trusted by path: what is in it decides what is
// mounted and what is verified. So it, STATE/images and STATE/verified
// must be real directories (not symlinks) that only root can change;
// what is missing is created 0700.

// stateDir is the state directory and STATE/images, opened and checked.
type stateDir struct {
	path      string
	fd        int // the state directory
	images    int // STATE/images
	imagesDev uint64
}

func (s *stateDir) close() {
	unix.Close(s.images)
	unix.Close(s.fd)
}

func (s *stateDir) imagesPath() string { return imagesDir(s.path) }

// imagesDir is where the state directory state keeps the cache.
func imagesDir(state string) string { return filepath.Join(state, "images") }

// CheckStateDir checks that dir, dir/images and dir/verified are
// directories owned by root, not writable by group or others, and not
// symlinks, creating them (mode 0700) when missing. Its error wraps
// ErrUnsafeStateDir and names the path, what is wrong and the fix.
// Mount, Verify and GC check what they use the same way.
func CheckStateDir(dir string) error {
	s, err := openState(dir, true)
	if err != nil {
		return err
	}
	defer s.close()
	fd, err := openDir(s.fd, "verified", filepath.Join(s.path, "verified"), true)
	if err != nil {
		return err
	}
	unix.Close(fd)
	return nil
}

// openState opens and checks the state directory and STATE/images,
// creating them when create is set.
func openState(path string, create bool) (*stateDir, error) {
	if !filepath.IsAbs(path) {
		// Absolute: Lease.Dir is bound from another working directory, and
		// GC compares it with mountinfo's paths.
		abs, err := filepath.Abs(path)
		if err != nil {
			return nil, err
		}
		path = abs
	}
	fd, err := openDir(unix.AT_FDCWD, path, path, create)
	if err != nil {
		return nil, err
	}
	s := &stateDir{path: path, fd: fd}
	var st unix.Stat_t
	if s.images, err = openDirStat(fd, "images", s.imagesPath(), create, &st); err != nil {
		unix.Close(fd)
		return nil, err
	}
	s.imagesDev = st.Dev
	return s, nil
}

func openDir(dirfd int, name, show string, create bool) (int, error) {
	var st unix.Stat_t
	return openDirStat(dirfd, name, show, create, &st)
}

// openDirStat opens name, relative to dirfd, as a directory without
// following a symlink, checks it and returns its stat in st. show is its
// path for messages.
func openDirStat(dirfd int, name, show string, create bool, st *unix.Stat_t) (int, error) {
	const flags = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
	fd, err := unix.Openat(dirfd, name, flags, 0)
	if err == unix.ENOENT && create {
		if dirfd == unix.AT_FDCWD {
			if err := os.MkdirAll(filepath.Dir(name), 0o700); err != nil {
				return -1, err
			}
		}
		if err := unix.Mkdirat(dirfd, name, 0o700); err != nil && err != unix.EEXIST {
			return -1, fmt.Errorf("create %s: %w", show, err)
		}
		fd, err = unix.Openat(dirfd, name, flags, 0)
	}
	if err == unix.ELOOP || err == unix.ENOTDIR {
		var lst unix.Stat_t
		if unix.Fstatat(dirfd, name, &lst, unix.AT_SYMLINK_NOFOLLOW) == nil {
			if lst.Mode&unix.S_IFMT == unix.S_IFLNK {
				fix := "remove the symlink (cimg-run then creates a real directory there)"
				if dirfd == unix.AT_FDCWD {
					fix += ", or give the real directory as --state-dir"
				}
				return -1, refuse(show, "is a symlink", fix)
			}
			return -1, refuse(show, "is not a directory", "remove it (cimg-run then creates the directory)")
		}
	}
	if err != nil {
		return -1, fmt.Errorf("state directory %s: %w", show, err)
	}
	if err := unix.Fstat(fd, st); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("state directory %s: %w", show, err)
	}
	switch {
	case st.Uid != 0:
		err = refuse(show, fmt.Sprintf("is owned by uid %d, not root", st.Uid), "chown root:root "+show)
	case st.Mode&0o022 != 0:
		err = refuse(show, fmt.Sprintf("is writable by group or others (mode %04o)", st.Mode&0o7777), "chmod 0700 "+show)
	}
	if err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// ErrUnsafeStateDir is wrapped by the errors of a state directory that
// is refused.
var ErrUnsafeStateDir = errors.New("unsafe state directory")

func refuse(path, what, fix string) error {
	return fmt.Errorf("%w %s: it %s; fix: %s", ErrUnsafeStateDir, path, what, fix)
}
