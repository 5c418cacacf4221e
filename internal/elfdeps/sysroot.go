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
	p = path.Clean("/" + p)
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
			done = path.Dir(done)
			continue
		}
		next := path.Join(done, c)
		fi, err := os.Lstat(r.host(next))
		if err != nil {
			return "", err
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
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
