package launcher

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"cimg.dev/cimg/internal/cgroup"
	"cimg.dev/cimg/internal/earlysig"
	"cimg.dev/cimg/internal/instance"
)

// ExecOptions are a command to run inside a running instance.
type ExecOptions struct {
	StateDir string
	Name     string   // the instance
	Argv     []string // the command; a name without '/' is looked up in the app's $PATH
	Env      []string // KEY=VALUE added to (or replacing in) the app's environment
	TTY      bool     // on a new pseudo-terminal of the instance's /dev/pts
}

// Exec runs a command inside a running instance and returns its exit
// status. The process is the app's sibling in every respect that confines
// it: forked, like the app, from a locked thread (setns of a mount or
// user namespace is refused to a multi-threaded process, so the raw child
// joins them), it enters the app's cgroup before it runs anything, joins
// the app's pid, mount, network, ipc, uts, cgroup and user namespaces,
// and takes the app's plan as recorded at launch: rlimits, seccomp,
// capability sets, ids, no_new_privs, environment, working directory. It
// never holds a host fd but its stdio, and it cannot outlive the instance:
// it is in the instance's pid namespace (whose init's end kills it) and
// cgroup (which the supervisor empties and removes). Exec locks the calling
// goroutine to its thread for good (the child's parent-death signal is
// tied to that thread): call it from main, and return soon after.
func Exec(o ExecOptions) (int, error) {
	if os.Geteuid() != 0 {
		return 0, ErrNotRoot
	}
	if len(o.Argv) == 0 {
		return 2, errors.New("exec: no command")
	}
	// As at launch: the child is visible in the app's /proc until execve;
	// it must not be a way to this host binary (CVE-2019-5736), nor carry
	// an fd our caller leaked (CVE-2024-21626).
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return 0, fmt.Errorf("prctl(PR_SET_DUMPABLE): %w", err)
	}
	if err := cloexecAll(); err != nil {
		return 0, err
	}
	if o.StateDir == "" {
		o.StateDir = "/run/cimg"
	}
	// The caller's signals go to the command; taken in from package
	// earlysig's init when this process is cimg-run exec.
	sr := relaySignals()
	r, err := instance.Get(o.StateDir, o.Name)
	if err != nil {
		return 0, err
	}
	// The app's plan, as recorded by its launcher in the root-only
	// instance directory: the restrictions this process gets too.
	var plan Plan
	b, err := r.Plan()
	if err != nil {
		return 0, err
	}
	if err := json.Unmarshal(b, &plan); err != nil {
		return 0, fmt.Errorf("instance %s: its recorded configuration: %w", o.Name, err)
	}
	pidfd, err := r.AppPidfd()
	if err != nil {
		return 0, err
	}
	defer unix.Close(pidfd)
	j := &joining{plan: &plan, rec: r, pidfd: pidfd, signals: sr}
	defer j.close()
	if err := j.open(); err != nil {
		return 0, fmt.Errorf("instance %s: %w", o.Name, err)
	}
	if err := j.command(o); err != nil {
		return 0, err
	}
	if o.TTY {
		if err := j.openTTY(); err != nil {
			return 0, fmt.Errorf("instance %s: %w", o.Name, err)
		}
	}
	return j.run()
}

// joining is one exec into an instance.
type joining struct {
	plan  *Plan
	rec   *instance.Record
	pidfd int

	signals *relay // the caller's signals, for the command
	proc    int    // /proc/PID of the app, checked to be the app's
	pidNS   int    // joined by the forking thread: it takes effect at fork
	ns      []int  // joined by the child, in order
	cgroup  int    // v2: the cgroup to clone into, or -1
	entry   []int  // the files the child enters the app's cgroup by (cgroup.EntryFile; v2: without clone3)
	fp      *forkPlan
	sync    [2]int
	errp    [2]int
	ptm     *os.File // the terminal's master side (TTY)
	pts     int      // its other side, the child's stdio
}

// open opens the app's namespaces and cgroup. Each is opened through the
// app's /proc directory, which is checked afterwards to still be the app
// (its pidfd still names a live process): a pid reused in between would
// have given another process's namespaces.
func (j *joining) open() error {
	j.proc, j.pidNS, j.cgroup, j.pts = -1, -1, -1, -1
	j.sync, j.errp = [2]int{-1, -1}, [2]int{-1, -1}
	var err error
	if j.proc, err = unix.Open("/proc/"+strconv.Itoa(j.rec.State.Pid), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err != nil {
		return fmt.Errorf("the app's /proc entry: %w", err)
	}
	self, err := os.Open("/proc/self/ns")
	if err != nil {
		return err
	}
	defer self.Close()
	// Namespaces the app shares with the host (granted) are joined all
	// the same, harmlessly: the host's are ours. The user namespace only
	// if the app has one: setns into the caller's own fails.
	names := []string{"mnt", "net", "ipc", "uts", "cgroup"}
	if j.plan.UserNS != nil {
		names = append(names, "user")
	}
	for _, n := range append(names, "pid") {
		fd, err := unix.Openat(j.proc, "ns/"+n, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("the app's %s namespace: %w", n, err)
		}
		if n == "pid" {
			j.pidNS = fd
		} else {
			j.ns = append(j.ns, fd)
		}
	}
	dirs := j.rec.State.Cgroup
	if j.rec.State.CgroupV2 {
		if j.cgroup, err = unix.Open(dirs[""], unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err != nil {
			return fmt.Errorf("the app's cgroup: %w", err)
		}
	}
	// The child enters each directory itself (v2: for a kernel without
	// clone3).
	if j.entry, err = cgroup.OpenEntry(dirs); err != nil {
		return fmt.Errorf("the app's cgroup: %w", err)
	}
	if err := unix.PidfdSendSignal(j.pidfd, 0, nil, 0); err != nil {
		return fmt.Errorf("the app ended: %w", err)
	}
	return nil
}

// command makes the child's plan: the app's, with this command, the added
// environment, no mounts of its own, and the instance's namespaces.
func (j *joining) command(o ExecOptions) error {
	p := *j.plan
	p.Argv = o.Argv
	p.Env = mergeEnv(j.plan.Env, o.Env)
	p.Proc = nil // the app's /proc is there already
	p.UserNS = nil
	var err error
	if j.fp, err = newForkPlan(&p); err != nil {
		return err
	}
	j.fp.join = j.ns
	j.fp.cloneFlags = 0 // born in the app's pid namespace, which the forking thread joined
	if j.fp.chdir, err = syscall.BytePtrFromString(j.plan.Workdir); err != nil {
		return err
	}
	if !strings.Contains(o.Argv[0], "/") {
		// Looked up as execvp would, in the app's $PATH, by the child that
		// sees the app's files; the first candidate is fp.path.
		var cands []string
		for _, d := range strings.Split(envValue(p.Env, "PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"), ":") {
			if path.IsAbs(d) {
				cands = append(cands, path.Join(d, o.Argv[0]))
			}
		}
		if len(cands) == 0 {
			return fmt.Errorf("exec %s: the app's $PATH has no absolute directory: give the command's full path", o.Argv[0])
		}
		if j.fp.path, err = syscall.BytePtrFromString(cands[0]); err != nil {
			return err
		}
		for _, c := range cands[1:] {
			b, err := syscall.BytePtrFromString(c)
			if err != nil {
				return err
			}
			j.fp.paths = append(j.fp.paths, b)
		}
	}
	if err := unix.Pipe2(j.sync[:], unix.O_CLOEXEC); err != nil {
		return fmt.Errorf("pipe: %w", err)
	}
	if err := unix.Pipe2(j.errp[:], unix.O_CLOEXEC); err != nil {
		return fmt.Errorf("pipe: %w", err)
	}
	j.fp.syncR, j.fp.syncW, j.fp.errR, j.fp.errW = j.sync[0], j.sync[1], j.errp[0], j.errp[1]
	if j.cgroup >= 0 {
		j.fp.clone3 = &cloneArgs{flags: unix.CLONE_INTO_CGROUP, exitSignal: uint64(unix.SIGCHLD), cgroup: uint64(j.cgroup)}
	}
	// We have nothing to do between the fork and the command's execve
	// but wait: the child may share our memory until then (fork.go).
	j.fp.vfork, j.fp.cgroupEntry = canVfork, j.entry
	return nil
}

// run forks the child from a thread in the app's pid namespace, moves it
// into the app's cgroup, relays signals to it and returns its status.
func (j *joining) run() (int, error) {
	// The command inherits no signal we were started ignoring: ours are
	// caught by now (package earlysig), which execve resets to default.
	if earlysig.ExecAsked != nil {
		<-earlysig.ExecAsked
	}
	// This thread's pid namespace for children becomes the app's, and the
	// child's parent-death signal is tied to it: it is locked to this
	// goroutine, which waits for the child, and never unlocked (it goes
	// when the process does). Forking from the calling thread spares
	// starting one.
	runtime.LockOSThread()
	if err := unix.Setns(j.pidNS, unix.CLONE_NEWPID); err != nil {
		return 0, fmt.Errorf("join the app's pid namespace: %w", err)
	}
	syscall.ForkLock.Lock()
	pid, errno := forkChild(j.fp)
	if j.fp.clone3 != nil && (errno == unix.ENOSYS || errno == unix.E2BIG || errno == unix.EINVAL) {
		j.fp.clone3 = nil // before Linux 5.7: the child enters the cgroup itself
		pid, errno = forkChild(j.fp)
	}
	syscall.ForkLock.Unlock()
	if errno != 0 {
		return 0, fmt.Errorf("fork into the instance: %w", errno)
	}
	f := struct{ pid int }{int(pid)}
	closeFDs([]int{j.sync[0], j.errp[1]})
	j.sync[0], j.errp[1] = -1, -1
	if j.pts >= 0 {
		unix.Close(j.pts) // the child has it; the master sees EOF when it is gone
		j.pts = -1
	}
	err := j.release()
	if ce, ok := err.(childError); ok && ce.step == stepExec && unix.Errno(ce.errno) == unix.ENOENT {
		err = fmt.Errorf("exec %s: no such command in instance %s", j.fp.argvString(), j.rec.State.Name)
	} else if err != nil {
		err = fmt.Errorf("exec into instance %s: %w", j.rec.State.Name, err)
	}
	if err != nil {
		unix.Kill(f.pid, unix.SIGKILL)
		unix.Wait4(f.pid, nil, 0, nil)
		return 0, err
	}
	return j.wait(f.pid)
}

// release lets the child (in the app's cgroup by now) go on and waits
// for its execve (EOF on the error pipe).
func (j *joining) release() error {
	if err := j.fp.release(j.sync[1]); err != nil {
		return err
	}
	var report childError
	buf := (*[unsafe.Sizeof(report)]byte)(unsafe.Pointer(&report))[:]
	if n, _ := readFull(j.errp[0], buf); n == 0 {
		return nil
	}
	return report
}

// wait relays signals to the child (and, with a terminal, the terminal
// both ways) and returns its exit status, 128+N for signal N.
func (j *joining) wait(pid int) (int, error) {
	cfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		cfd = -1
	}
	resize := func() {}
	if j.ptm != nil {
		resize = j.resize
	}
	j.signals.to <- target{cfd, resize}
	var copied chan struct{}
	if j.ptm != nil {
		restore := j.terminal()
		defer restore()
		copied = make(chan struct{})
		go func() { buf := make([]byte, 32<<10); copyFrom(os.Stdout, j.ptm, buf); close(copied) }()
		go func() { buf := make([]byte, 4<<10); copyFrom(j.ptm, os.Stdin, buf) }()
	}
	code, err := Reap(pid)
	// cfd stays open: the relay may still be sending on it, and the
	// process ends soon (see Exec).
	if copied != nil {
		// What the command wrote last is still in the terminal; a process it
		// left behind holding the terminal does not keep us.
		select {
		case <-copied:
		case <-time.After(time.Second):
		}
	}
	if err != nil {
		return 0, fmt.Errorf("wait for the command: %w", err)
	}
	return code, nil
}

// relay forwards the signals sent to cimg-run exec to the command.
type relay struct{ to chan target }

// target is the command, once it exists: its pidfd (-1: none) and what a
// SIGWINCH does (resize its terminal).
type target struct {
	pidfd  int
	resize func()
}

// relaySignals starts relaying. Until the command exists, signals are
// held, then sent to it: a SIGTERM that came during the lookups ends the
// command at once instead of being lost. Nothing undoes the relay (a
// signal.Stop measured another 0.8 ms here): Exec is the process's last
// act.
func relaySignals() *relay {
	r := &relay{to: make(chan target, 1)}
	sigs := earlysig.Exec
	if sigs == nil { // not started as cimg-run exec (tests)
		sigs = make(chan os.Signal, 8)
		signal.Notify(sigs, earlysig.ForwardedTTY...)
	}
	go func() {
		var held []os.Signal
		t := target{pidfd: -1}
		send := func(sig os.Signal) {
			if sig == syscall.SIGWINCH {
				t.resize()
			} else if t.pidfd >= 0 {
				unix.PidfdSendSignal(t.pidfd, sig.(syscall.Signal), nil, 0)
			}
		}
		for {
			select {
			case t = <-r.to:
				for _, sig := range held {
					send(sig)
				}
				held = nil
			case sig := <-sigs:
				if t.resize == nil {
					held = append(held, sig)
					continue
				}
				send(sig)
			}
		}
	}()
	return r
}

// copyFrom copies src to dst until either fails (the terminal's master
// reads EIO once the last process holding the other side is gone).
func copyFrom(dst, src *os.File, buf []byte) {
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (j *joining) close() {
	closeFDs(append([]int{j.proc, j.pidNS, j.cgroup, j.pts}, j.ns...))
	closeFDs(j.sync[:])
	closeFDs(j.errp[:])
	closeFDs(j.entry)
	if j.ptm != nil {
		j.ptm.Close()
	}
}

// argvString is the command, for messages.
func (fp *forkPlan) argvString() string {
	if fp.path == nil {
		return "?"
	}
	return unix.BytePtrToString(fp.path)
}

// mergeEnv is base with add's KEY=VALUE set (replacing base's KEY).
func mergeEnv(base, add []string) []string {
	out := append([]string(nil), base...)
	for _, kv := range add {
		k, _, _ := strings.Cut(kv, "=")
		replaced := false
		for i, b := range out {
			if bk, _, _ := strings.Cut(b, "="); bk == k {
				out[i], replaced = kv, true
			}
		}
		if !replaced {
			out = append(out, kv)
		}
	}
	return out
}

// envValue is KEY's value in env, or def.
func envValue(env []string, key, def string) string {
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			return v
		}
	}
	return def
}
