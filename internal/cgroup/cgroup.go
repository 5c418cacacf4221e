// Package cgroup is an app's cgroup: created with the manifest's limits
// before the app exists (v1 per controller, or one v2 directory), held
// open and flock'ed for the instance's life so that reading, killing and
// removing it go through directory fds (they work where host paths do
// not, in the slim waiter), and removed when the app is gone — or by the
// next launch when a launcher was SIGKILLed.
package cgroup

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"cimg.dev/cimg/manifest"
)

// Root is where cgroup filesystems are mounted (a variable for tests).
var Root = "/sys/fs/cgroup"

// Cgroup is the app's cgroup: one directory on a cgroup v2 host, one per
// controller on a v1 (or hybrid) host.
type Cgroup struct {
	V2   bool
	Dirs map[string]string // controller ("" for v2) → directory
	ID   string            // the directories' name

	// Warning, when set, says why the app runs without a device
	// allow-list (the kernel lacks the feature); the launcher prints it.
	Warning string

	// delegated: inside a systemd unit's cgroup, whose other directories
	// are systemd's, not cimg's to sweep.
	delegated bool

	// held and parents hold each controller's cgroup directory and the cimg
	// directory above it open: reading, killing and removing the cgroup go
	// through them, so they work where host paths do not (the slim waiter,
	// wait.go, inherits them). held carries an exclusive flock for as long
	// as this instance lives: a cgroup nobody holds belongs to a launcher
	// that died.
	held, parents map[string]*os.File
}

func newCgroup(id string, v2 bool) *Cgroup {
	return &Cgroup{V2: v2, Dirs: map[string]string{}, ID: id, held: map[string]*os.File{}, parents: map[string]*os.File{}}
}

// IsV2 reports whether /sys/fs/cgroup itself is cgroup2 (a pure v2 host).
// On hybrid hosts the v2 mount lives elsewhere and holds few controllers;
// limits go to the v1 hierarchies.
func IsV2() bool {
	var st unix.Statfs_t
	return unix.Statfs(Root, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC
}

// v1Controllers are the v1 hierarchies whose limits a manifest sets.
var v1Controllers = []string{"memory", "pids", "cpu", "cpuset"}

// v1Hierarchies are all the v1 hierarchies cimg ever creates a cgroup in.
var v1Hierarchies = append(v1Controllers[:len(v1Controllers):len(v1Controllers)], "devices")

// controllersFor lists the controllers a manifest's limits need.
func controllersFor(l manifest.Limits) []string {
	var c []string
	if l.Memory > 0 || l.MemorySwap > 0 {
		c = append(c, "memory")
	}
	if l.Pids > 0 {
		c = append(c, "pids")
	}
	if l.CPU > 0 || l.CPUWeight > 0 {
		c = append(c, "cpu")
	}
	if l.Cpuset != "" {
		c = append(c, "cpuset")
	}
	return c
}

// New creates the cgroup for instance id, writes the limits and the
// device allow-list (devices.go). It always creates one (with the pids,
// memory and devices controllers at least where they exist), so that
// stop can kill the whole app. On any error it removes what it made.
// The cgroup goes under cimg/ in each hierarchy, or, with a delegation
// (a launcher that is a systemd unit's ExecStart), inside the unit's own.
// Other launchers' stale cgroups are SweepStale's, once the app runs.
func New(id string, l manifest.Limits, d *Delegation) (cg *Cgroup, err error) {
	cg = newCgroup(id, IsV2())
	cg.delegated = d != nil
	defer func() {
		if err != nil {
			cg.Remove()
			cg = nil
		}
	}()
	ctrls := controllersFor(l)
	if cg.V2 {
		parent, chain := filepath.Join(Root, "cimg"), []string{Root, filepath.Join(Root, "cimg")}
		if d != nil {
			if err := d.leaveV2Root(); err != nil {
				return cg, err
			}
			parent, chain = d.V2, []string{d.V2}
		}
		if err := cg.setupV2(parent, chain, id, l, ctrls); err != nil {
			return cg, err
		}
		return cg, cg.applyDevices()
	}
	// v1: the controllers asked for, and pids, memory and devices for
	// accounting, killing and the allow-list where the kernel has them.
	want := map[string]bool{"pids": true, "memory": true, "devices": true}
	for _, c := range ctrls {
		want[c] = true
	}
	for c := range want {
		base := filepath.Join(Root, c)
		parent := filepath.Join(base, "cimg")
		var p *os.File
		if d == nil {
			p, _ = openDir(parent)
		}
		// A cgroup directory has cgroup.procs: a path lookup only where
		// cimg's directory is not there (yet) or not one.
		if p == nil || !hasFile(p, "cgroup.procs") {
			if _, err := os.Stat(filepath.Join(base, "cgroup.procs")); err != nil {
				if p != nil {
					p.Close()
				}
				if contains(ctrls, c) {
					return cg, fmt.Errorf("cgroup v1 controller %s is not mounted at %s but the manifest sets limits on it (CONFIG_CGROUP_%s? mount it, or drop the limit)", c, base, strings.ToUpper(c))
				}
				continue
			}
		}
		if d != nil {
			if parent = d.V1[c]; parent == "" {
				if contains(ctrls, c) {
					return cg, fmt.Errorf("the unit's cgroup has no %s controller (Delegate=yes gives it every one): the manifest sets limits on it", c)
				}
				continue
			}
		}
		if p == nil {
			if d == nil { // the hierarchy's first cimg cgroup
				if err := os.MkdirAll(parent, 0o755); err != nil {
					return cg, fmt.Errorf("create cgroup %s: %w", parent, err)
				}
			}
			if p, err = openDir(parent); err != nil {
				return cg, fmt.Errorf("open cgroup %s: %w", parent, err)
			}
		}
		dir := filepath.Join(parent, id)
		if err := cg.mkdirIn(p, id); err != nil && err != unix.EEXIST { // there already: as MkdirAll
			p.Close()
			return cg, fmt.Errorf("create cgroup %s: %w", dir, err)
		}
		if err := cg.holdIn(c, p, id); err != nil {
			if err != errHeld {
				os.Remove(dir) // not held: Remove would not find it
			}
			return cg, err
		}
		if c == "cpuset" {
			// A v1 cpuset is empty until cpus and mems are set; inherit.
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				for _, d := range []string{parent, dir} {
					if cur, _ := os.ReadFile(filepath.Join(d, f)); len(strings.TrimSpace(string(cur))) > 0 {
						continue
					}
					parent, _ := os.ReadFile(filepath.Join(filepath.Dir(d), f))
					os.WriteFile(filepath.Join(d, f), parent, 0)
				}
			}
		}
	}
	if err := cg.limitsV1(l); err != nil {
		return cg, err
	}
	return cg, cg.applyDevices()
}

// setupV2 makes the v2 cgroup id under parent, with the controllers
// enabled in each cgroup of chain (the parent and those above it that
// cimg may write).
func (cg *Cgroup) setupV2(parent string, chain []string, id string, l manifest.Limits, ctrls []string) error {
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fmt.Errorf("create cgroup %s: %w", parent, err)
	}
	avail, _ := os.ReadFile(filepath.Join(chain[0], "cgroup.controllers"))
	enable, missing := subtreeControl(string(avail), ctrls)
	if len(missing) > 0 {
		return fmt.Errorf("cgroup v2 controller %s is not available (cgroup.controllers: %q)", missing[0], strings.TrimSpace(string(avail)))
	}
	for _, d := range chain {
		if enable != "" {
			if err := os.WriteFile(filepath.Join(d, "cgroup.subtree_control"), []byte(enable), 0); err != nil {
				return fmt.Errorf("enable controllers in %s: %w", d, err)
			}
		}
	}
	dir := filepath.Join(parent, id)
	p, err := openDir(parent)
	if err != nil {
		return fmt.Errorf("open cgroup %s: %w", parent, err)
	}
	if err := cg.mkdirIn(p, id); err != nil {
		p.Close()
		return fmt.Errorf("create cgroup %s: %w", dir, err)
	}
	if err := cg.holdIn("", p, id); err != nil {
		os.Remove(dir) // made just now, but not held: Remove would not find it
		return err
	}
	w := func(f, v string) error { return writeAt(cg.held[""], f, v) }
	var errs []error
	if l.Memory > 0 {
		errs = append(errs, w("memory.max", strconv.FormatInt(int64(l.Memory), 10)))
		swap := int64(0)
		if l.MemorySwap > 0 {
			swap = int64(l.MemorySwap - l.Memory)
		}
		if cg.has("", "memory.swap.max") {
			errs = append(errs, w("memory.swap.max", strconv.FormatInt(swap, 10)))
		}
	}
	if l.Pids > 0 {
		errs = append(errs, w("pids.max", strconv.FormatInt(l.Pids, 10)))
	}
	if l.CPU > 0 {
		const period = 100000
		errs = append(errs, w("cpu.max", fmt.Sprintf("%d %d", int64(float64(l.CPU)*period), period)))
	}
	if l.CPUWeight > 0 {
		errs = append(errs, w("cpu.weight", strconv.FormatInt(l.CPUWeight, 10)))
	}
	if l.Cpuset != "" {
		errs = append(errs, w("cpuset.cpus", l.Cpuset))
	}
	return errors.Join(errs...)
}

// subtreeControl reads a cgroup.controllers file's content (v2): the
// cgroup.subtree_control line that enables those of cimg's controllers
// the kernel offers, and which of the controllers the manifest needs
// (need) it does not offer. Names are whole words: "cpuset" is not "cpu".
func subtreeControl(controllers string, need []string) (enable string, missing []string) {
	avail := strings.Fields(controllers)
	var on []string
	for _, c := range v1Controllers { // the same four on v2
		if contains(avail, c) {
			on = append(on, "+"+c)
		}
	}
	for _, c := range need {
		if !contains(avail, c) {
			missing = append(missing, c)
		}
	}
	return strings.Join(on, " "), missing
}

func (cg *Cgroup) limitsV1(l manifest.Limits) error {
	w := func(ctrl, f, v string) error {
		dir, ok := cg.held[ctrl]
		if !ok {
			return nil
		}
		return writeAt(dir, f, v)
	}
	var errs []error
	if l.Memory > 0 {
		errs = append(errs, w("memory", "memory.limit_in_bytes", strconv.FormatInt(int64(l.Memory), 10)))
		memsw := l.Memory // no swap unless memory_swap allows it
		if l.MemorySwap > 0 {
			memsw = l.MemorySwap
		}
		if cg.has("memory", "memory.memsw.limit_in_bytes") {
			errs = append(errs, w("memory", "memory.memsw.limit_in_bytes", strconv.FormatInt(int64(memsw), 10)))
		}
	}
	if l.Pids > 0 {
		errs = append(errs, w("pids", "pids.max", strconv.FormatInt(l.Pids, 10)))
	}
	if l.CPU > 0 {
		const period = 100000
		errs = append(errs, w("cpu", "cpu.cfs_period_us", strconv.Itoa(period)),
			w("cpu", "cpu.cfs_quota_us", strconv.FormatInt(int64(float64(l.CPU)*period), 10)))
	}
	if l.CPUWeight > 0 {
		// v2 weight 1..10000 (default 100) → v1 shares 2..262144 (default 1024).
		errs = append(errs, w("cpu", "cpu.shares", strconv.FormatInt(2+((l.CPUWeight-1)*262142)/9999, 10)))
	}
	if l.Cpuset != "" {
		errs = append(errs, w("cpuset", "cpuset.cpus", l.Cpuset))
	}
	return errors.Join(errs...)
}

// OpenEntry opens, write-only, the EntryFile of each directory of dirs
// (a Cgroup's Dirs: "" for v2), for a new process to write "0" to,
// itself, before it runs anything of the app's (v2: only where clone3
// cannot clone into the cgroup). Raw fds: the child writes them with raw
// system calls, and an *os.File of a cgroup file is registered with the
// runtime's netpoller (see writeFile). On an error it closes what it
// opened.
func OpenEntry(dirs map[string]string) ([]int, error) {
	_, v2 := dirs[""]
	return openEntry(dirs, v2, nil)
}

// openEntry is OpenEntry, through the fd in held where it has the
// directory's controller, by path elsewhere.
func openEntry(dirs map[string]string, v2 bool, held map[string]*os.File) ([]int, error) {
	var fds []int
	for c, dir := range dirs {
		var fd int
		var err error
		if d, ok := held[c]; ok {
			fd, err = unix.Openat(int(d.Fd()), entryName(v2), unix.O_WRONLY|unix.O_CLOEXEC, 0)
		} else {
			fd, err = unix.Open(EntryFile(dir, v2), unix.O_WRONLY|unix.O_CLOEXEC, 0)
		}
		if err != nil {
			for _, fd := range fds {
				unix.Close(fd)
			}
			return nil, fmt.Errorf("open cgroup %s (%s): %w", dir, c, err)
		}
		fds = append(fds, fd)
	}
	return fds, nil
}

// EntryFile is the file of cgroup directory dir that a just-forked
// process enters it through, writing "0" (itself) to it. On v1 it is
// tasks: a thread that moves only itself skips the kernel's global
// cgroup_threadgroup_rwsem, whose write lock, the first after a quiet
// spell, waits out an RCU grace period. That wait is what moving a
// process by cgroup.procs costs, from inside or out: 13-21 ms on this
// class of machine against 0.03-0.12 ms for tasks (runc and crun pay
// it). A just-forked child has one thread, so moving it moves the
// process. v2 has no per-thread file outside threaded subtrees: there it
// is cgroup.procs, and clone3's CLONE_INTO_CGROUP the usual way in.
func EntryFile(dir string, v2 bool) string {
	return filepath.Join(dir, entryName(v2))
}

func entryName(v2 bool) string {
	if v2 {
		return "cgroup.procs"
	}
	return "tasks"
}

// Entry is OpenEntry for cg's own directories: through the held ones'
// fds, by path where cg holds none (an OCI container's cgroup, made by
// another cimg-oci process).
func (cg *Cgroup) Entry() ([]int, error) {
	return openEntry(cg.Dirs, cg.V2, cg.held)
}

// Join moves process pid into every directory of cg from outside it,
// by cgroup.procs (a new process enters by itself: OpenEntry).
func (cg *Cgroup) Join(pid int) error {
	for c, dir := range cg.Dirs {
		if err := writeFile(filepath.Join(dir, "cgroup.procs"), strconv.Itoa(pid)); err != nil {
			return fmt.Errorf("join cgroup %s (%s): %w", dir, c, err)
		}
	}
	return nil
}

// writeFile writes v to the cgroup file p in one write(2). Plain system
// calls, not os.WriteFile: an *os.File of a cgroup file (which supports
// poll) is registered with the runtime's netpoller, four more system
// calls per file on the launch path.
func writeFile(p, v string) error {
	return writeIn(unix.AT_FDCWD, p, p, v)
}

// writeAt is writeFile for file name of the open cgroup directory dir.
func writeAt(dir *os.File, name, v string) error {
	return writeIn(int(dir.Fd()), name, filepath.Join(dir.Name(), name), v)
}

// writeIn writes v to file name of directory fd dirfd (p names it in an
// error).
func writeIn(dirfd int, name, p, v string) error {
	fd, err := unix.Openat(dirfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_CLOEXEC, 0) // as os.WriteFile did (tests use plain directories)
	if err == nil {
		err = writeRetry(fd, v)
		unix.Close(fd)
	}
	if err != nil {
		return fmt.Errorf("cgroup %s: write %q: %w", p, v, err)
	}
	return nil
}

// has reports whether controller c's held cgroup has file name.
func (cg *Cgroup) has(c, name string) bool {
	d, ok := cg.held[c]
	return ok && hasFile(d, name)
}

// hasFile reports whether the open directory d has file name.
func hasFile(d *os.File, name string) bool {
	var st unix.Stat_t
	return unix.Fstatat(int(d.Fd()), name, &st, 0) == nil
}

// openDir opens directory p for the fd-relative steps of a launch. A
// launch goes through fds wherever it can: each lookup in a path under
// /sys/fs/cgroup takes a read lock of sysfs's, or of the hierarchy's,
// kernfs tree, which every new network namespace (sysfs, for its
// loopback device) and every cgroup mkdir takes for writing. With 50
// launches at once, perf saw cimg-run blocked 20 ms per launch on those
// locks when each step walked the full path, and the rtnl holders waiting
// on sysfs's made every other launch's network namespace wait behind
// them (bench-scale). A raw open and os.NewFile, not os.Open: that would
// also try to register the directory with the runtime's netpoller, two
// more system calls.
func openDir(p string) (*os.File, error) {
	return openDirAt(unix.AT_FDCWD, p, p)
}

// openDirAt opens directory name of dirfd; p names it.
func openDirAt(dirfd int, name, p string) (*os.File, error) {
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: p, Err: err}
	}
	return os.NewFile(uintptr(fd), p), nil
}

// writeRetry is one write(2) of v to fd, made again while it fails with
// EINTR: v1's memory.limit_in_bytes gives up on any pending signal, and
// the Go runtime sends its threads SIGURG to preempt them (50 launches at
// once saw "write \"67108864\": interrupted system call"). A write the
// kernel interrupts has changed nothing.
func writeRetry(fd int, v string) error {
	for {
		_, err := unix.Write(fd, []byte(v))
		if err != unix.EINTR {
			return err
		}
	}
}

// hold opens dir and its parent, locks dir and records it as controller
// c's cgroup; it fails with errHeld when someone else holds the lock.
// Only a held directory is recorded (so Remove never removes one that
// another launcher holds).
func (cg *Cgroup) hold(c, dir string) error {
	p, err := openDir(filepath.Dir(dir))
	if err != nil {
		return fmt.Errorf("open cgroup %s: %w", filepath.Dir(dir), err)
	}
	return cg.holdIn(c, p, filepath.Base(dir))
}

// holdIn is hold for directory name of parent, which it takes over:
// recorded with the held directory, or closed on failure.
func (cg *Cgroup) holdIn(c string, p *os.File, name string) error {
	dir := filepath.Join(p.Name(), name)
	l, err := openDirAt(int(p.Fd()), name, dir)
	if err != nil {
		p.Close()
		return fmt.Errorf("open cgroup %s: %w", dir, err)
	}
	if err := unix.Flock(int(l.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		l.Close()
		p.Close()
		if err == unix.EWOULDBLOCK {
			return errHeld
		}
		return fmt.Errorf("lock cgroup %s: %w", dir, err)
	}
	cg.Dirs[c], cg.parents[c], cg.held[c] = dir, p, l
	return nil
}

var errHeld = errors.New("cgroup in use")

// sweepWait bounds RemoveLeft's wait for a sweep holding the directory: a
// sweep holds one for its kill and rmdir, at most Remove's 2 s of retries.
var sweepWait = 5 * time.Second

// holdWhenFree holds controller c's directory dir once no other process
// does, waiting up to wait.
func (cg *Cgroup) holdWhenFree(c, dir string, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		err := cg.hold(c, dir)
		if err != errHeld {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cgroup %s: another process has held it for %v: left in place", dir, wait)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// read reads file name of controller c's cgroup.
func (cg *Cgroup) read(c, name string) string {
	d, ok := cg.held[c]
	if !ok {
		return ""
	}
	fd, err := unix.Openat(int(d.Fd()), name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return ""
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	b, _ := io.ReadAll(f)
	return string(b)
}

// OOMKilled reports whether the kernel's OOM killer struck in the cgroup.
func (cg *Cgroup) OOMKilled() bool {
	if cg.V2 {
		return counter(cg.read("", "memory.events"), "oom_kill") > 0
	}
	return counter(cg.read("memory", "memory.oom_control"), "oom_kill") > 0
}

func counter(s, key string) int {
	for _, line := range strings.Split(s, "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == key {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	return 0
}

// Kill sends sig to every process in the cgroup.
func (cg *Cgroup) Kill(sig syscall.Signal) {
	for c := range cg.held {
		for _, f := range strings.Fields(cg.read(c, "cgroup.procs")) {
			if pid, err := strconv.Atoi(f); err == nil {
				syscall.Kill(pid, sig)
			}
		}
	}
}

// Remove kills what is left and removes the directories.
func (cg *Cgroup) Remove() error {
	var errs []error
	for _, p := range cg.parents {
		// Right after the app is reaped the kernel may still count it for
		// a moment (EBUSY): retry with a short, growing pause.
		var err error
		pause := 50 * time.Microsecond
		for deadline := time.Now().Add(2 * time.Second); ; {
			if err = unix.Unlinkat(int(p.Fd()), cg.ID, unix.AT_REMOVEDIR); err == nil || err == unix.ENOENT {
				err = nil
				break
			}
			if time.Now().After(deadline) {
				break
			}
			cg.Kill(syscall.SIGKILL)
			time.Sleep(pause)
			pause = min(2*pause, 5*time.Millisecond)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("remove cgroup %s/%s: %w", p.Name(), cg.ID, err))
		}
	}
	cg.release()
	return errors.Join(errs...)
}

// release closes the cgroup's fds (and so drops its locks).
func (cg *Cgroup) release() {
	for _, m := range []map[string]*os.File{cg.parents, cg.held} {
		for c, f := range m {
			f.Close()
			delete(m, c)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// removeStale removes instance cgroups whose launcher is gone. Names end
// in the launcher's pid. A launcher locks its directory right after its
// mkdir (the flock, see Cgroup.held) and holds it, or its slim waiter does,
// until it removes it; so a directory nobody holds is stale, except in the
// moment between a launcher's mkdir and its lock. That moment is told by
// the pid and the age: a directory younger than staleAge whose pid is a
// live process is left alone, whatever that process's executable is called
// (a renamed cimg-run, or a test binary). An older one whose pid is alive
// again belongs to a dead launcher whose pid was reused, and goes, unless
// that pid is a cimg-run now: the common case, a long-running instance,
// skipped by one readlink instead of five opens and a flock per hierarchy
// (50 such instances would add 1-2 ms to every launch); a dead launcher's
// directory whose pid another cimg-run reused waits for that one to end.
// self, the caller's own cgroup's name, is left alone. Only the
// directories cimg creates are read: this runs on every launch.
func removeStale(v2 bool, self string) {
	parents := []string{filepath.Join(Root, "cimg")}
	if !v2 {
		parents = parents[:0]
		for _, c := range v1Hierarchies {
			parents = append(parents, filepath.Join(Root, c, "cimg"))
		}
	}
	const (
		dead = iota
		alive
		launcher // alive and a cimg-run
	)
	seen := map[int]int{} // a launcher's pid is in every hierarchy's list: looked at once
	for _, parent := range parents {
		d, err := openDir(parent)
		if err != nil {
			continue
		}
		entries, _ := d.ReadDir(-1)
		d.Close()
		for _, e := range entries {
			if !e.IsDir() || e.Name() == self {
				continue
			}
			name := e.Name()
			i := strings.LastIndexByte(name, '-')
			pid, err := strconv.Atoi(name[i+1:])
			if i < 0 || err != nil {
				continue
			}
			st, ok := seen[pid]
			if !ok {
				switch {
				// Another name ending in this process's own pid is a
				// dead launcher's (the pid was reused).
				case pid == os.Getpid() || !processAlive(pid):
					st = dead
				case launcherNamed(pid):
					st = launcher
				default:
					st = alive
				}
				seen[pid] = st
			}
			dir := filepath.Join(parent, name)
			if st == launcher || st == alive && young(dir) {
				continue
			}
			removeStaleDir(v2, dir)
		}
	}
}

// removeStaleDir kills what runs in the stale cgroup dir and removes it,
// unless another process holds it (in use, or being removed already).
func removeStaleDir(v2 bool, dir string) {
	stale := newCgroup(filepath.Base(dir), v2)
	if stale.hold("", dir) != nil {
		stale.release()
		return
	}
	stale.Kill(syscall.SIGKILL)
	stale.Remove()
}

// SweepStale removes other instances' cgroups that a launcher killed by
// SIGKILL could not (removeStale; a unit's are systemd's to remove). A
// launch runs it beside its running app, not before it: its reads of the
// cimg directories wait behind every other launch's cgroup mkdir there
// (perf at 50 launches at once: about 8 ms a launch in getdents), and it
// costs a lone launch about 1 %.
func (cg *Cgroup) SweepStale() {
	if !cg.delegated {
		removeStale(cg.V2, cg.ID)
	}
}

// mkdirIn makes cgroup directory id in parent p. One there already whose
// name (and so pid) is this process's is a dead launcher's, whose pid
// this one has now (SweepStale leaves this process's own name alone): it
// goes, with what runs in it, and the directory is made anew. In a
// unit's cgroup it stays (EEXIST).
func (cg *Cgroup) mkdirIn(p *os.File, id string) error {
	err := unix.Mkdirat(int(p.Fd()), id, 0o755)
	if err == unix.EEXIST && !cg.delegated {
		removeStaleDir(cg.V2, filepath.Join(p.Name(), id))
		err = unix.Mkdirat(int(p.Fd()), id, 0o755)
	}
	return err
}

// staleAge: a launcher locks its cgroup well within it of the mkdir, even
// on a machine starting 50 at once (bench-scale: all 50 up in 0.4 s).
var staleAge = time.Minute

// young reports whether the cgroup directory dir was made less than
// staleAge ago, or cannot tell. cgroupfs (kernfs) stamps an inode when it
// makes it, at the mkdir or at a later lookup, never before: a directory
// can look younger than it is, which only delays its removal, never older.
func young(dir string) bool {
	var st unix.Stat_t
	if unix.Stat(dir, &st) != nil {
		return true
	}
	return time.Since(time.Unix(st.Ctim.Unix())) < staleAge
}

// launcherNamed reports whether pid runs an executable called cimg-run.
func launcherNamed(pid int) bool {
	exe, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
	return err == nil && strings.Contains(filepath.Base(exe), "cimg-run")
}

// processAlive reports whether a process pid exists (EPERM: it does).
func processAlive(pid int) bool {
	return pid > 0 && unix.Kill(pid, 0) != unix.ESRCH
}

// Mode says how cgroups are mounted and which controllers cimg can use:
// v2 ("unified"), or v1 per controller ("legacy" or "hybrid").
func Mode() (string, []string) {
	if IsV2() {
		b, _ := os.ReadFile(Root + "/cgroup.controllers")
		return "v2 (unified)", strings.Fields(string(b))
	}
	var ctrls []string
	for _, c := range v1Controllers {
		if _, err := os.Stat(Root + "/" + c + "/cgroup.procs"); err == nil {
			ctrls = append(ctrls, c)
		}
	}
	if len(ctrls) == 0 {
		return "none", nil
	}
	mode := "v1 (legacy)"
	var st unix.Statfs_t
	if unix.Statfs(Root+"/unified", &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
		mode = "v1 controllers (hybrid)"
	}
	return mode, ctrls
}

// CloneFD is the v2 directory's fd, for clone3's CLONE_INTO_CGROUP (-1 on v1).
func (cg *Cgroup) CloneFD() int {
	if d, ok := cg.held[""]; ok && cg.V2 {
		return int(d.Fd())
	}
	return -1
}

// HandOver describes the held directories for a process that takes the
// cgroup over across execve (the slim waiter): one "controller:parent-fd:
// held-fd" word each, and the fds, which the caller must keep open
// across the exec (clear their close-on-exec flag).
func (cg *Cgroup) HandOver() (words []string, fds []int) {
	for c, p := range cg.parents {
		d := cg.held[c]
		words = append(words, fmt.Sprintf("%s:%d:%d", c, p.Fd(), d.Fd()))
		fds = append(fds, int(p.Fd()), int(d.Fd()))
	}
	return words, fds
}

// Adopt rebuilds a cgroup from HandOver's words, in the process that
// inherited its fds.
func Adopt(id string, v2 bool, words []string) (*Cgroup, error) {
	cg := newCgroup(id, v2)
	for _, w := range words {
		f := strings.Split(w, ":")
		if len(f) != 3 {
			cg.release()
			return nil, fmt.Errorf("cgroup hand-over %q: want controller:parent-fd:held-fd", w)
		}
		p, err1 := strconv.Atoi(f[1])
		d, err2 := strconv.Atoi(f[2])
		if err1 != nil || err2 != nil {
			cg.release()
			return nil, fmt.Errorf("cgroup hand-over %q: want controller:parent-fd:held-fd", w)
		}
		cg.parents[f[0]] = os.NewFile(uintptr(p), "cgroup parent "+f[0])
		cg.held[f[0]] = os.NewFile(uintptr(d), "cgroup "+f[0])
	}
	return cg, nil
}

// RemoveLeft removes the cgroup of an instance whose launcher died
// (SIGKILL) before it could: what is left in it is killed first. A
// directory that is gone is left alone. One that another process holds is
// being removed by a launch's sweep of stale cgroups (removeStale; nothing
// else holds a dead launcher's), and the sweep may leave it if it cannot
// remove it: RemoveLeft waits for the sweep to let go and removes what is
// still there, so the cgroup is gone when it returns (CI saw a stop of a
// lost instance return while a test's launch beside it still held three
// of its five directories).
func RemoveLeft(id string, v2 bool, dirs map[string]string) error {
	cg := newCgroup(id, v2)
	var errs []error
	for c, d := range dirs {
		if filepath.Base(d) != id {
			cg.release()
			return fmt.Errorf("cgroup %s is not instance %s's", d, id)
		}
		if err := cg.holdWhenFree(c, d, sweepWait); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if len(cg.held) == 0 {
		return errors.Join(errs...)
	}
	cg.Kill(syscall.SIGKILL)
	// Sub-cgroups (a delegated app may make them) first: rmdir of a
	// cgroup with children fails.
	for _, d := range cg.Dirs {
		errs = append(errs, removeChildren(d))
	}
	return errors.Join(append(errs, cg.Remove())...)
}

// removeChildren removes every cgroup below dir, deepest first, killing
// what runs in them.
func removeChildren(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil // gone
	}
	var errs []error
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		sub := filepath.Join(dir, e.Name())
		errs = append(errs, removeChildren(sub))
		b, _ := os.ReadFile(filepath.Join(sub, "cgroup.procs"))
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		var rerr error
		for i := 0; i < 40; i++ {
			if rerr = unix.Rmdir(sub); rerr == nil || rerr == unix.ENOENT {
				rerr = nil
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		if rerr != nil {
			errs = append(errs, fmt.Errorf("remove cgroup %s: %w", sub, rerr))
		}
	}
	return errors.Join(errs...)
}

// Usage reads what an instance's cgroup uses now: memory in bytes (v1:
// usage_in_bytes, page cache included, as v2's memory.current) and the
// number of tasks; -1 where the controller is absent.
func Usage(v2 bool, dirs map[string]string) (memory, pids int64) {
	read := func(c, name string) int64 {
		d, ok := dirs[c]
		if !ok {
			return -1
		}
		b, err := os.ReadFile(filepath.Join(d, name))
		if err != nil {
			return -1
		}
		n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil {
			return -1
		}
		return n
	}
	if v2 {
		return read("", "memory.current"), read("", "pids.current")
	}
	return read("memory", "memory.usage_in_bytes"), read("pids", "pids.current")
}

// Signal sends sig to every process in an instance's cgroup, by its
// directories (the caller is not the instance's launcher): v2's
// cgroup.kill for SIGKILL where the kernel has it (5.14), which no fork
// can escape, else each pid in cgroup.procs.
func Signal(v2 bool, dirs map[string]string, sig syscall.Signal) {
	if d, ok := dirs[""]; ok && v2 && sig == syscall.SIGKILL {
		if writeFile(filepath.Join(d, "cgroup.kill"), "1") == nil {
			return
		}
	}
	for _, d := range dirs {
		b, _ := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				syscall.Kill(pid, sig)
			}
		}
	}
}
