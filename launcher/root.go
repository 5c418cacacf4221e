package launcher

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"cimg.dev/cimg/internal/loop"
)

// enterRoot builds the app's world on the calling thread, top to bottom:
// it leaves the thread in fresh namespaces with the image as its root and
// the app's working directory as its cwd. The caller has locked the
// thread and never unlocks it: these namespaces are the thread's alone,
// and the app is forked from it (fork.go). The image is assembled on
// STATE/root, a directory of the host that only this namespace mounts
// on. image is the verified image file, mounted here only with
// PrivateMount; volumes is the operator's volume directory. atProc and
// beforePivot are cimg-oci's: the first forks the process where the
// config lists /proc, the second runs the createContainer hooks.
func enterRoot(p *Plan, image *os.File, volumes string, atProc func(root, proc *os.File) error, beforePivot func() error) error {
	if err := enterNamespaces(p); err != nil {
		return err
	}
	return buildRoot(p, image, volumes, atProc, beforePivot)
}

// enterNamespaces is enterRoot's first half, which needs nothing but the
// plan: cimg-run's launch thread runs it while the parent is still
// mounting the image and making the cgroup (launch.spawn).
func enterNamespaces(p *Plan) error {
	return unshareNamespaces(p, p.Unshare)
}

// unshareNamespaces puts this thread in new namespaces of the kinds
// flags names, with a copy of its mounts that receives nothing from the
// host's.
func unshareNamespaces(p *Plan, flags uintptr) error {
	// New namespaces for this thread only; the pid and cgroup namespaces
	// come at fork and in the child (they take effect for children, and
	// after the cgroup join).
	if err := unix.Unshare(int(flags)); err != nil {
		return fmt.Errorf("unshare namespaces: %w", err)
	}
	// A private / first (slave, if asked: the host's mounts still come
	// in): nothing we mount may propagate to the host.
	prop, name := uintptr(unix.MS_PRIVATE), "private"
	if p.HostSlave {
		prop, name = unix.MS_SLAVE, "slave"
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|prop, ""); err != nil {
		return fmt.Errorf("make / %s: %w", name, err)
	}
	return nil
}

// hostView is what remountNamespace returns the thread to: the host's
// mount namespace, and the thread's root and working directory in it,
// opened before the thread's first unshare (-1: not opened, err says
// why; nil: none needed, with a private mount).
type hostView struct {
	ns, root, cwd int
	err           error // the first open that failed, for remountNamespace to report
}

func openHostView() *hostView {
	h := &hostView{ns: -1, root: -1, cwd: -1}
	open := func(path string, flags int) int {
		fd, err := unix.Open(path, flags|unix.O_CLOEXEC, 0)
		if err != nil && h.err == nil {
			h.err = fmt.Errorf("open %s: %w", path, err)
		}
		return fd
	}
	h.ns = open("/proc/thread-self/ns/mnt", unix.O_RDONLY)
	h.root = open("/", unix.O_PATH|unix.O_DIRECTORY)
	h.cwd = open(".", unix.O_PATH|unix.O_DIRECTORY)
	return h
}

func (h *hostView) close() {
	if h == nil {
		return
	}
	for _, fd := range []int{h.ns, h.root, h.cwd} {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}

// remountNamespace replaces this thread's mount namespace, copied from
// the host's before the image's cache mount was made there, by a new
// copy that has it: cimg-run's launch thread made its namespaces while
// the parent mounted (launch.spawn). setns moves the thread's root and
// working directory to the namespace's root, so both are set back
// first: a relative --state-dir is resolved from the working directory,
// and a chrooted cimg-run must stay in its chroot.
func remountNamespace(p *Plan, h *hostView) error {
	if h.err != nil {
		return fmt.Errorf("back to the host's mounts: %w", h.err)
	}
	if err := unix.Setns(h.ns, unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("back to the host's mount namespace: %w", err)
	}
	if err := unix.Fchdir(h.root); err != nil {
		return fmt.Errorf("back to the root directory: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("back to the root directory: %w", err)
	}
	if err := unix.Fchdir(h.cwd); err != nil {
		return fmt.Errorf("back to the working directory: %w", err)
	}
	return unshareNamespaces(p, unix.CLONE_NEWNS)
}

// buildRoot is enterRoot's second half, in the namespaces enterNamespaces
// made: the mounts, the names and the pivot.
func buildRoot(p *Plan, image *os.File, volumes string, atProc func(root, proc *os.File) error, beforePivot func() error) error {
	root := filepath.Join(p.StateDir, "root")
	// Every mount of the plan, in order. Targets are opened below the
	// new root without following any symlink, so nothing the image or a
	// writable volume holds can point a mount at the host.
	b := &builder{root: root, plan: p, image: image, volumes: volumes}
	for i, m := range p.Mounts {
		if atProc != nil && i == p.ProcAfter {
			if err := b.procAt(atProc); err != nil {
				return err
			}
		}
		if err := b.mount(i, m); err != nil {
			return fmt.Errorf("mount %s (%s): %w", m.Target, m.Kind, err)
		}
	}
	if atProc != nil && p.ProcAfter >= len(p.Mounts) {
		if err := b.procAt(atProc); err != nil {
			return err
		}
	}
	// /proc is mounted by the child, by path (or through the fd given to
	// atProc): it must be a real directory of the image, or that mount
	// would follow a link the image put there (CVE-2019-16884 class).
	proc, err := b.open("/proc", unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return fmt.Errorf("mount /proc: %w", err)
	}
	proc.Close()
	// Names and network of the new namespaces.
	if p.Hostname != "" {
		if err := unix.Sethostname([]byte(p.Hostname)); err != nil {
			return fmt.Errorf("sethostname: %w", err)
		}
	}
	if p.Unshare&unix.CLONE_NEWNET != 0 {
		if err := loopbackUp(); err != nil {
			return err
		}
	}
	if err := writeSysctls(p.Sysctl); err != nil { // ocimount.go
		return err
	}
	// The last look at the root from outside (cimg-oci's createContainer
	// hooks).
	if beforePivot != nil {
		if err := beforePivot(); err != nil {
			return err
		}
	}
	// Switch root and drop the old one, so no host path stays reachable.
	if err := pivot(root); err != nil {
		return err
	}
	if err := unix.Chdir(p.Workdir); err != nil {
		return fmt.Errorf("chdir %s: %w", p.Workdir, err)
	}
	// The working directory must be inside the new root: getcwd names a
	// directory outside it "(unreachable)…", and a symlink or /proc
	// magic link could have led there.
	if wd, err := unix.Getwd(); err != nil || wd != p.Workdir {
		return fmt.Errorf("workdir %s resolves to %q, outside the image or through a link: refused", p.Workdir, wd)
	}
	// The command, followed as execve will follow it, must not lead into
	// /proc: there the child's /proc/self/exe is the host's cimg-run.
	return checkExec(p.Argv[0])
}

// procAt hands the new root and its /proc directory (opened without
// following links) to atProc, which has the child mount /proc there.
func (b *builder) procAt(atProc func(root, proc *os.File) error) error {
	root, err := os.OpenFile(b.root, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("the new root: %w", err)
	}
	defer root.Close()
	dir, err := b.open("/proc", unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return fmt.Errorf("mount /proc: %w", err)
	}
	defer dir.Close()
	return atProc(root, dir)
}

// builder carries what the mount steps share.
type builder struct {
	root    string
	plan    *Plan
	image   *os.File
	volumes string
}

func (b *builder) mount(i int, m MountSpec) error {
	if m.Kind == KindImage {
		return b.mountImage(m)
	}
	if m.Kind == KindRootfs || m.Kind == KindOCI || m.Kind == KindDevice || m.Kind == KindRootfsRO {
		return b.ociMount(m) // ocimount.go
	}
	target, err := b.open(m.Target, unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return err
	}
	defer target.Close()
	dst := fdPath(target)
	switch m.Kind {
	case KindTmpfs:
		return unix.Mount("tmpfs", dst, "tmpfs", m.Flags, m.Data)
	case KindDevNodes:
		return devNodes(target)
	case KindNotify:
		return notifySocket(target, m.Source)
	case KindDevpts:
		return unix.Mount("devpts", dst, "devpts", m.Flags, m.Data)
	case KindRemount:
		return unix.Mount("", dst, "", unix.MS_REMOUNT|m.Flags, m.Data)
	case KindOverlay:
		return b.overlay(i, m, target)
	case KindBind:
		src, err := b.bindSource(m)
		if err != nil {
			return err
		}
		defer src.Close()
		if err := unix.Mount(fdPath(src), dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind %s: %w", src.Name(), err)
		}
		return b.setFlags(m)
	}
	return fmt.Errorf("mount kind %q is not known to this launcher", m.Kind)
}

// mountImage puts the image's squashfs on the new root, read-only.
func (b *builder) mountImage(m MountSpec) error {
	if b.plan.PrivateMount {
		// The image mounted for this launch only, from the fd the parent
		// verified; it goes (and its loop device with it) when we do.
		dev, err := loop.Attach(b.image.Fd(), 0, b.plan.PayloadSize)
		if err != nil {
			return fmt.Errorf("loop-attach the image: %w", err)
		}
		err = unix.Mount(dev.Path, b.root, "squashfs", m.Flags, "")
		dev.LimitReadahead() // the mount raised it
		dev.Close()
		if err != nil {
			return fmt.Errorf("mount squashfs %s on %s: %w", dev.Path, b.root, err)
		}
		return nil
	}
	// A bind of the cached squashfs mount, with the flags of this launch.
	if err := unix.Mount(b.plan.Image, b.root, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s on %s: %w", b.plan.Image, b.root, err)
	}
	return b.setFlags(m)
}

// open opens p (absolute, inside the new root) below the root without
// following symlinks.
func (b *builder) open(p string, flags int) (*os.File, error) {
	rootFD, err := unix.Open(b.root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", b.root, err)
	}
	defer unix.Close(rootFD)
	fd, err := openBeneath(rootFD, p, flags)
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil, fmt.Errorf("the image has no %s directory to mount on (add it to the image, e.g. with cimg-build --add): %w", p, err)
	case errors.Is(err, unix.ELOOP), errors.Is(err, unix.ENOTDIR), errors.Is(err, unix.EXDEV):
		return nil, fmt.Errorf("the image's %s is, or passes through, a symlink or a non-directory: refusing to mount there, it could lead out of the image: %w", p, err)
	case err != nil:
		return nil, fmt.Errorf("open %s in the image: %w", p, err)
	}
	return os.NewFile(uintptr(fd), p), nil
}

// setFlags applies m's flags to the mount at its target and, where m is
// Recursive, to every mount below it: a read-only bind of / must not
// leave /dev or /proc under it writable (mount_setattr AT_RECURSIVE,
// Linux 5.12; before that, each mount remounted by itself).
func (b *builder) setFlags(m MountSpec) error {
	t, err := b.open(m.Target, unix.O_PATH|unix.O_DIRECTORY) // the new mount's root now
	if err != nil {
		return err
	}
	defer t.Close()
	// Only the four flags the plan uses reach it (ocimount.go).
	attr := mountAttr(m.Flags & (unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC))
	flags := unix.AT_EMPTY_PATH
	if m.Recursive {
		flags |= unix.AT_RECURSIVE
	}
	err = unix.MountSetattr(int(t.Fd()), "", uint(flags), attr)
	if err != unix.ENOSYS {
		return err
	}
	remount := func(p string) error {
		return unix.Mount("", p, "", unix.MS_BIND|unix.MS_REMOUNT|m.Flags, "")
	}
	if err := remount(fdPath(t)); err != nil {
		return err
	}
	if !m.Recursive {
		return nil
	}
	top := filepath.Join(b.root, m.Target)
	for _, p := range submounts(top) {
		if err := remount(p); err != nil && err != unix.EACCES {
			return fmt.Errorf("remount %s: %w", p, err)
		}
	}
	return nil
}

// submounts lists the mount points strictly below dir, from this
// thread's mountinfo (fields: id parent major:minor root mount-point ...).
func submounts(dir string) []string {
	b, _ := os.ReadFile("/proc/thread-self/mountinfo")
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			out = append(out, unescapeMountinfo(f[4]))
		}
	}
	return out
}

func unescapeMountinfo(s string) string {
	return strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(s)
}

// bindSource opens a bind's source: a granted host path as the operator
// named it, or a volume below the volume directory without following any
// symlink.
func (b *builder) bindSource(m MountSpec) (*os.File, error) {
	if m.Volume == "" {
		fd, err := unix.Open(m.Source, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("host path %s: %w", m.Source, err)
		}
		return os.NewFile(uintptr(fd), m.Source), nil
	}
	return b.volume(m.Volume)
}

// volume opens rel below the volume directory, without following symlinks.
func (b *builder) volume(rel string) (*os.File, error) {
	dir, err := unix.Open(b.volumes, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, fmt.Errorf("volume directory %s: %w", b.volumes, err)
	}
	defer unix.Close(dir)
	fd, err := openBeneath(dir, rel, unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return nil, fmt.Errorf("volume %s in %s (a symlink there is refused): %w", rel, b.volumes, err)
	}
	return os.NewFile(uintptr(fd), filepath.Join(b.volumes, rel)), nil
}

// overlay puts a writable overlay on target, over the image's own
// directory there. Its layer is a volume (upper and work opened inside it
// without following symlinks the app may have left there), or a tmpfs on
// STATE/scratch, a host directory mounted on only in this namespace: it
// becomes unreachable with the old root, and lives as long as the
// overlay using it.
func (b *builder) overlay(i int, m MountSpec, target *os.File) error {
	var layer *os.File
	var err error
	if m.Volume != "" {
		if layer, err = b.volume(m.Volume); err != nil {
			return err
		}
	} else {
		dir := filepath.Join(b.plan.StateDir, "scratch", strconv.Itoa(i))
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		if err := unix.Mount("tmpfs", dir, "tmpfs", writable, "mode=0700,"+m.Data); err != nil {
			return fmt.Errorf("tmpfs for the overlay's layer: %w", err)
		}
		if layer, err = os.Open(dir); err != nil {
			return err
		}
	}
	defer layer.Close()
	var dirs [2]*os.File
	for j, name := range []string{"upper", "work"} {
		if err := unix.Mkdirat(int(layer.Fd()), name, 0o755); err != nil && err != unix.EEXIST {
			return fmt.Errorf("overlay layer %s/%s: %w", layer.Name(), name, err)
		}
		fd, err := openBeneath(int(layer.Fd()), name, unix.O_PATH|unix.O_DIRECTORY)
		if err != nil {
			return fmt.Errorf("overlay layer %s/%s (a symlink there is refused): %w", layer.Name(), name, err)
		}
		dirs[j] = os.NewFile(uintptr(fd), name)
		defer dirs[j].Close()
	}
	dst := fdPath(target)
	opts := "lowerdir=" + overlayEscape(dst) + ",upperdir=" + overlayEscape(fdPath(dirs[0])) + ",workdir=" + overlayEscape(fdPath(dirs[1]))
	if err := unix.Mount("overlay", dst, "overlay", m.Flags, opts); err != nil {
		if err == unix.ENODEV {
			return fmt.Errorf("the kernel has no overlayfs (CONFIG_OVERLAY_FS; modprobe overlay)")
		}
		return fmt.Errorf("overlay (layer %s): %w", layer.Name(), err)
	}
	return nil
}

// overlayEscape escapes what overlayfs's option parser splits on.
func overlayEscape(p string) string {
	return strings.NewReplacer(`\`, `\\`, ",", `\,`, ":", `\:`).Replace(p)
}

// devNodes makes the standard nodes in the fresh /dev, each bound onto
// itself so that it still opens once /dev turns nodev; then the
// directories and links a /dev has.
func devNodes(dev *os.File) error {
	dir, err := os.Open(fdPath(dev)) // a real fd: mknodat needs one
	if err != nil {
		return err
	}
	defer dir.Close()
	d := int(dir.Fd())
	for _, n := range []struct {
		name         string
		major, minor uint32
	}{{"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7}, {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0}} {
		if err := unix.Mknodat(d, n.name, unix.S_IFCHR|0o666, int(unix.Mkdev(n.major, n.minor))); err != nil {
			return fmt.Errorf("mknod /dev/%s: %w", n.name, err)
		}
		if err := unix.Fchmodat(d, n.name, 0o666, 0); err != nil { // past the umask
			return err
		}
		fd, err := unix.Openat(d, n.name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		p := "/proc/thread-self/fd/" + strconv.Itoa(fd)
		err = unix.Mount(p, p, "", unix.MS_BIND, "")
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("bind /dev/%s onto itself: %w", n.name, err)
		}
	}
	for _, name := range []string{"pts", "shm"} {
		if err := unix.Mkdirat(d, name, 0o755); err != nil {
			return fmt.Errorf("mkdir /dev/%s: %w", name, err)
		}
	}
	for name, target := range map[string]string{"ptmx": "pts/ptmx", "fd": "/proc/self/fd", "stdin": "/proc/self/fd/0",
		"stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"} {
		if err := unix.Symlinkat(target, d, name); err != nil {
			return fmt.Errorf("symlink /dev/%s: %w", name, err)
		}
	}
	return nil
}

// fdPath names an open file by its fd, for calls that take a path: the
// kernel follows it to that very file, whatever its path now leads to.
func fdPath(f *os.File) string { return "/proc/thread-self/fd/" + strconv.Itoa(int(f.Fd())) }

// openBeneath opens rel below the directory dirfd without following any
// symlink or leaving the directory: openat2 with RESOLVE_BENEATH and
// RESOLVE_NO_SYMLINKS (Linux 5.6); before that, one component at a time
// with O_NOFOLLOW. A symlink anywhere on the way is ELOOP or ENOTDIR.
func openBeneath(dirfd int, rel string, flags int) (int, error) {
	rel = strings.TrimPrefix(path.Clean("/"+rel), "/")
	if rel == "" {
		rel = "."
	}
	fd, err := unix.Openat2(dirfd, rel, &unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC | unix.O_NOFOLLOW),
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS})
	if err != unix.ENOSYS {
		return fd, err
	}
	cur, err := unix.Dup(dirfd)
	if err != nil {
		return -1, err
	}
	parts := strings.Split(rel, "/")
	for i, part := range parts {
		f := unix.O_PATH | unix.O_DIRECTORY
		if i == len(parts)-1 {
			f = flags
		}
		next, err := unix.Openat(cur, part, f|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		unix.Close(cur)
		if err != nil {
			return -1, err
		}
		var st unix.Stat_t
		if err := unix.Fstat(next, &st); err == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
			unix.Close(next)
			return -1, unix.ELOOP
		}
		cur = next
	}
	return cur, nil
}

func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket for lo: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("get lo flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring lo up: %w", err)
	}
	return nil
}

// pivot makes root the new / and detaches the old one: pivot_root(".",
// ".") stacks the old root on top of the new, and the lazy unmount takes
// it away without needing a directory for it inside the image.
func pivot(root string) error {
	if err := unix.Chdir(root); err != nil {
		return fmt.Errorf("chdir %s: %w", root, err)
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		if err != unix.EINVAL {
			return fmt.Errorf("pivot_root %s: %w", root, err)
		}
		// A system running from its initramfs has rootfs as /, which
		// pivot_root cannot move. Move the new root over / and chroot, as
		// switch_root does; with CAP_SYS_CHROOT dropped (the default) the
		// app cannot climb out of it.
		if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
			return fmt.Errorf("move %s to /: %w", root, err)
		}
		if err := unix.Chroot("."); err != nil {
			return fmt.Errorf("chroot %s: %w", root, err)
		}
		return unix.Chdir("/")
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach the old root: %w", err)
	}
	return unix.Chdir("/")
}

// notifySocket binds the unit's notify socket src onto a new file
// notify/notify.sock in run (the app's /run tmpfs, opened without links).
func notifySocket(run *os.File, src string) error {
	if err := unix.Mkdirat(int(run.Fd()), "notify", 0o755); err != nil && err != unix.EEXIST {
		return fmt.Errorf("mkdir /run/notify: %w", err)
	}
	dir, err := openBeneath(int(run.Fd()), "notify", unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return fmt.Errorf("open /run/notify: %w", err)
	}
	defer unix.Close(dir)
	fd, err := unix.Openat(dir, "notify.sock", unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("create %s: %w", NotifyPath, err)
	}
	defer unix.Close(fd)
	if err := unix.Mount(src, fmt.Sprintf("/proc/thread-self/fd/%d", fd), "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind the unit's notify socket %s at %s: %w", src, NotifyPath, err)
	}
	return nil
}
