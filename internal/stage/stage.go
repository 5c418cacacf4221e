// Package stage gathers a build's inputs — host directories, single files,
// synthetic entries — into one squashfs.Tree, and remembers where every
// path came from and why.
//
// It decides what the image records about each file: permission bits
// (setuid, setgid and sticky included) always; owners only when asked to
// keep them, else 0:0; modification times from the build's epoch unless
// asked to keep them. Extended attributes are never read. Device nodes,
// fifos and sockets fail the build with the path that holds them.
package stage

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"

	"cimg.dev/cimg/internal/squashfs"
)

// Options say what of the host's metadata survives into the image.
type Options struct {
	// Epoch is the time every entry gets (SOURCE_DATE_EPOCH).
	Epoch int64
	// KeepMtimes keeps the sources' modification times instead.
	KeepMtimes bool
	// KeepOwners keeps the sources' uid and gid instead of 0:0.
	KeepOwners bool
}

// Record is the provenance of one path in the image.
type Record struct {
	Path   string `json:"path"`
	Source string `json:"source,omitempty"`
	Reason string `json:"reason"`
}

// Stager accumulates the image tree.
type Stager struct {
	opts    Options
	tree    *squashfs.Tree
	links   map[devIno]string
	records map[string]Record
	order   []string
}

type devIno struct{ dev, ino uint64 }

// New returns a stager whose tree holds only the root directory (0755,
// root-owned, at the epoch).
func New(o Options) *Stager {
	return &Stager{
		opts:    o,
		tree:    squashfs.NewTree(squashfs.Entry{Mode: fs.ModeDir | 0o755, Mtime: o.Epoch}),
		links:   map[devIno]string{},
		records: map[string]Record{},
	}
}

// Tree returns the staged tree.
func (s *Stager) Tree() *squashfs.Tree { return s.tree }

// Records lists every staged path with its source, in the order staged.
func (s *Stager) Records() []Record {
	out := make([]Record, 0, len(s.order))
	for _, p := range s.order {
		out = append(out, s.records[p])
	}
	return out
}

// ImagePath cleans an image path: absolute, no "..", no trailing slash.
func ImagePath(p string) (string, error) {
	if !strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("image path %q is not absolute", p)
	}
	for _, part := range strings.Split(p, "/") {
		if part == ".." {
			return "", fmt.Errorf("image path %q contains ..", p)
		}
	}
	return path.Clean(p), nil
}

// MkdirAll creates dst and its missing parents as root-owned 0755
// directories.
func (s *Stager) MkdirAll(dst, reason string) error {
	dst, err := ImagePath(dst)
	if err != nil {
		return err
	}
	if dst == "/" {
		return nil
	}
	if s.tree.Has(dst) {
		if !s.tree.IsDir(dst) {
			return fmt.Errorf("%s is in the image already and is not a directory", dst)
		}
		return nil
	}
	if err := s.MkdirAll(path.Dir(dst), reason); err != nil {
		return err
	}
	return s.add(squashfs.Entry{Path: dst, Mode: fs.ModeDir | 0o755, Mtime: s.opts.Epoch}, Record{Path: dst, Reason: reason})
}

func (s *Stager) add(e squashfs.Entry, r Record) error {
	if err := s.tree.Add(e); err != nil {
		return err
	}
	s.records[r.Path] = r
	s.order = append(s.order, r.Path)
	return nil
}

// AddEntry stages a prepared entry (from an archive, say), creating
// missing parent directories.
func (s *Stager) AddEntry(e squashfs.Entry, r Record) error {
	p, err := ImagePath(e.Path)
	if err != nil {
		return err
	}
	if err := s.MkdirAll(path.Dir(p), "parent directory"); err != nil {
		return err
	}
	e.Path, r.Path = p, p
	if e.Mode.IsDir() && s.tree.IsDir(p) {
		return nil
	}
	if err := s.add(e, r); err != nil {
		return fmt.Errorf("%s: %w", r.Source, err)
	}
	return nil
}

// AddBytes stages generated content at dst.
func (s *Stager) AddBytes(dst string, content []byte, mode fs.FileMode, reason string) error {
	dst, err := ImagePath(dst)
	if err != nil {
		return err
	}
	if err := s.MkdirAll(path.Dir(dst), "parent directory"); err != nil {
		return err
	}
	if s.tree.Has(dst) {
		return fmt.Errorf("%s is in the image already (from %s)", dst, s.records[dst].Source)
	}
	data := append([]byte(nil), content...)
	return s.add(squashfs.Entry{Path: dst, Mode: mode.Perm(), Size: int64(len(data)), Mtime: s.opts.Epoch,
		Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }},
		Record{Path: dst, Reason: reason})
}

// Add copies the host path src (a file, symlink or whole directory) to dst
// in the image. Existing directories merge; any other clash is an error.
func (s *Stager) Add(src, dst, reason string) error {
	dst, err := ImagePath(dst)
	if err != nil {
		return err
	}
	fi, err := os.Lstat(src)
	if err != nil {
		return fmt.Errorf("input %s: %w", src, err)
	}
	if err := s.MkdirAll(path.Dir(dst), "parent directory"); err != nil {
		return err
	}
	if !fi.IsDir() {
		return s.addOne(src, dst, fi, reason)
	}
	return filepath.WalkDir(src, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("input %s: %w", p, err)
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := path.Join(dst, filepath.ToSlash(rel))
		fi, err := de.Info()
		if err != nil {
			return fmt.Errorf("input %s: %w", p, err)
		}
		return s.addOne(p, target, fi, reason)
	})
}

func (s *Stager) addOne(src, dst string, fi fs.FileInfo, reason string) error {
	st, _ := fi.Sys().(*syscall.Stat_t)
	e := squashfs.Entry{Path: dst, Mode: fi.Mode(), Mtime: s.opts.Epoch}
	if s.opts.KeepMtimes {
		e.Mtime = fi.ModTime().Unix()
	}
	if s.opts.KeepOwners && st != nil {
		e.UID, e.GID = st.Uid, st.Gid
	}
	rec := Record{Path: dst, Source: src, Reason: reason}
	if dst == "/" {
		if !fi.IsDir() {
			return fmt.Errorf("input %s: only a directory can become the image root", src)
		}
		return nil // the root keeps the stager's defaults
	}
	switch {
	case fi.IsDir():
		if s.tree.Has(dst) {
			if s.tree.IsDir(dst) {
				return nil
			}
			return fmt.Errorf("input %s: %s is in the image already and is not a directory", src, dst)
		}
	case fi.Mode()&fs.ModeSymlink != 0:
		t, err := os.Readlink(src)
		if err != nil {
			return fmt.Errorf("input %s: %w", src, err)
		}
		e.Target = t
	case fi.Mode().IsRegular():
		e.Size = fi.Size()
		e.Open = func() (io.ReadCloser, error) { return os.Open(src) }
		if st != nil && st.Nlink > 1 {
			key := devIno{uint64(st.Dev), st.Ino}
			if first, ok := s.links[key]; ok {
				e = squashfs.Entry{Path: dst, Link: first}
			} else {
				s.links[key] = dst
			}
		}
	}
	if s.tree.Has(dst) {
		from := s.records[dst].Source
		return fmt.Errorf("input %s: %s is in the image already (from %s)", src, dst, from)
	}
	if err := s.add(e, rec); err != nil {
		return fmt.Errorf("input %s: %w", src, err)
	}
	return nil
}
