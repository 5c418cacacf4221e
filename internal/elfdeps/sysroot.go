package elfdeps

import (
	"errors"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// maxHops bounds symlink resolution, as the kernel's MAXSYMLINKS does.
const maxHops = 40

// ErrSymlinkLoop is returned when resolving a path takes too many hops.
var ErrSymlinkLoop = errors.New("too many levels of symbolic links")

// Root is a target filesystem tree on the host: "/" for the host itself,
// or a sysroot. Every path the resolver handles is a path inside it.
type Root struct{ Dir string }

func (r Root) host(p string) string { return filepath.Join(r.Dir, filepath.FromSlash(p)) }

// Resolve follows symlinks in the image path p as the target would see
// them — an absolute link target starts at the root, never at the host's
// / — and returns the real path inside the root.
func (r Root) Resolve(p string) (string, error) {
	return r.walk(path.Clean("/"+p), false, true)
}

// ErrEscapesRoot is returned by Locate for a symlink whose target climbs
// above the root.
var ErrEscapesRoot = errors.New("symlink leads out of the root")

// Locate finds the entry p names in the root without following it if it
// is a symlink itself: its directories are resolved, and it returns the
// entry's path inside the root and its host path. Unlike Resolve, which
// stays at the root on ".." as a chroot does, a ".." above the root is
// an error: Locate serves build inputs (a symlinked program), and a link
// that climbs out of the sysroot names a host file by accident — packing
// it would take the host's program into a cross image.
func (r Root) Locate(p string) (real, host string, err error) {
	real, err = r.walk(p, true, false)
	if err != nil {
		return "", "", err
	}
	return real, r.host(real), nil
}

// walk resolves p component by component. strict refuses ".." above the
// root; followLast says whether a symlink as the last component is
// followed.
func (r Root) walk(p string, strict, followLast bool) (string, error) {
	hops := 0
	done := "/"
	rest := strings.Split(strings.TrimPrefix(p, "/"), "/")
	for len(rest) > 0 {
		c := rest[0]
		rest = rest[1:]
		if c == "" || c == "." {
			continue
		}
		if c == ".." {
			if strict && done == "/" {
				return "", &fs.PathError{Op: "resolve", Path: p, Err: ErrEscapesRoot}
			}
			done = path.Dir(done)
			continue
		}
		next := path.Join(done, c)
		fi, err := os.Lstat(r.host(next))
		if err != nil {
			return "", err
		}
		if fi.Mode()&fs.ModeSymlink == 0 || (!followLast && len(rest) == 0) {
			done = next
			continue
		}
		if hops++; hops > maxHops {
			return "", &fs.PathError{Op: "resolve", Path: p, Err: ErrSymlinkLoop}
		}
		t, err := os.Readlink(r.host(next))
		if err != nil {
			return "", err
		}
		if path.IsAbs(t) {
			done = "/"
		}
		rest = append(strings.Split(t, "/"), rest...)
	}
	return done, nil
}

// HostPath is where the real file of image path p lives on the host.
func (r Root) HostPath(p string) (string, error) {
	real, err := r.Resolve(p)
	if err != nil {
		return "", err
	}
	return r.host(real), nil
}
