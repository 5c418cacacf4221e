package launcher

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"cimg.dev/cimg/internal/cgroup"
	"cimg.dev/cimg/internal/earlysig"
	"cimg.dev/cimg/internal/imagecache"
	"cimg.dev/cimg/internal/instance"
	"cimg.dev/cimg/internal/warmup"
	"cimg.dev/cimg/manifest"
)

// launch is one start of the app: what Run decided, and what start
// prepares on the way.
type launch struct {
	plan  *Plan
	opts  *Options
	cg    *cgroup.Cgroup
	image *os.File          // the verified image (mounted by the thread with PrivateMount)
	lease *imagecache.Lease // the cache mount, until the app's bind of it exists
	oneP  bool              // the launch runs on one P once the app runs (Run)
	warm  *warmup.Warmup    // the app's files being read ahead, or nil

	fp     *forkPlan // the child's system calls, every argument made before fork
	sync   [2]int    // parent → child: one byte releases it
	errp   [2]int    // child → parent: a childError, or EOF at execve
	exe    *os.File  // this executable, for the slim waiter
	sealed *os.File  // the sealed copy the init runs from
	proc   *os.File  // the host's /proc, for the child's id maps

	manifest *manifest.Manifest // for the instance record
	rootHash [32]byte
	ended    instance.Exit  // how the app ended, for the instance record
	sigs     chan os.Signal // the forwarded signals, caught from before the fork
	// handedOff: the app is systemd's now (Options.Systemd); its cgroup
	// stays.
	handedOff bool
}

// start forks the app into its namespaces and cgroup, then supervises
// it; it returns the app's exit status.
//
//  1. prepare: everything the child and the slim waiter will need, made
//     while this process still sees the host.
//  2. proceed: the launch thread (spawn), in the app's namespaces since
//     Run made it, builds the app's root, forks the child and releases
//     it into its cgroup; it reports once the child exec'd.
//  3. supervise: relay signals; an app still running after slimAfter
//     (longer while other launches are starting: slimDue) is handed to
//     the slim waiter; reap and report.
func start(l *launch, t *launchThread) (int, error) {
	defer l.close()
	l.opts.mark("prepare the child")
	if err := l.prepare(); err != nil {
		return 0, err
	}
	// The signals the relay forwards are caught from before the fork: the
	// app can start, and say it is ready, before the relay below runs,
	// and the runtime drops a SIGUSR1/2 that nothing has asked for
	// (TestExitStatusAndSignals lost one so, about 1 run in 30).
	l.sigs = make(chan os.Signal, 8)
	signal.Notify(l.sigs, earlysig.Forwarded...)
	t.proceed <- true
	// Once start returns, the launch thread ends, and the app's mount
	// namespace is torn down on its way out, beside the rest of the
	// clean-up rather than in the process's exit.
	defer close(t.slim)
	r := <-t.started
	l.opts.mark("app running")
	// The child's namespace has its bind of the cache mount now (or never
	// will): gc may unmount what it sees unused.
	l.lease.Release()
	// One P from here on (Run says why) while other launches in the state
	// directory build their roots, set once the launch thread is parked:
	// stopping the world while it was in a system call waited for that
	// call's end. A launch on its own keeps both: the call stops the world
	// and frees the second P's caches, 0.1 to 0.5 ms that a short app's
	// reaping waited for (CIMG_PROFILE marks). A warm-up keeps its own
	// until it stops.
	if l.oneP && l.warm == nil && imagecache.Launching(l.plan.StateDir) {
		runtime.GOMAXPROCS(1)
	}
	if r.pid == 0 {
		return 0, r.err
	}
	sv := newSupervisor(r.pid, l)
	if r.err != nil {
		sv.forward(syscall.SIGKILL)
		syscall.Wait4(r.pid, nil, 0, nil)
		return 0, r.err
	}
	// Cgroups that SIGKILLed launchers left go now, beside the running app
	// rather than before it (cgroup.SweepStale says why).
	swept := l.sweepStale()
	defer func() { <-swept }()
	sv.relay()
	// A named instance: recorded now that the app runs, which is when a
	// detached start reports success.
	if l.opts.Instance != nil {
		if err := l.record(r.pid); err != nil {
			sv.forward(syscall.SIGKILL)
			sv.finish()
			return 0, err
		}
	}
	// Under systemd, the app has been the unit's main process since its
	// fork (spawn); now it runs, the launcher's work is done.
	if sd := l.opts.Systemd; sd != nil {
		if err := sd.ready(); err != nil {
			sv.forward(syscall.SIGKILL)
			sv.finish()
			return 0, err
		}
		l.handedOff = true
		return 0, nil
	}
	// Signal windows around the hand-over are documented at becomeWaiter:
	// the relay forwards until it has handled every signal that can still
	// reach it, and the waiter's argv carries the stop deadline. Where
	// SIGUSR1/2 cannot be deferred across the exec, there is no waiter.
	if canDeferSignals && sv.slimDue(l.plan.StateDir) {
		// Its threads would hold up the settle and die in the exec; so
		// would the sweep's.
		stopWarmUp(l.warm)
		<-swept
		// One P for the hand-over, as before the exec of every waiter: an
		// idle second P is one more way for the runtime to start a thread
		// (with SIGUSR1/2 unblocked) after the settle.
		if l.oneP {
			runtime.GOMAXPROCS(1)
		}
		err := sv.openTasks() // here: the launch thread has the app's root
		if err == nil {
			t.slim <- sv
			err = <-t.slimFailed
			sv.tasks.Close()
		}
		if err != nil {
			l.opts.Warn(err.Error()) // still supervised, by this fuller process
			if l.opts.Instance != nil {
				l.opts.Instance.CopyLog()
			}
		}
	}
	code, err := sv.finish()
	l.opts.mark("app reaped")
	return code, err
}

// sweepStale runs the cgroup's SweepStale on a goroutine, off the
// launch thread (which has the app's root); the channel closes when it is
// done.
func (l *launch) sweepStale() <-chan struct{} {
	done := make(chan struct{})
	if l.cg == nil {
		close(done)
		return done
	}
	go func() {
		defer close(done)
		l.cg.SweepStale()
	}()
	return done
}

// record writes the instance's state: what ps, exec and inspect read.
func (l *launch) record(pid int) error {
	start, err := instance.ProcStart(pid)
	if err != nil {
		return fmt.Errorf("record instance: %w", err)
	}
	config, err := json.Marshal(l.plan)
	if err != nil {
		return fmt.Errorf("record instance: %w", err)
	}
	var unit string
	var unitOOM int
	if l.opts.Systemd != nil {
		unit = l.opts.Systemd.Unit
		mem := l.cg.Dirs[""]
		if !l.cg.V2 {
			mem = l.cg.Dirs["memory"]
		}
		unitOOM = instance.OOMKills(filepath.Dir(mem), l.cg.V2)
	}
	return l.opts.Instance.Started(instance.State{
		App: l.manifest.Name, Version: l.manifest.Version, Image: l.opts.Image, RootHash: hex.EncodeToString(l.rootHash[:]),
		Pid: pid, PidStart: start, Started: time.Now(),
		CgroupID: l.cg.ID, CgroupV2: l.cg.V2, Cgroup: l.cg.Dirs, Unit: unit, UnitOOMKills: unitOOM,
	}, config)
}

// prepare makes the child's plan, its pipes and the files opened by host
// path: once the launch thread's root is the app's, no path leads to them.
func (l *launch) prepare() error {
	var err error
	if l.fp, err = newForkPlan(l.plan); err != nil {
		return err
	}
	// An app handed to systemd outlives the launcher.
	l.fp.noPdeathsig = l.opts.Systemd != nil
	// Blocking pipes (os.Pipe's are non-blocking, which the child's raw
	// read could not wait on).
	l.sync, l.errp = [2]int{-1, -1}, [2]int{-1, -1}
	if err := unix.Pipe2(l.sync[:], unix.O_CLOEXEC); err != nil {
		return fmt.Errorf("pipe: %w", err)
	}
	if err := unix.Pipe2(l.errp[:], unix.O_CLOEXEC); err != nil {
		return fmt.Errorf("pipe: %w", err)
	}
	l.fp.syncR, l.fp.syncW, l.fp.errR, l.fp.errW = l.sync[0], l.sync[1], l.errp[0], l.errp[1]
	if l.plan.Init {
		// The init runs from a sealed memfd copy of cimg-run, never from
		// the host's binary; /proc is the child's by the time it execs it.
		if l.sealed, err = sealedSelf(); err != nil {
			return err
		}
		argv := append([]string{"cimg-init", InitArg}, l.plan.Argv...)
		if l.fp.path, l.fp.argv, err = execArgs(fmt.Sprintf("/proc/self/fd/%d", l.sealed.Fd()), argv); err != nil {
			return err
		}
	}
	if err := l.cgroupEntry(l.cg); err != nil {
		return err
	}
	// Nothing to do between the fork and the app's execve — no id maps
	// to write, no systemd to tell its main pid, no old version to wait
	// for: the child shares this address space until then (fork.go's
	// vfork), so no page tables are copied and neither side takes
	// copy-on-write faults.
	l.fp.vfork = canVfork && l.plan.UserNS == nil && l.opts.Systemd == nil && l.opts.Hold == nil
	if l.exe, err = os.Open("/proc/self/exe"); err != nil {
		return fmt.Errorf("open this executable for the slim waiter: %w", err)
	}
	if l.plan.UserNS != nil {
		if l.proc, err = os.Open("/proc"); err != nil {
			return err
		}
	}
	return nil
}

func (l *launch) close() {
	closeFDs(l.sync[:])
	closeFDs(l.errp[:])
	if l.fp != nil {
		closeFDs(l.fp.cgroupEntry)
	}
	for _, f := range []*os.File{l.exe, l.sealed, l.proc} {
		if f != nil {
			f.Close()
		}
	}
}

// launchThread is the thread the app is forked from, and how to talk to
// it once it reported.
type launchThread struct {
	proceed    chan bool // true: build the root and fork; false: give up
	started    chan spawned
	slim       chan *supervisor // the supervisor to become the slim waiter
	slimFailed chan error       // why it could not (it returns only then)
}

type spawned struct {
	pid int // 0: no child
	err error
}

// spawn starts the launch thread: one locked OS thread makes the app's
// namespaces at once, and once proceed says so builds its root
// (enterRoot's two halves), forks the child from them, releases it, and
// then stays parked until the app is gone — the child's parent-death
// signal is tied to this thread, and its root is the container's, so it
// never runs anything else. If the app outlives slimAfter, this thread
// execs the slim waiter, so the parent-death signal stays armed across
// the exec. Until proceed, it reads nothing of l but the plan and the
// options.
func (l *launch) spawn() *launchThread {
	t := &launchThread{proceed: make(chan bool, 1), started: make(chan spawned, 1), slim: make(chan *supervisor), slimFailed: make(chan error)}
	go func() {
		// Never unlocked: the thread leaves with its namespaces when this
		// goroutine ends.
		runtime.LockOSThread()
		// The host's mount namespace, root and working directory, for a
		// launch whose copy of it comes before the cache mount (below).
		// (Run sets plan.PrivateMount after it started this thread; the
		// option is set before.)
		var host *hostView
		if !l.opts.PrivateMount {
			host = openHostView()
		}
		// The namespaces first, beside the parent's mount cache, cgroup
		// and preparation: a new network namespace alone is the launch's
		// most costly system call (about 0.5 ms, CPU profile of warm
		// launches).
		err := enterNamespaces(l.plan)
		if !<-t.proceed {
			host.close()
			return // the launch failed before the fork
		}
		l.opts.mark("build the root")
		// The copy of the host's mounts must hold the cache mount the
		// parent leased (its Dev): not when this launch or another made
		// it after the copy (the first launch of an image, or one beside
		// gc), which a new copy then has.
		var st unix.Stat_t
		if err == nil && !l.plan.PrivateMount && (unix.Stat(l.plan.Image, &st) != nil || st.Dev != l.lease.Dev) {
			err = remountNamespace(l.plan, host)
		}
		host.close()
		if err == nil {
			err = buildRoot(l.plan, l.image, l.opts.VolumeDir, nil, nil)
		}
		if err != nil {
			t.started <- spawned{err: fmt.Errorf("build the app's root: %w", err)}
			return
		}
		l.opts.mark("fork and set up the child")
		pid, err := l.fork()
		if err != nil {
			t.started <- spawned{err: err}
			return
		}
		if sd := l.opts.Systemd; sd != nil {
			err = sd.mainPID(pid)
		}
		// A standby start (update's next version) waits here, its root
		// built and the app's process made, in its cgroup, until the
		// version it replaces has stopped.
		if h := l.opts.Hold; err == nil && h != nil {
			l.opts.mark("hold")
			err = h()
		}
		if err == nil {
			err = l.releaseChild(pid)
		}
		if ce, ok := err.(childError); ok && ce.step == stepExec {
			// Explained here: this thread sees the files execve saw.
			if hint := explainExec(l.plan, unix.Errno(ce.errno)); hint != "" {
				err = fmt.Errorf("%w: %s", err, hint)
			}
		}
		if err != nil {
			err = fmt.Errorf("app setup, %w", err)
		}
		t.started <- spawned{pid: pid, err: err}
		for s := range t.slim {
			t.slimFailed <- s.becomeWaiter(l.exe)
		}
	}()
	return t
}

// cgroupEntry plans how the child gets into cg (nil: none): born in it
// where clone3 can (v2), else it enters by itself, first thing, through
// files opened now, while the cgroup's directories are still at hand
// (cgroup.Entry).
func (l *launch) cgroupEntry(cg *cgroup.Cgroup) error {
	if cg == nil {
		return nil
	}
	if fd := cg.CloneFD(); fd >= 0 {
		// Born in its cgroup: no window where it runs outside the limits.
		l.fp.clone3 = &cloneArgs{flags: uint64(l.fp.cloneFlags) | unix.CLONE_INTO_CGROUP, exitSignal: uint64(unix.SIGCHLD), cgroup: uint64(fd)}
	}
	var err error
	l.fp.cgroupEntry, err = cg.Entry()
	return err
}

// fork clones the child from the calling (launch) thread; the child is in
// its cgroup before it does anything else.
func (l *launch) fork() (int, error) {
	syscall.ForkLock.Lock()
	pid, errno := forkChild(l.fp)
	if l.fp.clone3 != nil && (errno == unix.ENOSYS || errno == unix.E2BIG || errno == unix.EINVAL) {
		// A kernel before 5.7 (no clone3, or no CLONE_INTO_CGROUP): a
		// plain clone, which enters the cgroup itself.
		l.fp.clone3 = nil
		pid, errno = forkChild(l.fp)
	}
	syscall.ForkLock.Unlock()
	if errno != 0 {
		return 0, fmt.Errorf("clone the app's process: %w", errno)
	}
	// Our copies of the child's pipe ends go, so that EOF means something.
	closeFDs([]int{l.sync[0], l.errp[1]})
	l.sync[0], l.errp[1] = -1, -1
	return int(pid), nil
}

// releaseChild lets the child go on, writes its id maps when it asks
// (user namespace), and waits for its setup: EOF on the error pipe means
// it reached execve.
func (l *launch) releaseChild(pid int) error {
	if err := l.fp.release(l.sync[1]); err != nil {
		return err
	}
	for {
		var report childError
		buf := (*[unsafe.Sizeof(report)]byte)(unsafe.Pointer(&report))[:]
		if n, _ := readFull(l.errp[0], buf); n == 0 {
			return nil
		}
		if report.step == stepFifo && report.errno == 0 {
			return nil // cimg-oci create: waiting for start
		}
		if report.step != stepIDMap || report.errno != 0 {
			return report
		}
		if err := writeIDMaps(l.proc, pid, l.plan.UserNS); err != nil {
			return err
		}
		if _, err := unix.Write(l.sync[1], []byte{1}); err != nil {
			return fmt.Errorf("release the child: %w", err)
		}
	}
}

// writeIDMaps maps the child's user namespace: ids 0..Count-1 inside are
// Base.. on the host. proc is the host's /proc, opened before the launch
// thread's root changed.
func writeIDMaps(proc *os.File, pid int, m *IDMap) error {
	for _, f := range []struct {
		name, text string
	}{{"uid_map", m.lines(m.UIDs, m.UIDBase)}, {"gid_map", m.lines(m.GIDs, m.GIDBase)}} {
		name := strconv.Itoa(pid) + "/" + f.name
		fd, err := unix.Openat(int(proc.Fd()), name, unix.O_WRONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open /proc/%s: %w", name, err)
		}
		// One write: the kernel takes a map whole or not at all (and
		// refuses overlapping ranges, or more than 340 lines).
		_, err = unix.Write(fd, []byte(f.text))
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("write /proc/%s: %w", name, err)
		}
	}
	return nil
}

// newForkPlan turns the plan into the raw arguments of the child's
// system calls.
func newForkPlan(p *Plan) (*forkPlan, error) {
	fp := &forkPlan{noNewPrivs: p.NoNewPrivs, uid: uintptr(p.UID), gid: uintptr(p.GID), groups: p.Groups, userNS: p.UserNS != nil,
		stdio: [3]int{-1, -1, -1}}
	// The thread's mount, uts, ipc and net namespaces are inherited; the
	// pid namespace is the child's to be born in.
	if p.NewPID {
		fp.cloneFlags |= unix.CLONE_NEWPID
	}
	var err error
	if fp.path, fp.argv, err = execArgs(p.Argv[0], p.Argv); err != nil {
		return nil, err
	}
	if fp.envv, err = syscall.SlicePtrFromStrings(p.Env); err != nil {
		return nil, fmt.Errorf("environment: %w", err)
	}
	fp.envv = append(fp.envv, nil)
	if fp.procMounts, err = rawMounts(p.Proc); err != nil {
		return nil, err
	}
	for _, r := range p.Rlimits {
		fp.rlimits = append(fp.rlimits, rlimitCall{uintptr(r.Resource), unix.Rlimit{Cur: r.Soft, Max: r.Hard}})
	}
	if fp.filter, err = seccompProgram(p.Seccomp); err != nil {
		return nil, err
	}
	keep := map[int]bool{}
	for _, k := range p.Keep {
		keep[k] = true
		fp.keep = append(fp.keep, uintptr(k))
		fp.capData[k/32].Effective |= 1 << (k % 32)
		fp.capData[k/32].Permitted |= 1 << (k % 32)
		fp.capData[k/32].Inheritable |= 1 << (k % 32)
	}
	// Up to the highest capability number the kernel could have; EINVAL
	// for the ones this one lacks is ignored.
	for c := 0; c <= lastCap; c++ {
		if !keep[c] {
			fp.drop = append(fp.drop, uintptr(c))
		}
	}
	fp.capHdr.Version = unix.LINUX_CAPABILITY_VERSION_3
	return fp, nil
}

// rawMounts turns the child's mount plan into mount(2) arguments: a
// read-only path is a bind onto itself and a read-only remount of it.
func rawMounts(specs []MountSpec) ([]rawMount, error) {
	var out []rawMount
	add := func(src, dst, fstype, data string, flags uintptr, optional bool) error {
		var r rawMount
		for _, s := range []struct {
			p **byte
			v string
		}{{&r.src, src}, {&r.dst, dst}, {&r.fstype, fstype}, {&r.data, data}} {
			if s.v == "" {
				continue
			}
			b, err := syscall.BytePtrFromString(s.v)
			if err != nil {
				return fmt.Errorf("mount %s: %w", dst, err)
			}
			*s.p = b
		}
		r.flags, r.optional = flags, optional
		out = append(out, r)
		return nil
	}
	for _, m := range specs {
		alt := len(out)
		var err error
		switch m.Kind {
		case KindProc:
			err = add("proc", m.Target, "proc", m.Data, m.Flags, m.Optional)
		case KindReadOnly:
			if err = add(m.Target, m.Target, "", "", unix.MS_BIND|unix.MS_REC, m.Optional); err == nil {
				err = add("", m.Target, "", "", unix.MS_BIND|unix.MS_REMOUNT|m.Flags, m.Optional)
			}
		case KindMaskFile:
			err = add(m.Source, m.Target, "", "", unix.MS_BIND, m.Optional)
		case KindMaskDir:
			err = add("tmpfs", m.Target, "tmpfs", m.Data, m.Flags, m.Optional)
		default:
			err = fmt.Errorf("the child cannot mount kind %q", m.Kind)
		}
		if err != nil {
			return nil, err
		}
		if m.Alt {
			out[alt].alt = true
		}
	}
	return out, nil
}
