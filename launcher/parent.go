package launcher

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"cimg.dev/cimg/format"
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
	// Pdeathsig is tied to the thread that started the child: keep it.
	runtime.LockOSThread()
	// Whatever fds our caller leaked to us (a host directory, say) must
	// not reach the child, where /proc/self/fd/N would lead out of the
	// image (CVE-2024-21626).
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		return 0, fmt.Errorf("close_range: %w", err)
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
	// The mount cache: verify and mount on first use, bind later.
	if err := os.MkdirAll(filepath.Join(o.StateDir, "root"), 0o700); err != nil {
		return 0, err
	}
	rootDir := ""
	if o.PrivateMount {
		// Verified here, mounted by the child in its own namespace.
		if err := verifyPayload(o.StateDir, f, img, o.VerifyAlways); err != nil {
			return 0, err
		}
	} else if rootDir, err = mountCached(o.StateDir, f, img, o.VerifyAlways); err != nil {
		return 0, err
	}
	// The cgroup, with limits, before the app exists.
	id := m.Name + "-" + strconv.Itoa(os.Getpid())
	cg, err := NewCgroup(id, m.Limits)
	if err != nil {
		return 0, err
	}
	defer cg.Remove()

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

// start re-executes cimg-run as the child in new namespaces, hands it the
// config, relays signals and waits.
func start(cg *Cgroup, cfg *Config, m *manifest.Manifest, o Options) (int, error) {
	cfgR, cfgW, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	flags := uintptr(unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC)
	if m.Namespaces.PID != "host" {
		flags |= unix.CLONE_NEWPID
	}
	if m.Namespaces.Network == "none" {
		flags |= unix.CLONE_NEWNET
	}
	cmd := exec.Command("/proc/self/exe", ChildArg)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.ExtraFiles = []*os.File{cfgR, errW} // fds 3 and 4
	if cfg.Init {
		mem, err := sealedSelf()
		if err != nil {
			return 0, err
		}
		defer mem.Close()
		cmd.ExtraFiles = append(cmd.ExtraFiles, mem) // fd 5
	}
	if cfg.PrivateMount {
		for len(cmd.ExtraFiles) < 3 {
			cmd.ExtraFiles = append(cmd.ExtraFiles, nil) // keep fd 5 free
		}
		cmd.ExtraFiles = append(cmd.ExtraFiles, o.image) // fd 6
	}
	// One P and no GC: the child lives a few milliseconds, and fewer
	// runtime threads start faster.
	cmd.Env = []string{"GOMAXPROCS=1", "GOGC=off"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: flags, Pdeathsig: syscall.SIGKILL}
	if cg.V2 {
		// Born in its cgroup: no window where it runs outside the limits.
		dir, err := os.Open(cg.Dirs[""])
		if err != nil {
			return 0, err
		}
		defer dir.Close()
		cmd.SysProcAttr.UseCgroupFD, cmd.SysProcAttr.CgroupFD = true, int(dir.Fd())
	}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start the child: %w", err)
	}
	cfgR.Close()
	errW.Close()
	// v1: join the cgroups before the child reads its config, i.e.
	// before it does anything.
	if !cg.V2 {
		if err := cg.Add(cmd.Process.Pid); err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			return 0, err
		}
	}
	if err := json.NewEncoder(cfgW).Encode(cfg); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return 0, fmt.Errorf("send config: %w", err)
	}
	cfgW.Close()
	msg, _ := io.ReadAll(errR)
	errR.Close()
	if len(msg) > 0 {
		cmd.Wait()
		return 0, fmt.Errorf("setup: %s", msg)
	}

	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2)
	defer signal.Stop(sigs)
	done := make(chan struct{})
	go func() {
		var killTimer <-chan time.Time
		for {
			select {
			case s := <-sigs:
				cmd.Process.Signal(s)
				if s == syscall.SIGTERM || s == syscall.SIGINT {
					// Grace period, then everything in the cgroup dies.
					killTimer = time.After(o.StopTimeout)
				}
			case <-killTimer:
				cg.Kill(syscall.SIGKILL)
			case <-done:
				return
			}
		}
	}()
	err = cmd.Wait()
	close(done)
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		ws := ee.Sys().(syscall.WaitStatus)
		switch {
		case ws.Signaled():
			code = 128 + int(ws.Signal())
		default:
			code = ws.ExitStatus()
		}
	} else if err != nil {
		return 0, err
	}
	if cg.OOMKilled() && o.Warn != nil {
		o.Warn(fmt.Sprintf("%s was killed by the OOM killer: it exceeded its memory limit of %s", m.Name, m.Limits.Memory))
	}
	return code, nil
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
