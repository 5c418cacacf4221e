package launcher

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"cimg.dev/cimg/format"
	"cimg.dev/cimg/internal/cgroup"
	"cimg.dev/cimg/internal/imagecache"
	"cimg.dev/cimg/internal/keys"
	"cimg.dev/cimg/manifest"
)

// Options of one launch.
type Options struct {
	Image        string
	Args         []string // replace the manifest's args when given
	KeyFiles     []string // trusted keys besides KeyDir's
	KeyDir       string   // default /etc/cimg/keys
	VerifyAlways bool     // re-check the payload even if this boot did
	StateDir     string   // default /run/cimg
	StopTimeout  time.Duration
	Warn         func(string)
	Init         bool // put the minimal init in front of the app
	PrivateMount bool // mount the image for this launch only, not from the cache

	image *os.File // the opened image, handed to the child with PrivateMount
}

// ErrNotRoot is returned when cimg-run lacks the privileges to launch.
var ErrNotRoot = errors.New("cimg-run must run as root (it mounts images and creates namespaces and cgroups)")

// Run launches the image in the foreground and returns the app's exit
// status (128+N when killed by signal N).
func Run(o Options) (int, error) {
	if os.Geteuid() != 0 {
		return 0, ErrNotRoot
	}
	if o.StateDir == "" {
		o.StateDir = "/run/cimg"
	}
	if o.KeyDir == "" {
		o.KeyDir = "/etc/cimg/keys"
	}
	if o.StopTimeout == 0 {
		o.StopTimeout = 10 * time.Second
	}
	// Whatever fds our caller leaked to us (a host directory, say) must
	// not reach the child, where /proc/self/fd/N would lead out of the
	// image (CVE-2024-21626).
	if err := cloexecAll(); err != nil {
		return 0, err
	}

	// Open the image once: this fd is what is verified and loop-attached.
	f, err := os.OpenFile(o.Image, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	// Footer and manifest: structure and manifest hash, no squashfs parser.
	img, err := format.Open(f, fi.Size())
	if err != nil {
		return 0, fmt.Errorf("%s: %w", o.Image, err)
	}
	m, err := manifest.Parse(img.Manifest, o.Image+" (embedded manifest)")
	if err != nil {
		return 0, err
	}
	// Arch before anything expensive: a wrong-arch image cannot run.
	if host := HostArch(); m.Arch != host {
		return 0, fmt.Errorf("%s is built for %s, this machine is %s", o.Image, m.Arch, host)
	}
	// Signatures when keys are configured: fail closed.
	trusted, err := loadKeys(o.KeyDir, o.KeyFiles)
	if err != nil {
		return 0, err
	}
	if len(trusted) > 0 {
		if _, err := img.VerifySignatures(trusted); err != nil {
			return 0, fmt.Errorf("%s: %w", o.Image, err)
		}
	}
	// root: where the app's tree is assembled, only ever mounted on in
	// private namespaces.
	if err := os.MkdirAll(filepath.Join(o.StateDir, "root"), 0o700); err != nil {
		return 0, err
	}
	// The mount cache: verify and mount on first use, bind later.
	rootDir := ""
	if o.PrivateMount {
		// Verified here, mounted in the app's own mount namespace
		// (enterRoot), so it goes when the app does.
		if err := imagecache.Verify(o.StateDir, f, img, o.VerifyAlways); err != nil {
			return 0, err
		}
	} else if rootDir, err = imagecache.Mount(o.StateDir, f, img, o.VerifyAlways); err != nil {
		return 0, err
	}
	// The cgroup, with limits, before the app exists.
	id := m.Name + "-" + strconv.Itoa(os.Getpid())
	cg, err := cgroup.New(id, m.Limits)
	if err != nil {
		return 0, err
	}
	defer cg.Remove() // or the slim waiter removes it, if this process becomes one
	if cg.Warning != "" && o.Warn != nil {
		o.Warn(cg.Warning) // the app runs without a device allow-list
	}

	cfg, err := childConfig(m, rootDir, o.Args)
	if err != nil {
		return 0, err
	}
	cfg.Init = o.Init || m.App.Init
	cfg.StateDir = o.StateDir
	if o.PrivateMount {
		cfg.PrivateMount, cfg.PayloadSize = true, img.Footer.PayloadSize
		o.image = f
	}
	return start(cg, cfg, m, o)
}

// start forks the app's process into its namespaces and cgroup, relays
// signals and waits. The namespaces are prepared on a thread of their
// own (enterRoot), which forks the child (forkChild) and then stays
// parked until the app is gone: the child's parent-death signal is tied
// to that thread, and its root is the container's, so it must never run
// anything else.
func start(cg *cgroup.Cgroup, cfg *Config, m *manifest.Manifest, o Options) (int, error) {
	plan, err := newForkPlan(cfg, m)
	if err != nil {
		return 0, err
	}
	// Blocking pipes (os.Pipe's are non-blocking, which the child's raw
	// read could not wait on).
	var syncP, errP [2]int
	if err := unix.Pipe2(syncP[:], unix.O_CLOEXEC); err != nil {
		return 0, fmt.Errorf("pipe: %w", err)
	}
	defer closeFDs(syncP[:])
	if err := unix.Pipe2(errP[:], unix.O_CLOEXEC); err != nil {
		return 0, fmt.Errorf("pipe: %w", err)
	}
	defer closeFDs(errP[:])
	plan.syncR, plan.syncW, plan.errR, plan.errW = syncP[0], syncP[1], errP[0], errP[1]
	if cfg.Init {
		// The init runs from a sealed memfd copy of cimg-run; /proc is the
		// child's by the time it execs it.
		mem, err := sealedSelf()
		if err != nil {
			return 0, err
		}
		defer mem.Close()
		argv := append([]string{"cimg-init", InitArg}, cfg.Argv...)
		if plan.path, plan.argv, err = execArgs(fmt.Sprintf("/proc/self/fd/%d", mem.Fd()), argv); err != nil {
			return 0, err
		}
	}
	if cg.V2 {
		// Born in its cgroup: no window where it runs outside the limits.
		plan.clone3 = &cloneArgs{flags: uint64(plan.cloneFlags) | unix.CLONE_INTO_CGROUP, exitSignal: uint64(unix.SIGCHLD), cgroup: uint64(cg.CloneFD())}
	}

	// The cgroup.procs files to join (v1; v2 where clone3 cannot clone into
	// the cgroup), opened now, while paths still lead to the host's /sys.
	join, err := cg.ProcsFiles()
	if err != nil {
		return 0, err
	}
	defer func() {
		for _, f := range join {
			f.Close()
		}
	}()

	// The executable, for the slim waiter (wait.go): once the thread's root
	// is the app's, no path leads to it.
	exe, err := os.Open("/proc/self/exe")
	if err != nil {
		return 0, err
	}
	defer exe.Close()

	type forked struct {
		pid int
		err error
	}
	started := make(chan forked, 1)
	slim := make(chan *supervisor)
	slimFailed := make(chan error)
	defer close(slim)
	go func() {
		// Never unlocked: the thread leaves with its namespaces when this
		// goroutine ends. It also sees the child through setup, so that
		// no thread hand-off sits on the launch path.
		runtime.LockOSThread()
		if err := enterRoot(cfg, o.image); err != nil {
			started <- forked{err: err}
			return
		}
		toJoin := join
		syscall.ForkLock.Lock()
		pid, errno := forkChild(plan)
		if plan.clone3 != nil && (errno == unix.ENOSYS || errno == unix.E2BIG || errno == unix.EINVAL) {
			// A kernel before 5.7 (no clone3, or no CLONE_INTO_CGROUP): a
			// plain clone, moved into the cgroup before it is released.
			plan.clone3 = nil
			pid, errno = forkChild(plan)
		} else if plan.clone3 != nil {
			toJoin = nil // born in it
		}
		syscall.ForkLock.Unlock()
		if errno != 0 {
			started <- forked{err: fmt.Errorf("clone: %w", errno)}
			return
		}
		// Our copies of the child's pipe ends go, so that EOF means something.
		closeFDs([]int{syncP[0], errP[1]})
		syncP[0], errP[1] = -1, -1
		started <- forked{pid: int(pid), err: releaseChild(int(pid), toJoin, syncP[1], errP[0])}
		// Stay until the app is reaped (its parent-death signal is tied to
		// this thread), or turn the process into the slim waiter.
		for s := range slim {
			slimFailed <- s.becomeWaiter(exe)
		}
	}()
	f := <-started
	if f.pid == 0 {
		return 0, f.err
	}
	// Before Linux 5.3 there are no pidfds: signals then go by pid (ours
	// until we reap it) and the slim waiter is skipped.
	pidfd, err := unix.PidfdOpen(f.pid, 0)
	if err != nil {
		pidfd = -1
	} else {
		defer unix.Close(pidfd)
	}
	sv := &supervisor{pid: f.pid, pidfd: pidfd, cg: cg, name: m.Name, memory: m.Limits.Memory.String(), stopTimeout: o.StopTimeout, warn: o.Warn}
	if f.err != nil {
		sv.forward(syscall.SIGKILL)
		syscall.Wait4(f.pid, nil, 0, nil)
		return 0, f.err
	}
	sv.relay()
	if !sv.exited(slimAfter) {
		slim <- sv
		if err := <-slimFailed; err != nil && o.Warn != nil {
			o.Warn(err.Error()) // still supervised, by this fuller process
		}
	}
	return sv.finish()
}

// releaseChild puts the child in its cgroup (v1), lets it go on, and waits
// for its setup: EOF on the error pipe means it reached execve.
func releaseChild(pid int, join []*os.File, syncW, errR int) error {
	for _, f := range join {
		if _, err := f.WriteString(strconv.Itoa(pid)); err != nil {
			return fmt.Errorf("join cgroup %s: %w", filepath.Dir(f.Name()), err)
		}
	}
	if _, err := unix.Write(syncW, []byte{1}); err != nil {
		return fmt.Errorf("release the child: %w", err)
	}
	var report childError
	buf := (*[unsafe.Sizeof(report)]byte)(unsafe.Pointer(&report))[:]
	if n, _ := readFull(errR, buf); n > 0 {
		return fmt.Errorf("setup: %w", report)
	}
	return nil
}

// newForkPlan turns the child's config into the raw arguments of its
// system calls.
func newForkPlan(c *Config, m *manifest.Manifest) (*forkPlan, error) {
	p := &forkPlan{noNewPrivs: c.NoNewPrivs, uid: uintptr(c.UID), gid: uintptr(c.GID), groups: c.Groups}
	// The thread's mount, uts, ipc and net namespaces are inherited; the
	// pid namespace is the child's to be born in.
	if m.Namespaces.PID != "host" {
		p.cloneFlags |= unix.CLONE_NEWPID
	}
	var err error
	if p.path, p.argv, err = execArgs(c.Argv[0], c.Argv); err != nil {
		return nil, err
	}
	if p.envv, err = syscall.SlicePtrFromStrings(c.Env); err != nil {
		return nil, fmt.Errorf("environment: %w", err)
	}
	p.envv = append(p.envv, nil)
	for _, s := range []struct {
		dst **byte
		v   string
	}{{&p.procSrc, "proc"}, {&p.procDir, "/proc"}, {&p.procType, "proc"}} {
		*s.dst, _ = syscall.BytePtrFromString(s.v)
	}
	for _, r := range c.Rlimits {
		p.rlimits = append(p.rlimits, rlimitCall{uintptr(r.Resource), unix.Rlimit{Cur: r.Soft, Max: r.Hard}})
	}
	if p.filter, err = seccompProgram(c.Seccomp); err != nil {
		return nil, err
	}
	keep := map[int]bool{}
	for _, k := range c.Keep {
		keep[k] = true
		p.keep = append(p.keep, uintptr(k))
		p.capData[k/32].Effective |= 1 << (k % 32)
		p.capData[k/32].Permitted |= 1 << (k % 32)
		p.capData[k/32].Inheritable |= 1 << (k % 32)
	}
	// Up to the highest capability number the kernel could have; EINVAL
	// for the ones this one lacks is ignored.
	for c := 0; c <= lastCap; c++ {
		if !keep[c] {
			p.drop = append(p.drop, uintptr(c))
		}
	}
	p.capHdr.Version = unix.LINUX_CAPABILITY_VERSION_3
	return p, nil
}

// execArgs makes execve's path and nil-terminated argv.
func execArgs(path string, argv []string) (*byte, []*byte, error) {
	p, err := syscall.BytePtrFromString(path)
	if err != nil {
		return nil, nil, fmt.Errorf("command %q: %w", path, err)
	}
	a, err := syscall.SlicePtrFromStrings(argv)
	if err != nil {
		return nil, nil, fmt.Errorf("arguments: %w", err)
	}
	return p, append(a, nil), nil
}

// cloexecAll marks every fd above stderr close-on-exec: in one call with
// close_range (Linux 5.9), else one by one from /proc/self/fd. Everything
// cimg-run opens itself is close-on-exec already, so once this ran, the
// child's own close_range may fail with ENOSYS harmlessly.
func cloexecAll() error {
	err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC)
	if err != unix.ENOSYS {
		if err != nil {
			return fmt.Errorf("close_range: %w", err)
		}
		return nil
	}
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		return err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return err
	}
	for _, n := range names {
		if fd, _ := strconv.Atoi(n); fd > 2 && fd != int(d.Fd()) {
			if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil && err != unix.EBADF {
				return fmt.Errorf("mark fd %d close-on-exec: %w", fd, err)
			}
		}
	}
	return nil
}

func readFull(fd int, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := unix.Read(fd, b[n:])
		if err == unix.EINTR {
			continue
		}
		if m <= 0 || err != nil {
			return n, err
		}
		n += m
	}
	return n, nil
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}

// childConfig turns the manifest into the child's instructions.
func childConfig(m *manifest.Manifest, root string, args []string) (*Config, error) {
	c := &Config{
		Root:       root,
		Argv:       m.Argv(args),
		Workdir:    m.App.Workdir,
		UID:        m.App.User,
		GID:        m.App.Group,
		Groups:     m.App.Groups,
		Hostname:   m.Hostname,
		NetNone:    m.Namespaces.Network == "none",
		NoNewPrivs: m.Security.NoNewPrivileges,
		Seccomp:    m.Security.Seccomp,
		TmpSize:    int64(m.Limits.TmpSize),
		RunSize:    int64(m.Limits.RunSize),
		ShmSize:    int64(m.Limits.ShmSize),
	}
	if c.Hostname == "" && m.Namespaces.UTS != "host" {
		c.Hostname = m.Name
	}
	env := map[string]string{"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/", "TERM": os.Getenv("TERM")}
	for k, v := range m.App.Env {
		env[k] = v
	}
	for k, v := range env {
		if v != "" || k != "TERM" {
			c.Env = append(c.Env, k+"="+v)
		}
	}
	sort.Strings(c.Env)
	for _, name := range m.Security.Capabilities {
		c.Keep = append(c.Keep, manifest.Capabilities[name])
	}
	for name, r := range m.Limits.Rlimits {
		res, ok := rlimitResource[name]
		if !ok {
			return nil, fmt.Errorf("rlimit %s is not known to this launcher", name)
		}
		c.Rlimits = append(c.Rlimits, Rlimit{Resource: res, Soft: r.Soft, Hard: r.Hard})
	}
	for _, mt := range m.Mounts {
		switch mt.Type {
		case "tmpfs":
			mode := uint32(0o755)
			if mt.Mode != "" {
				v, _ := strconv.ParseUint(mt.Mode, 8, 32)
				mode = uint32(v)
			}
			c.Mounts = append(c.Mounts, Mount{Type: "tmpfs", Target: mt.Target, Size: int64(mt.Size), Mode: mode})
		case "bind":
			c.Mounts = append(c.Mounts, Mount{Type: "bind", Source: mt.Source, Target: mt.Target, ReadOnly: mt.ReadOnly})
		case "volume":
			src := filepath.Join("/var/lib/cimg/volumes", m.Name, mt.Source)
			if err := os.MkdirAll(src, 0o755); err != nil {
				return nil, fmt.Errorf("volume %s: %w", mt.Source, err)
			}
			c.Mounts = append(c.Mounts, Mount{Type: "bind", Source: src, Target: mt.Target, ReadOnly: mt.ReadOnly})
		case "overlay":
			// A writable layer over the image's directory: kept in a
			// volume, or in memory (Source empty) for this run only.
			ov := Mount{Type: "overlay", Target: mt.Target, Size: int64(m.Limits.TmpSize)}
			if mt.Source != "" {
				ov.Source = filepath.Join("/var/lib/cimg/volumes", m.Name, mt.Source)
				for _, d := range []string{"upper", "work"} {
					if err := os.MkdirAll(filepath.Join(ov.Source, d), 0o755); err != nil {
						return nil, fmt.Errorf("overlay volume %s: %w", mt.Source, err)
					}
				}
			}
			c.Mounts = append(c.Mounts, ov)
		default:
			return nil, fmt.Errorf("mounts: type %q is not supported by this cimg-run yet", mt.Type)
		}
	}
	return c, nil
}

var rlimitResource = map[string]int{
	"as": unix.RLIMIT_AS, "core": unix.RLIMIT_CORE, "cpu": unix.RLIMIT_CPU, "data": unix.RLIMIT_DATA,
	"fsize": unix.RLIMIT_FSIZE, "locks": unix.RLIMIT_LOCKS, "memlock": unix.RLIMIT_MEMLOCK,
	"msgqueue": unix.RLIMIT_MSGQUEUE, "nice": unix.RLIMIT_NICE, "nofile": unix.RLIMIT_NOFILE,
	"nproc": unix.RLIMIT_NPROC, "rss": unix.RLIMIT_RSS, "rtprio": unix.RLIMIT_RTPRIO,
	"rttime": unix.RLIMIT_RTTIME, "sigpending": unix.RLIMIT_SIGPENDING, "stack": unix.RLIMIT_STACK,
}

func loadKeys(dir string, files []string) ([]ed25519.PublicKey, error) {
	ks, err := keys.LoadDir(dir)
	if err != nil {
		return nil, err
	}
	for _, p := range files {
		k, err := keys.LoadPublic(p)
		if err != nil {
			return nil, err
		}
		ks = append(ks, k)
	}
	return ks, nil
}

// HostArch is this machine's arch in manifest terms.
func HostArch() string {
	switch runtime.GOARCH {
	case "arm":
		return "armhf"
	case "386":
		return "i386"
	}
	return runtime.GOARCH
}
