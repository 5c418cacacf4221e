// Package elfdeps finds the shared-library closure of ELF programs inside
// a target root (the host's / or a cross sysroot) the way the target's
// dynamic loader would, in pure Go: it never runs ldd, the host's loader
// or any code from the input.
//
// It follows glibc's rtld: DT_NEEDED breadth first in load order, reusing
// an object already loaded under that name or SONAME; DT_RPATH of the
// requesting object and then of each object up its loader chain (only
// when the requester has no DT_RUNPATH, and never from an object that has
// one); DT_RUNPATH of the requester; the root's ld.so.cache, filtered to
// the target's arch flags (or, without a cache, the directories of its
// ld.so.conf, as ldconfig would cache them); then the target's default
// directories, Debian multiarch first. DF_1_NODEFLIB skips the cache's
// system-directory entries and the defaults. $ORIGIN, $LIB and $PLATFORM
// expand for the target, never the host. Every candidate must match the
// target's class, byte order, machine and ARM float ABI, else the search
// goes on, as the loader's does. musl (ld-musl-ARCH.so.1) searches the
// RPATH/RUNPATH of the whole chain, then /etc/ld-musl-ARCH.path or its
// defaults.
//
// Placement (see Stage in package build): every object is staged at the
// path the loader found it under, so RPATH, RUNPATH and $ORIGIN keep
// working, and an ld.so.cache listing every staged library is written
// into the image (for musl, an ld-musl-ARCH.path). Why a cache rather
// than only copying to the default directories: a library found through
// ld.so.conf (e.g. /usr/lib/x86_64-linux-gnu/libfakeroot, or a Yocto
// layer's /opt/vendor/lib) is outside the loader's built-in directories,
// and only the cache makes the target loader look there — without the
// host's ld.so.cache, which is never copied.
package elfdeps

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// Object is one ELF file of the closure.
type Object struct {
	Path   string // where the loader finds it, inside the image
	Real   string // Path with symlinks resolved
	Host   string // the host file with its content
	Name   string // the name it was asked for (DT_NEEDED, or a path)
	File   *File
	Loader *Object // the object whose DT_NEEDED first pulled it in
	Reason string  // program, interpreter, needed by X, declared
	fs     fsys    // where $ORIGIN-relative names of this object are looked up
}

// fsys maps image paths to host files: the root itself, or, for a
// program given as a host file outside the root, the program's own build
// tree, so that $ORIGIN/../lib finds the libraries beside it.
type fsys interface {
	resolve(p string) (real, host string, err error)
}

func (r Root) resolve(p string) (string, string, error) {
	real, err := r.Resolve(p)
	if err != nil {
		return "", "", err
	}
	return real, r.host(real), nil
}

// imageOver is the image as far as the build has staged it, over the
// root: a path the build staged (an --add tree, a rootfs) holds what was
// staged there, whatever the root has at that path, as the loader in the
// image will find it. Only staged files and symlinks are known, not the
// directories, so a path below a staged directory symlink falls through
// to the root.
type imageOver struct {
	staged map[string]string // image path → host file or symlink
	root   Root
}

func (o imageOver) resolve(p string) (string, string, error) {
	p = path.Clean("/" + p)
	for hops := 0; hops <= maxHops; hops++ {
		src, ok := o.staged[p]
		if !ok {
			return o.root.resolve(p)
		}
		fi, err := os.Lstat(src)
		if err != nil {
			return "", "", err
		}
		if fi.Mode()&os.ModeSymlink == 0 {
			return p, src, nil
		}
		t, err := os.Readlink(src)
		if err != nil {
			return "", "", err
		}
		if !path.IsAbs(t) {
			t = path.Join(path.Dir(p), t)
		}
		p = path.Clean(t)
	}
	return "", "", &os.PathError{Op: "resolve", Path: p, Err: ErrSymlinkLoop}
}

// hostTree places the host directory HostDir at ImageDir in the image.
type hostTree struct{ ImageDir, HostDir string }

func (h hostTree) resolve(p string) (string, string, error) {
	rel, err := filepath.Rel(h.ImageDir, p)
	if err != nil {
		return "", "", err
	}
	host, err := filepath.EvalSymlinks(filepath.Join(h.HostDir, rel))
	if err != nil {
		return "", "", err
	}
	return p, host, nil
}

// Program is a program to resolve: a path inside the root, or a host file
// to be placed at Path in the image.
type Program struct {
	Path string // in the image
	Host string // optional: the host file, when it is not in the root
	// Plugin marks an object the program maps or runs later (an extension
	// module, a plugin, a helper program): its libraries are resolved
	// like the program's, but its SONAME satisfies nobody's DT_NEEDED —
	// the loader does not know it until it is loaded, so a library that
	// happens to share its name must still be found on the search path.
	Plugin bool
}

// Soname is the object's DT_SONAME, or its file name.
func (o *Object) Soname() string {
	if o.File.Soname != "" {
		return o.File.Soname
	}
	return path.Base(o.Path)
}

// Result is the closure.
type Result struct {
	Target  Target
	Musl    bool
	Interp  *Object   // nil for static programs
	Objects []*Object // programs, then libraries in load order
	// Needs has one entry per DT_NEEDED (and declared library) met: Loader
	// records only the first requester, provenance wants them all.
	Needs []Need
}

// Need says that NeededBy (an image path; "" for a declared library)
// asked for Name and got Library.
type Need struct {
	Library, Name, NeededBy string
}

// NotFoundError says which library is missing, through which chain, and
// everywhere the search looked.
type NotFoundError struct {
	Chain    []string
	Searched []string
	Skipped  []string
}

func (e *NotFoundError) Error() string {
	s := strings.Join(e.Chain, " → ") + ": not found (searched: " + strings.Join(e.Searched, ", ") + ")"
	if len(e.Skipped) > 0 {
		s += "; skipped wrong-arch candidates: " + strings.Join(e.Skipped, ", ")
	}
	return s
}

// Options of a resolution.
type Options struct {
	Root Root
	// Target, when set, is what every object must match; otherwise it is
	// the first program's.
	Target *Target
	// Extra are dlopen'd libraries the program cannot declare: SONAMEs
	// searched like DT_NEEDED of the first program, or absolute paths.
	Extra []string
	// Image maps image paths the build has staged already to their host
	// files or symlinks; the search looks there before the root.
	Image map[string]string
}

type resolver struct {
	opts     Options
	root     Root
	fs       fsys // the root, under what the image holds already
	t        Target
	musl     bool
	cache    []CacheEntry
	hasCache bool
	conf     []string
	defaults []string
	lib      string // $LIB
	loaded   map[string]*Object
	objects  []*Object
	main     *Object
	errs     []error
	needs    []Need
}

// Resolve computes the closure of the programs (paths inside the root).
func Resolve(programs []string, opts Options) (*Result, error) {
	ps := make([]Program, len(programs))
	for i, p := range programs {
		ps[i] = Program{Path: p}
	}
	return ResolvePrograms(ps, opts)
}

// ResolvePrograms computes the closure of programs that may live outside
// the root.
func ResolvePrograms(programs []Program, opts Options) (*Result, error) {
	if len(programs) == 0 {
		return nil, errors.New("no program to resolve")
	}
	r := &resolver{opts: opts, root: opts.Root, loaded: map[string]*Object{}}
	r.fs = r.root
	if len(opts.Image) > 0 {
		r.fs = imageOver{staged: opts.Image, root: r.root}
	}
	res := &Result{}
	for i, prog := range programs {
		p := prog.Path
		fs := r.fs
		if prog.Host != "" {
			fs = hostTree{ImageDir: path.Dir(p), HostDir: filepath.Dir(prog.Host)}
		}
		real, host, err := fs.resolve(p)
		if err != nil {
			return nil, fmt.Errorf("program %s: %w", p, err)
		}
		f, err := ReadFile(host)
		if err != nil {
			return nil, fmt.Errorf("program %s: %w", p, err)
		}
		if i == 0 {
			if opts.Target != nil {
				r.t = *opts.Target
			} else if r.t, err = TargetOf(f); err != nil {
				return nil, fmt.Errorf("program %s: %w", p, err)
			}
		}
		if ok, why := r.t.Matches(f); !ok {
			return nil, fmt.Errorf("program %s is %s, but the target is %s", p, why, r.t.Arch)
		}
		o := &Object{Path: p, Real: real, Host: host, Name: p, File: f, Reason: "program", fs: fs}
		if r.main == nil {
			r.main = o
		}
		if prog.Plugin {
			r.addByPath(o)
			continue
		}
		r.add(o)
	}
	res.Target = r.t
	if interp := r.main.File.Interp; interp != "" {
		r.musl = strings.Contains(path.Base(interp), "ld-musl")
		o, skipped, err := r.tryPath(r.fs, interp)
		if err != nil || o == nil {
			return nil, &NotFoundError{Chain: []string{path.Base(r.main.Path), interp + " (interpreter)"}, Searched: []string{interp}, Skipped: skipped}
		}
		o.Name, o.Loader, o.Reason = interp, r.main, "interpreter"
		r.add(o)
		res.Interp = o
	}
	res.Musl = r.musl
	r.setupSearch()

	for _, e := range opts.Extra {
		r.need(e, nil, "declared")
	}
	// Breadth first: objects appended while iterating are visited in turn.
	for i := 0; i < len(r.objects); i++ {
		o := r.objects[i]
		for _, n := range o.File.Needed {
			r.need(n, o, "needed by "+o.Path)
		}
	}
	if len(r.errs) > 0 {
		return nil, errors.Join(r.errs...)
	}
	res.Objects, res.Needs = r.objects, r.needs
	return res, nil
}

func (r *resolver) add(o *Object) {
	r.addByPath(o)
	r.loaded[o.Name] = o
	if o.File.Soname != "" {
		r.loaded[o.File.Soname] = o
	}
}

func (r *resolver) addByPath(o *Object) {
	r.objects = append(r.objects, o)
	r.loaded[o.Real] = o
	r.loaded[o.Path] = o
}

// needed records that requester's name was satisfied by o.
func (r *resolver) needed(name string, requester, o *Object) {
	n := Need{Library: o.Path, Name: name}
	if requester != nil {
		n.NeededBy = requester.Path
	}
	r.needs = append(r.needs, n)
}

func (r *resolver) setupSearch() {
	t := r.t
	if r.musl {
		if b, err := os.ReadFile(r.root.host("/etc/ld-musl-" + t.MuslArch + ".path")); err == nil {
			r.defaults = strings.FieldsFunc(string(b), func(c rune) bool { return c == ':' || c == '\n' })
		} else {
			r.defaults = []string{"/lib", "/usr/local/lib", "/usr/lib"}
		}
		r.lib = "lib"
		return
	}
	if b, err := os.ReadFile(r.root.host("/etc/ld.so.cache")); err == nil {
		if c, err := ParseCache(b, byteOrder(t)); err == nil {
			r.cache, r.hasCache = c, true
		} else {
			r.errs = append(r.errs, fmt.Errorf("%s: %w", r.root.host("/etc/ld.so.cache"), err))
		}
	}
	if !r.hasCache {
		r.conf = ReadLdSoConf(r.root)
	}
	multi := r.isDir("/lib/"+t.Triplet) || r.isDir("/usr/lib/"+t.Triplet)
	if multi {
		r.defaults = append(r.defaults, "/lib/"+t.Triplet, "/usr/lib/"+t.Triplet)
		r.lib = "lib/" + t.Triplet
	} else {
		r.lib = "lib"
	}
	if t.Class == 64 && !multi && r.isDir("/lib64") {
		r.defaults = append(r.defaults, "/lib64", "/usr/lib64")
		r.lib = "lib64"
	}
	r.defaults = append(r.defaults, "/lib", "/usr/lib")
}

func (r *resolver) isDir(p string) bool {
	real, err := r.root.Resolve(p)
	if err != nil {
		return false
	}
	fi, err := os.Stat(r.root.host(real))
	return err == nil && fi.IsDir()
}

// need finds name for requester (nil for declared libraries).
func (r *resolver) need(name string, requester *Object, reason string) {
	if prev, ok := r.loaded[name]; ok {
		if prev.File != nil {
			r.needed(name, requester, prev)
		}
		return
	}
	o, searched, skipped := r.search(name, requester)
	if o == nil {
		var chain []string
		for l := requester; l != nil; l = l.Loader {
			n := path.Base(l.Path)
			if l.Reason != "program" {
				n = l.Name
			}
			chain = append([]string{n}, chain...)
		}
		if requester == nil {
			chain = []string{path.Base(r.main.Path), "declared"}
		}
		chain = append(chain, name)
		r.errs = append(r.errs, &NotFoundError{Chain: chain, Searched: searched, Skipped: skipped})
		r.loaded[name] = &Object{} // report once
		return
	}
	if prev, ok := r.loaded[o.Real]; ok && prev.File != nil {
		// The same file under another name: the loader maps it once.
		r.loaded[name] = prev
		r.needed(name, requester, prev)
		return
	}
	o.Name, o.Loader, o.Reason = name, requester, reason
	if requester == nil {
		o.Loader = nil
	}
	r.add(o)
	r.needed(name, requester, o)
}

// tryPath opens an absolute candidate; nil when missing or unusable.
func (r *resolver) tryPath(fs fsys, p string) (*Object, []string, error) {
	real, host, err := fs.resolve(p)
	if err != nil {
		return nil, nil, err
	}
	f, err := ReadFile(host)
	if err != nil {
		if errors.Is(err, ErrNotELF) {
			return nil, []string{p + " (not ELF)"}, nil
		}
		return nil, []string{p + " (" + err.Error() + ")"}, nil
	}
	if ok, why := r.t.Matches(f); !ok {
		return nil, []string{p + " (" + why + ")"}, nil
	}
	return &Object{Path: path.Clean(p), Real: real, Host: host, File: f, fs: fs}, nil, nil
}

func (r *resolver) origin(o *Object) string {
	if o == nil {
		return "$ORIGIN" // not expandable: the dir is dropped
	}
	if o.Reason == "program" {
		return path.Dir(o.Real) // the kernel's realpath of the executable
	}
	return path.Dir(o.Path)
}

// expand replaces the dynamic string tokens of a search dir.
func (r *resolver) expand(dir string, o *Object) (string, bool) {
	for _, tok := range []struct{ name, val string }{
		{"ORIGIN", r.origin(o)}, {"LIB", r.lib}, {"PLATFORM", r.t.Platform},
	} {
		dir = strings.ReplaceAll(dir, "${"+tok.name+"}", tok.val)
		dir = strings.ReplaceAll(dir, "$"+tok.name, tok.val)
	}
	if strings.Contains(dir, "$") || !path.IsAbs(dir) {
		return "", false // an unknown token or a relative dir: rtld drops it
	}
	return path.Clean(dir), true
}

func (r *resolver) search(name string, req *Object) (*Object, []string, []string) {
	var searched, skipped []string
	try := func(fs fsys, label, dir string) *Object {
		searched = append(searched, label)
		o, sk, err := r.tryPath(fs, path.Join(dir, name))
		skipped = append(skipped, sk...)
		if err != nil {
			return nil
		}
		return o
	}
	if strings.Contains(name, "/") {
		o, sk, _ := r.tryPath(r.fs, path.Clean("/"+name))
		return o, []string{name}, sk
	}
	tryDirs := func(kind string, o *Object, dirs []string) *Object {
		for _, d := range dirs {
			ed, ok := r.expand(d, o)
			if !ok {
				continue
			}
			label := ed
			if kind != "" {
				label = kind + " " + d
				if d != ed {
					label += "=" + ed
				}
			}
			fs := r.fs
			if o != nil && o.fs != nil && strings.Contains(d, "ORIGIN") {
				fs = o.fs // $ORIGIN stays in the tree its object came from
			}
			if found := try(fs, label, ed); found != nil {
				return found
			}
		}
		return nil
	}
	anchor := req
	if anchor == nil {
		anchor = r.main
	}
	if r.musl {
		for l := anchor; l != nil; l = l.Loader {
			dirs := l.File.RPath
			if l.File.HasRun {
				dirs = l.File.RunPath
			}
			if o := tryDirs("RPATH", l, dirs); o != nil {
				return o, searched, skipped
			}
		}
		return tryDirs("", nil, r.defaults), searched, skipped
	}
	if !anchor.File.HasRun {
		mainDone := false
		for l := anchor; l != nil; l = l.Loader {
			if l.File.HasRun {
				continue // its DT_RPATH is ignored
			}
			if o := tryDirs("RPATH", l, l.File.RPath); o != nil {
				return o, searched, skipped
			}
			mainDone = mainDone || l == r.main
		}
		if !mainDone && !r.main.File.HasRun {
			if o := tryDirs("RPATH", r.main, r.main.File.RPath); o != nil {
				return o, searched, skipped
			}
		}
	}
	if o := tryDirs("RUNPATH", anchor, anchor.File.RunPath); o != nil {
		return o, searched, skipped
	}
	nodeflib := anchor.File.NoDefLib
	if r.hasCache {
		searched = append(searched, "ld.so.cache")
		if p, ok := LookupCache(r.cache, name, r.t.CacheID); ok && !(nodeflib && r.inDefaults(p)) {
			o, sk, err := r.tryPath(r.fs, p)
			skipped = append(skipped, sk...)
			if err == nil && o != nil {
				return o, searched, skipped
			}
		}
	} else if o := tryDirs("ld.so.conf", anchor, r.conf); o != nil {
		return o, searched, skipped
	}
	if nodeflib {
		searched = append(searched, "(default dirs skipped: DF_1_NODEFLIB)")
		return nil, searched, skipped
	}
	return tryDirs("", anchor, r.defaults), searched, skipped
}

func (r *resolver) inDefaults(p string) bool {
	for _, d := range r.defaults {
		if path.Dir(p) == d {
			return true
		}
	}
	return false
}
