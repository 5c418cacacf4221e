// Package nspawn boots a real systemd as PID 1 of a container, for tests
// of the systemd units that cimg-run generates: starting, stopping and
// notifying units, their cgroups and their journal can only be tested
// against a running systemd, and PID 1 of this host (and of CI) is not
// systemd. A Debian tree with systemd (Rootfs) is booted with
// systemd-nspawn over a tmpfs overlay, so tests never change the cached
// tree, and torn down when the test ends. A missing prerequisite fails
// the test: it never skips.
//
// Each machine runs in cgroups of its own, created under the test's own
// cgroup in every hierarchy nspawn writes to, because systemd-nspawn
// --keep-unit puts its "payload" and "supervisor" cgroups next to
// itself: started straight from the test, two machines would share them
// and leave them behind.
package nspawn

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Options say how to boot a machine; the zero value boots the stock
// systemd-nspawn setup.
type Options struct {
	// Binds are bind mounts into the container, each
	// "HOST[:CONTAINER[:ro]]" (CONTAINER defaults to HOST), e.g. a
	// directory holding cimg-run and test images.
	Binds []string
	// Env is added to systemd-nspawn's environment, e.g.
	// SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 for a pure cgroup v2 view.
	Env []string
	// Controllers are cgroup v1 controllers (memory, pids, cpu) to give
	// the container's systemd writable. nspawn mounts every v1
	// hierarchy read-only, so MemoryMax=, TasksMax= and CPUQuota= of a
	// unit are accepted but have no effect, and a Delegate=yes unit
	// cannot create cgroups there. With a controller listed here the
	// machine gets a cgroup of its own in that hierarchy, its mount
	// inside is made writable once systemd is up, and systemd is
	// re-executed so that it starts using it (a daemon-reload does not
	// suffice). Not for the pure v2 view (nspawn mounts no v1
	// hierarchy then).
	Controllers []string
}

// Machine is a booted container.
type Machine struct {
	t           testing.TB
	name        string
	cmd         *exec.Cmd
	exited      chan struct{}
	leader      int
	leaderStart string
	cgroups     []string // ours, one per hierarchy
	console     *ring
	lock        *os.File
	down        atomic.Bool
}

const (
	prefix        = "cimg-nspawn-"
	bootTimeout   = 2 * time.Minute
	stopTimeout   = time.Minute
	containerPATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

var serial atomic.Int64

// Boot boots Rootfs() with systemd-nspawn and waits until systemd is up
// (running, or degraded: then the failed units are logged). The machine
// is powered off at the end of the test, and whatever it left is
// removed; anything left over is an error of the test.
func Boot(t testing.TB, o Options) *Machine {
	t.Helper()
	for _, bin := range []string{"systemd-nspawn", "nsenter"} {
		if _, err := exec.LookPath(bin); err != nil {
			pkg := map[string]string{"systemd-nspawn": "systemd-container", "nsenter": "util-linux"}[bin]
			t.Fatalf("booting systemd needs %s, which is not installed: apt-get install %s", bin, pkg)
		}
	}
	args, err := nspawnArgs(o)
	if err != nil {
		t.Fatalf("booting systemd: %v", err)
	}
	dir, lock, err := lockRootfs()
	if err != nil {
		t.Fatalf("booting systemd: %v", err)
	}
	m := &Machine{
		t:       t,
		name:    fmt.Sprintf("%s%d-%d", prefix, os.Getpid(), serial.Add(1)),
		exited:  make(chan struct{}),
		console: &ring{max: 64 << 10},
		lock:    lock,
	}
	t.Cleanup(m.shutdown)
	parents, err := cgroupDirs(o.Controllers)
	if err != nil {
		t.Fatalf("booting systemd: %v", err)
	}
	for _, p := range parents {
		sweep(t, p)
	}
	for _, p := range parents {
		cg := filepath.Join(p, m.name)
		if err := os.Mkdir(cg, 0o755); err != nil {
			t.Fatalf("booting systemd: cgroup of the machine: %v", err)
		}
		m.cgroups = append(m.cgroups, cg)
		if err := inheritCpuset(cg); err != nil {
			t.Fatalf("booting systemd: %v", err)
		}
	}

	// The shell moves itself into the machine's cgroups and only then
	// becomes nspawn, so that nothing of the machine ever runs outside
	// them; Go can start a child in a cgroup v2 directly, but not in v1.
	script := `while [ "$1" != -- ]; do echo $$ > "$1/cgroup.procs" || exit 1; shift; done; shift; exec "$@"`
	shArgs := append([]string{"-c", script, "sh"}, m.cgroups...)
	shArgs = append(shArgs, "--", "systemd-nspawn", "--directory="+dir, "--machine="+m.name)
	m.cmd = exec.Command("/bin/sh", append(shArgs, args...)...)
	// TERM=dumb keeps colour codes out of the console log.
	m.cmd.Env = append(append(os.Environ(), "TERM=dumb"), o.Env...)
	m.cmd.Stdout, m.cmd.Stderr = m.console, m.console
	start := time.Now()
	if err := m.cmd.Start(); err != nil {
		t.Fatalf("booting systemd: starting systemd-nspawn: %v", err)
	}
	go func() {
		m.cmd.Wait()
		close(m.exited)
	}()

	ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
	defer cancel()
	if err := m.findLeader(ctx); err != nil {
		t.Fatalf("booting systemd: %v\nconsole:\n%s", err, m.console)
	}
	state, err := m.waitRunning(ctx)
	if err != nil {
		t.Fatalf("booting systemd: %v\nconsole:\n%s", err, m.console)
	}
	if len(o.Controllers) > 0 {
		if state, err = m.writableControllers(ctx, o.Controllers); err != nil {
			t.Fatalf("booting systemd: %v\nconsole:\n%s", err, m.console)
		}
	}
	t.Logf("machine %s: systemd is %s after %v (leader pid %d)", m.name, state, time.Since(start).Round(time.Millisecond), m.leader)
	if state == "degraded" {
		out, _ := m.Run("systemctl", "--failed", "--no-legend", "--plain")
		t.Logf("machine %s is degraded; failed units:\n%s", m.name, out)
	}
	return m
}

// Leader is the host pid of the container's PID 1, for tests that look
// at its cgroups from the host.
func (m *Machine) Leader() int { return m.leader }

// Run runs a command inside the machine, in all its namespaces and with
// its root, and returns its combined output; a non-zero exit is an
// *exec.ExitError in the error's chain. The process stays in the test's
// cgroups, not the machine's: to run something as a process of the
// container's systemd, Run systemd-run. Run has no time limit of its
// own: bound a command that may hang with timeout(1).
func (m *Machine) Run(args ...string) (string, error) {
	return m.run(context.Background(), args...)
}

func (m *Machine) run(ctx context.Context, args ...string) (string, error) {
	if m.down.Load() {
		return "", fmt.Errorf("%s in machine %s: the machine is shut down", strings.Join(args, " "), m.name)
	}
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{
		"--target", strconv.Itoa(m.leader),
		"--mount", "--uts", "--ipc", "--net", "--pid", "--cgroup", "--root", "--wd", "--",
	}, args...)...)
	// The host's environment means nothing inside (its PATH may name
	// directories the container has not).
	cmd.Env = []string{containerPATH}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s in machine %s: %w", strings.Join(args, " "), m.name, err)
	}
	return string(out), nil
}

// findLeader waits for nspawn's child, the container's PID 1, to have
// become systemd: before that it is nspawn still setting up, possibly
// with the host's root, where a command run inside would be the host's.
func (m *Machine) findLeader(ctx context.Context) error {
	nspawn := m.cmd.Process.Pid
	for {
		for _, pid := range children(nspawn) {
			if nsPid(pid) == "1" && statusField(pid, "Name") == "systemd" {
				m.leader = pid
				m.leaderStart = startTime(pid)
				return nil
			}
		}
		select {
		case <-m.exited:
			return fmt.Errorf("systemd-nspawn exited (%v) before starting the container", m.cmd.ProcessState)
		case <-ctx.Done():
			return errors.New("systemd-nspawn started no container within " + bootTimeout.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// waitRunning waits until systemd has finished starting up. Until its
// private socket exists systemctl cannot connect at all, hence the retry.
func (m *Machine) waitRunning(ctx context.Context) (string, error) {
	var out string
	for {
		out, _ = m.run(ctx, "systemctl", "is-system-running", "--wait")
		state := strings.TrimSpace(out)
		switch state {
		case "running", "degraded":
			return state, nil
		case "maintenance", "stopping":
			// The boot is over and went wrong: waiting longer won't help.
			return "", fmt.Errorf("systemd is %s after booting", state)
		}
		select {
		case <-m.exited:
			return "", fmt.Errorf("the container stopped while booting (nspawn: %v); systemctl is-system-running said %q", m.cmd.ProcessState, state)
		case <-ctx.Done():
			return "", fmt.Errorf("systemd did not finish booting within %v; systemctl is-system-running said %q", bootTimeout, state)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// writableControllers remounts the v1 hierarchies read-write inside
// and re-executes systemd, which decides at start-up which controllers
// it can use.
func (m *Machine) writableControllers(ctx context.Context, controllers []string) (string, error) {
	for _, c := range controllers {
		mnt := "/sys/fs/cgroup/" + c
		if out, err := m.run(ctx, "mount", "-o", "remount,bind,rw,nosuid,nodev,noexec", mnt); err != nil {
			return "", fmt.Errorf("making %s writable in the container (is it a v1 view? SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 mounts none): %w\n%s", mnt, err, out)
		}
	}
	if out, err := m.run(ctx, "systemctl", "daemon-reexec"); err != nil {
		return "", fmt.Errorf("%w\n%s", err, out)
	}
	return m.waitRunning(ctx)
}

// shutdown powers the machine off (SIGTERM makes nspawn send systemd
// SIGRTMIN+3, an orderly halt), kills what is left if that hangs, and
// removes the machine's cgroups.
func (m *Machine) shutdown() {
	t := m.t
	defer m.lock.Close()
	if m.cmd == nil || m.cmd.Process == nil {
		if err := m.removeCgroups(); err != nil {
			t.Errorf("machine %s: %v", m.name, err)
		}
		return
	}
	if t.Failed() {
		t.Logf("machine %s console:\n%s", m.name, m.console)
	}
	m.down.Store(true)
	start := time.Now()
	m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.exited:
	case <-time.After(stopTimeout):
		t.Errorf("machine %s did not power off within %v; killing it", m.name, stopTimeout)
		killCgroups(m.cgroups)
		m.cmd.Process.Kill()
		<-m.exited
	}
	// nspawn does not wait for the container's last processes to be
	// reaped; they are gone once the cgroups are empty.
	killCgroups(m.cgroups)
	if err := m.removeCgroups(); err != nil {
		t.Errorf("machine %s: %v", m.name, err)
	}
	// nspawn removes this itself unless it was killed.
	os.Remove(filepath.Join("/run/systemd/nspawn/propagate", m.name))
	if m.leader != 0 && alive(m.leader, m.leaderStart) {
		t.Errorf("machine %s: its PID 1 (host pid %d) is still running after shutdown", m.name, m.leader)
	}
	t.Logf("machine %s: powered off and removed in %v", m.name, time.Since(start).Round(time.Millisecond))
}

// killCgroups kills every process in the cgroups, so that they can be
// removed.
func killCgroups(cgroups []string) {
	for _, cg := range cgroups {
		// cgroup.kill (cgroup v2, Linux 5.14) takes the whole subtree at
		// once, with no pid to race against.
		if os.WriteFile(filepath.Join(cg, "cgroup.kill"), []byte("1"), 0) == nil {
			continue
		}
		for range 50 {
			pids := procsUnder(cg)
			if len(pids) == 0 {
				break
			}
			for _, pid := range pids {
				syscall.Kill(pid, syscall.SIGKILL)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// removeCgroups removes the machine's cgroups, deepest first; a cgroup
// whose killed processes are not reaped yet is busy for a moment.
func (m *Machine) removeCgroups() error {
	var errs []error
	for _, cg := range m.cgroups {
		if err := removeCgroup(cg); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func removeCgroup(cg string) error {
	var err error
	for range 250 {
		if err = rmdirTree(cg); err == nil || !errors.Is(err, syscall.EBUSY) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("removing cgroup %s (processes left: %v): %w", cg, procsUnder(cg), err)
	}
	return nil
}

func rmdirTree(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	for _, e := range entries {
		if e.IsDir() {
			if err := rmdirTree(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	if err := syscall.Rmdir(dir); err != nil && !errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("rmdir %s: %w", dir, err)
	}
	return nil
}

func procsUnder(cg string) []int {
	var pids []int
	filepath.WalkDir(cg, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Name() == "cgroup.procs" {
			data, _ := os.ReadFile(p)
			for _, f := range strings.Fields(string(data)) {
				if pid, err := strconv.Atoi(f); err == nil {
					pids = append(pids, pid)
				}
			}
		}
		return nil
	})
	return pids
}

// sweep removes the machines of test processes that died without their
// cleanup (a go test timeout): killing nspawn leaves its container
// running, so they would otherwise stay forever.
func sweep(t testing.TB, parent string) {
	entries, _ := os.ReadDir(parent)
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), prefix)
		if !ok || !e.IsDir() {
			continue
		}
		owner, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(owner)
		if err != nil {
			continue
		}
		if err := syscall.Kill(pid, 0); err == nil || errors.Is(err, syscall.EPERM) {
			continue
		}
		cg := filepath.Join(parent, e.Name())
		t.Logf("removing machine %s of a test process that is gone", cg)
		killCgroups([]string{cg})
		if err := removeCgroup(cg); err != nil {
			t.Logf("%v", err)
		}
		os.Remove(filepath.Join("/run/systemd/nspawn/propagate", e.Name()))
	}
}

func nspawnArgs(o Options) ([]string, error) {
	args := []string{
		"--boot",
		// No machined on this host, and registering is not needed.
		"--register=no",
		// Without it nspawn asks the host's systemd, over D-Bus, for a
		// scope unit to run in.
		"--keep-unit",
		// The cached tree stays as it was: every write goes to a tmpfs.
		"--volatile=overlay",
		// A network namespace with only lo: no veth, nothing on the host.
		"--private-network",
		"--link-journal=no",
		"--console=read-only",
	}
	for _, b := range o.Binds {
		parts := strings.Split(b, ":")
		flag := "--bind="
		if len(parts) > 1 && parts[len(parts)-1] == "ro" {
			flag, parts = "--bind-ro=", parts[:len(parts)-1]
		}
		if len(parts) > 2 || !filepath.IsAbs(parts[0]) {
			return nil, fmt.Errorf("bind %q: want HOST[:CONTAINER[:ro]] with absolute paths and no other colon", b)
		}
		if _, err := os.Stat(parts[0]); err != nil {
			return nil, fmt.Errorf("bind %q: %w", b, err)
		}
		dst := parts[0]
		if len(parts) == 2 && parts[1] != "" {
			dst = parts[1]
		}
		if !filepath.IsAbs(dst) {
			return nil, fmt.Errorf("bind %q: the container path must be absolute", b)
		}
		args = append(args, flag+parts[0]+":"+dst)
	}
	return args, nil
}

// cgroupDirs finds our own cgroup, on the host, in each hierarchy the
// machine needs a cgroup of its own in: those nspawn writes to (cgroup2
// and the v1 name=systemd, whichever are mounted) and the v1
// controllers asked for.
func cgroupDirs(controllers []string) ([]string, error) {
	own, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	mountinfo, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	type mount struct {
		fstype, root, point string
		opts                []string
	}
	var mounts []mount
	for _, l := range strings.Split(string(mountinfo), "\n") {
		// ID PARENT DEV ROOT MOUNTPOINT OPTS [TAGS...] - FSTYPE SOURCE SUPEROPTS
		pre, post, _ := strings.Cut(l, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if len(f) >= 5 && len(g) >= 3 && (g[0] == "cgroup" || g[0] == "cgroup2") {
			mounts = append(mounts, mount{g[0], unescapeMount(f[3]), unescapeMount(f[4]), strings.Split(g[2], ",")})
		}
	}
	// dir finds the hierarchy named by one element of the middle field
	// of /proc/self/cgroup ("" for cgroup2, "name=systemd", "memory").
	dir := func(name string) (string, bool) {
		for _, l := range strings.Split(strings.TrimSpace(string(own)), "\n") {
			f := strings.SplitN(l, ":", 3)
			if len(f) != 3 || !(name == "" && f[1] == "" || name != "" && slices.Contains(strings.Split(f[1], ","), name)) {
				continue
			}
			for _, m := range mounts {
				if (name == "") != (m.fstype == "cgroup2") || name != "" && !slices.Contains(m.opts, name) {
					continue
				}
				// A mount of a subtree (ROOT other than /) shows paths
				// relative to it.
				if rel, ok := strings.CutPrefix(f[2], m.root); ok || m.root == "/" {
					if m.root == "/" {
						rel = f[2]
					}
					return filepath.Join(m.point, rel), true
				}
			}
		}
		return "", false
	}
	var out []string
	for _, name := range []string{"", "name=systemd"} {
		if d, ok := dir(name); ok {
			out = append(out, d)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("neither cgroup2 nor the v1 name=systemd hierarchy is mounted on this host, and systemd needs one")
	}
	for _, c := range controllers {
		d, ok := dir(c)
		if !ok {
			return nil, fmt.Errorf("controller %q: no cgroup v1 hierarchy of it is mounted on this host", c)
		}
		out = append(out, d)
	}
	return out, nil
}

// inheritCpuset fills a new v1 cpuset cgroup, which starts with no CPU
// and no memory node and so accepts no process.
func inheritCpuset(cg string) error {
	for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
		cur, err := os.ReadFile(filepath.Join(cg, f))
		if err != nil || strings.TrimSpace(string(cur)) != "" {
			continue
		}
		parent, err := os.ReadFile(filepath.Join(filepath.Dir(cg), f))
		if err != nil {
			return fmt.Errorf("cpuset of the machine: %w", err)
		}
		if err := os.WriteFile(filepath.Join(cg, f), parent, 0); err != nil {
			return fmt.Errorf("cpuset of the machine: %w", err)
		}
	}
	return nil
}

func children(pid int) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if statusField(p, "PPid") == strconv.Itoa(pid) {
			out = append(out, p)
		}
	}
	return out
}

// nsPid is the pid of a process in its own pid namespace.
func nsPid(pid int) string {
	f := strings.Fields(statusField(pid, "NSpid"))
	if len(f) < 2 {
		return ""
	}
	return f[len(f)-1]
}

func statusField(pid int, name string) string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, name+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// startTime tells a process from a later one with the same pid.
func startTime(pid int) string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	// The command name (field 2) may hold spaces; it ends at the last ')'.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return ""
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 20 {
		return ""
	}
	return f[19] // field 22, starttime
}

func alive(pid int, start string) bool {
	s := startTime(pid)
	return s != "" && s == start
}

// ring keeps the last max bytes of the console.
type ring struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (r *ring) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.buf = append(r.buf, p...)
	if len(r.buf) > r.max {
		r.buf = append([]byte(nil), r.buf[len(r.buf)-r.max:]...)
	}
	return len(p), nil
}

func (r *ring) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return string(r.buf)
}
