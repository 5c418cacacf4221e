package launcher

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"cimg.dev/cimg/format"
	"cimg.dev/cimg/internal/cgroup"
	"cimg.dev/cimg/internal/imagecache"
	"cimg.dev/cimg/internal/instance"
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
	VolumeDir    string   // default /var/lib/cimg/volumes
	StopTimeout  time.Duration
	Warn         func(string)
	Init         bool      // put the minimal init in front of the app
	PrivateMount bool      // mount the image for this launch only, not from the cache
	Grants       Grants    // what the operator allows beyond the defaults
	Overrides    Overrides // the operator\'s settings at launch (-e, -v, --memory, ...)
	NoHealth     bool      // run an image with a [health] check without it
	// Mark, when set, is told as each step of the launch begins (the
	// profile make bench prints); it is called from more than one thread.
	Mark       func(step string)
	SubIDFiles [2]string // subuid and subgid files for user namespaces; empty: /etc's
	// Instance, when set, is the named instance this launch is: it is told
	// when the app runs and how it ended (package instance), and its lock
	// and log go to the slim waiter.
	Instance *instance.Instance
	// Systemd, when set, is a launch as a systemd unit's ExecStart: the
	// app's cgroup goes in the unit's, and the app is handed to systemd
	// (systemd.go).
	Systemd *Systemd
	// Hold, when set, is called once the app's root is built and its
	// process made (not yet set up and exec'd), and the launch waits for
	// it: update starts the next version this way
	// while the old one still runs, and lets it go once that has stopped,
	// so that only the app's own start is in the gap. An error ends the
	// launch with nothing started.
	Hold func() error
}

// ErrNotRoot is returned when cimg-run lacks the privileges to launch.
var ErrNotRoot = errors.New("cimg-run must run as root (it mounts images and creates namespaces and cgroups)")

// Run launches the image in the foreground and returns the app's exit
// status (128+N when killed by signal N). The steps, top to bottom; each
// says why it is there. Errors name the step and the object.
func Run(o Options) (int, error) {
	if os.Geteuid() != 0 {
		return 0, ErrNotRoot
	}
	// One P once the app runs, if other launches are starting (start): a
	// second P then only wakes idle threads that compete with the app and
	// with them (50 launched at once each started in 0.91x the time,
	// median of 7 paired rounds). Until then the runtime's own count: the
	// launch thread makes the app's namespaces beside this thread's work
	// (spawn), and verification takes every core while it runs
	// (imagecache).
	oneP := os.Getenv("GOMAXPROCS") == ""
	o.defaults()
	// Not dumpable: no process in the container may open this process's
	// /proc/PID/exe (the host's cimg-run) or its fds without
	// CAP_SYS_PTRACE (CVE-2019-5736). The child inherits it until execve.
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return 0, fmt.Errorf("prctl(PR_SET_DUMPABLE): %w", err)
	}
	// Whatever fds our caller leaked to us (a host directory, say) must
	// not reach the child, where /proc/self/fd/N would lead out of the
	// image (CVE-2024-21626).
	if err := cloexecAll(); err != nil {
		return 0, err
	}
	// Everything decided before anything is made: the image opened once
	// (this fd is what is verified and loop-attached), its manifest, arch,
	// signatures, the operator's settings and grants, and the plan.
	d, err := decide(&o)
	if err != nil {
		return 0, err
	}
	defer d.image.Close()
	f, img, m, plan := d.image, d.img, d.manifest, d.plan
	// Volumes: root-only directories on the host, owned by the app's user
	// inside, never reached through a symlink.
	if err := makeVolumes(o.VolumeDir, plan.Volumes); err != nil {
		return 0, err
	}
	// The state dir is trusted with mounts: root's, not writable by
	// others, no symlink (before anything is made in it). root: where the
	// app's tree is assembled, only ever mounted on in private namespaces.
	if err := imagecache.CheckStateDir(o.StateDir); err != nil {
		return 0, err
	}
	if err := os.MkdirAll(filepath.Join(o.StateDir, "root"), 0o700); err != nil {
		return 0, fmt.Errorf("state directory: %w", err)
	}
	// The launch thread makes the app's namespaces now, while this one
	// mounts, makes the cgroup and prepares the child (start lets it go
	// on; a launch that fails before gives it up).
	l := &launch{plan: plan, opts: &o, image: f, manifest: m, rootHash: img.Footer.RootHash, oneP: oneP}
	t := l.spawn()
	defer func() {
		select {
		case t.proceed <- false:
		default:
		}
	}()
	o.mark("mount cache")
	// The mount cache: verify and mount on first use, bind later. The
	// lease keeps gc off the cache mount until our bind of it exists.
	var lease *imagecache.Lease
	if o.PrivateMount {
		// Verified here, mounted in the app's own mount namespace
		// (enterRoot), so it goes when the app does.
		if err := imagecache.Verify(o.StateDir, f, img, o.VerifyAlways); err != nil {
			return 0, err
		}
		plan.PrivateMount, plan.PayloadSize = true, img.Footer.PayloadSize
	} else if lease, err = imagecache.Mount(o.StateDir, f, img, o.VerifyAlways); err != nil {
		return 0, err
	} else {
		plan.Image = lease.Dir
		defer lease.Release() // in case start does not get to it
	}
	// A cold page cache: the spare cores decompress the app's program and
	// libraries while this launch goes on (warm.go).
	warm := warmUp(plan, oneP)
	defer stopWarmUp(warm)
	// The cgroup, with limits, before the app exists.
	o.mark("cgroup")
	// Under systemd, inside the unit's cgroup (Delegate=yes).
	var deleg *cgroup.Delegation
	if o.Systemd != nil {
		if deleg, err = cgroup.Delegated(); err != nil {
			return 0, err
		}
		if err := o.Systemd.connect(); err != nil {
			return 0, err
		}
		defer unix.Close(o.Systemd.conn)
	}
	cg, err := cgroup.New(m.Name+"-"+strconv.Itoa(os.Getpid()), m.Limits, deleg)
	if err != nil {
		return 0, err
	}
	l.cg, l.lease, l.warm = cg, lease, warm
	defer func() {
		if l.handedOff {
			cg.Keep() // the app lives on in it, systemd's
			return
		}
		cg.Remove() // or the slim waiter removes it, if this process becomes one
		o.mark("cgroup removed")
		// The end is recorded once nothing of the app is left.
		if o.Instance != nil && o.Instance.HasStarted() {
			if err := o.Instance.Exited(l.ended); err != nil {
				o.Warn(err.Error())
			}
		}
	}()
	if cg.Warning != "" {
		o.Warn(cg.Warning)
	}
	return start(l, t)
}

// mark tells o.Mark that step begins.
func (o *Options) mark(step string) {
	if o.Mark != nil {
		o.Mark(step)
	}
}

func (o *Options) defaults() {
	if o.StateDir == "" {
		o.StateDir = "/run/cimg"
	}
	if o.VolumeDir == "" {
		o.VolumeDir = "/var/lib/cimg/volumes"
	}
	if o.KeyDir == "" {
		o.KeyDir = "/etc/cimg/keys"
	}
	if o.StopTimeout == 0 {
		o.StopTimeout = 10 * time.Second
	}
	if o.Warn == nil {
		o.Warn = func(string) {}
	}
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

// AppName is the name in the image's manifest (a named instance's
// default name starts with it).
func AppName(image string) (string, error) {
	f, err := openImage(image)
	if err != nil {
		return "", err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	img, err := format.Open(f, fi.Size())
	if err != nil {
		return "", fmt.Errorf("%s: %w", image, err)
	}
	m, err := manifest.Parse(img.Manifest, image+" (embedded manifest)")
	if err != nil {
		return "", err
	}
	return m.Name, nil
}

// decision is what decide found: the open image and the launch's plan.
type decision struct {
	image    *os.File
	img      *format.Image
	manifest *manifest.Manifest
	plan     *Plan
	signers  []format.KeyID // the trusted keys that signed it (none configured: empty)
}

// decide opens and admits the image and decides the launch; it makes
// nothing. Each step says why it is there.
func decide(o *Options) (*decision, error) {
	// Open the image once: this fd is what is verified and loop-attached.
	o.mark("open image")
	// A file someone else may write could change after its check.
	f, err := openImage(o.Image)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
		}
	}()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	// Footer and manifest: structure and manifest hash, no squashfs parser.
	o.mark("footer and manifest")
	img, err := format.Open(f, fi.Size())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o.Image, err)
	}
	m, err := manifest.Parse(img.Manifest, o.Image+" (embedded manifest)")
	if err != nil {
		return nil, err
	}
	// Arch before anything expensive: a wrong-arch image cannot run,
	// unless the kernel hands its programs to an emulator.
	if err := checkArch(o.Image, m.Arch, o.Warn); err != nil {
		return nil, err
	}
	// Signatures when keys are configured: fail closed.
	o.mark("signatures")
	trusted, err := loadKeys(o.KeyDir, o.KeyFiles)
	if err != nil {
		return nil, err
	}
	var signers []format.KeyID
	if len(trusted) > 0 {
		if signers, err = img.VerifySignatures(trusted); err != nil {
			return nil, fmt.Errorf("%s: %w", o.Image, err)
		}
	}
	// The operator's settings at launch replace the manifest's; those that
	// widen what the app may do are grants.
	if err := o.Overrides.apply(m, &o.Grants); err != nil {
		return nil, err
	}
	// The image asks, the operator grants: anything that reaches the host
	// needs a grant, signed image or not.
	if err := o.Grants.check(o.Image, m); err != nil {
		return nil, err
	}
	// The whole launch, decided here; nothing below reads the manifest.
	o.mark("grants and plan")
	plan, err := newPlan(m, o)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o.Image, err)
	}
	ok = true
	return &decision{image: f, img: img, manifest: m, plan: plan, signers: signers}, nil
}

// Admitted is what a launch of an image with these options would be,
// checked as a launch checks it (a unit is written only for a launch
// that would start).
type Admitted struct {
	Name, Version string
	Capabilities  []string // the ones the app keeps: its launcher's bounding set needs them
	Signers       []string // ids of the trusted keys that signed it
	// Asks are the grants the image's manifest needs beyond the locked-down
	// default (all of them given, or Admit would have refused), as --grant
	// words.
	Asks []string
}

// Admit checks the image and the options as Run would, and makes nothing.
func Admit(o Options) (*Admitted, error) {
	o.defaults()
	d, err := decide(&o)
	if err != nil {
		return nil, err
	}
	d.image.Close()
	a := &Admitted{Name: d.manifest.Name, Version: d.manifest.Version, Capabilities: d.manifest.Security.Capabilities}
	for _, k := range d.signers {
		a.Signers = append(a.Signers, k.String())
	}
	var none Grants
	if ge, ok := none.check(o.Image, d.manifest).(*GrantError); ok {
		for _, m := range ge.Missing {
			a.Asks = append(a.Asks, m.Grant)
		}
	}
	return a, nil
}
