package squashfs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"strings"
)

// Entry describes one file to put in the image.
type Entry struct {
	// Path is slash-separated and relative to the image root ("usr/bin/x").
	// The root itself is "" or ".".
	Path string
	// Mode carries the type bits (fs.ModeDir, fs.ModeSymlink or none for a
	// regular file) and the permission bits including setuid, setgid and
	// sticky.
	Mode fs.FileMode
	UID  uint32
	GID  uint32
	// Mtime in seconds since the epoch.
	Mtime int64
	// Size of a regular file's content in bytes.
	Size int64
	// Target of a symlink, stored as is (absolute, relative or dangling).
	Target string
	// Link makes this entry a hardlink to the regular file at that path,
	// which must be added before it. The other fields are ignored.
	Link string
	// Open returns the content of a regular file. It may be called more than
	// once (content de-duplication reads a file twice) and must return the
	// same Size bytes each time.
	Open func() (io.ReadCloser, error)
}

// ErrUnsupportedType is returned for device nodes, fifos, sockets and other
// file types an image must not carry.
var ErrUnsupportedType = errors.New("unsupported file type")

// node is one inode of the image; hardlinked paths share a node.
type node struct {
	entry    Entry
	children map[string]*node // directories only
	sorted   []string         // child names in byte order, filled by seal
	nlink    uint32           // names pointing at a file node
	parent   *node

	// Filled while writing.
	ino  uint32
	ref  uint64 // inode reference: block<<16 | offset
	data *fileData
	done bool
}

func (n *node) isDir() bool     { return n.entry.Mode.IsDir() }
func (n *node) isSymlink() bool { return n.entry.Mode&fs.ModeSymlink != 0 }

// Tree is an in-memory description of the image: metadata only; file
// content is read through Entry.Open while the image is written.
type Tree struct {
	root    *node
	entries int
	nodes   int
}

// NewTree returns a tree holding only the root directory with the given
// mode bits, owner and mtime.
func NewTree(root Entry) *Tree {
	root.Path = ""
	root.Mode = fs.ModeDir | root.Mode.Perm() | root.Mode&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)
	return &Tree{root: &node{entry: root, children: map[string]*node{}}, nodes: 1}
}

// cleanPath checks p is a plain relative path and returns its parts.
func cleanPath(p string) ([]string, error) {
	p = strings.TrimPrefix(p, "/")
	if p == "" || p == "." {
		return nil, nil
	}
	if path.Clean(p) != p {
		return nil, fmt.Errorf("path %q is not clean", p)
	}
	parts := strings.Split(p, "/")
	for _, part := range parts {
		switch {
		case part == "..":
			return nil, fmt.Errorf("path %q leaves the image root", p)
		case len(part) > maxNameLen:
			return nil, fmt.Errorf("path %q: name longer than %d bytes", p, maxNameLen)
		case strings.IndexByte(part, 0) >= 0:
			return nil, fmt.Errorf("path %q: name contains a NUL byte", p)
		}
	}
	return parts, nil
}

// lookup returns the node at parts, or nil.
func (t *Tree) lookup(parts []string) *node {
	n := t.root
	for _, p := range parts {
		if !n.isDir() {
			return nil
		}
		n = n.children[p]
		if n == nil {
			return nil
		}
	}
	return n
}

// Add puts e into the tree. Parent directories must exist, so callers add
// in walk order (a directory before what it contains); an existing path is
// an error, as is any type other than directory, regular file and symlink.
func (t *Tree) Add(e Entry) error {
	parts, err := cleanPath(e.Path)
	if err != nil {
		return err
	}
	if len(parts) == 0 {
		return fmt.Errorf("add %q: the root exists already; set it with NewTree", e.Path)
	}
	e.Path = strings.Join(parts, "/")
	parent := t.lookup(parts[:len(parts)-1])
	if parent == nil || !parent.isDir() {
		return fmt.Errorf("add %s: parent directory %q is not in the tree", e.Path, path.Dir(e.Path))
	}
	name := parts[len(parts)-1]
	if _, ok := parent.children[name]; ok {
		return fmt.Errorf("add %s: path exists already", e.Path)
	}
	var n *node
	switch {
	case e.Link != "":
		lparts, err := cleanPath(e.Link)
		if err != nil {
			return fmt.Errorf("add %s: hardlink: %w", e.Path, err)
		}
		n = t.lookup(lparts)
		if n == nil || !n.entry.Mode.IsRegular() {
			return fmt.Errorf("add %s: hardlink target %q is not a regular file in the tree", e.Path, e.Link)
		}
		n.nlink++
		parent.children[name] = n
		t.entries++
		return nil
	case e.Mode.IsDir():
		n = &node{entry: e, children: map[string]*node{}}
	case e.Mode&fs.ModeSymlink != 0:
		if e.Target == "" {
			return fmt.Errorf("add %s: symlink with an empty target", e.Path)
		}
		if len(e.Target) > 4095 {
			return fmt.Errorf("add %s: symlink target longer than 4095 bytes", e.Path)
		}
		n = &node{entry: e}
	case e.Mode.IsRegular():
		if e.Size < 0 {
			return fmt.Errorf("add %s: negative size", e.Path)
		}
		if e.Size > 0 && e.Open == nil {
			return fmt.Errorf("add %s: regular file without content", e.Path)
		}
		n = &node{entry: e, nlink: 1}
	default:
		return fmt.Errorf("add %s: %w (%s): images carry only directories, regular files and symlinks", e.Path, ErrUnsupportedType, typeName(e.Mode))
	}
	n.parent = parent
	parent.children[name] = n
	t.entries++
	t.nodes++
	return nil
}

// Has reports whether p exists in the tree.
func (t *Tree) Has(p string) bool {
	parts, err := cleanPath(p)
	return err == nil && t.lookup(parts) != nil
}

// IsDir reports whether p is a directory in the tree.
func (t *Tree) IsDir(p string) bool {
	parts, err := cleanPath(p)
	if err != nil {
		return false
	}
	n := t.lookup(parts)
	return n != nil && n.isDir()
}

// Len is the number of paths in the tree, without the root.
func (t *Tree) Len() int { return t.entries }

func typeName(m fs.FileMode) string {
	switch {
	case m&fs.ModeCharDevice != 0:
		return "character device"
	case m&fs.ModeDevice != 0:
		return "block device"
	case m&fs.ModeNamedPipe != 0:
		return "fifo"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeIrregular != 0:
		return "irregular file"
	}
	return m.Type().String()
}

// seal sorts every directory's children by name, byte-wise as the kernel
// expects for lookups.
func (t *Tree) seal() {
	var walk func(n *node)
	walk = func(n *node) {
		n.sorted = n.sorted[:0]
		for name := range n.children {
			n.sorted = append(n.sorted, name)
		}
		sort.Strings(n.sorted)
		for _, name := range n.sorted {
			if c := n.children[name]; c.isDir() {
				walk(c)
			}
		}
	}
	walk(t.root)
}

// walkFiles calls fn for every regular-file node once, in image order.
func (t *Tree) walkFiles(fn func(n *node) error) error {
	seen := map[*node]bool{}
	var walk func(n *node) error
	walk = func(n *node) error {
		for _, name := range n.sorted {
			c := n.children[name]
			switch {
			case c.isDir():
				if err := walk(c); err != nil {
					return err
				}
			case c.entry.Mode.IsRegular() && !seen[c]:
				seen[c] = true
				if err := fn(c); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return walk(t.root)
}

// ContentSize is the sum of the sizes of the tree's regular files, each
// hardlinked file counted once.
func (t *Tree) ContentSize() int64 {
	t.seal()
	var n int64
	_ = t.walkFiles(func(f *node) error { n += f.entry.Size; return nil })
	return n
}
