package launcher

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"cimg.dev/cimg/internal/cgroup"
	"cimg.dev/cimg/internal/earlysig"
	"cimg.dev/cimg/internal/imagecache"
	"cimg.dev/cimg/internal/instance"
)

// WaitArg as argv[1] makes cimg-run the slim waiter: what a launcher
// turns into once its app has run for slimAfter. Everything that set the
// app up is garbage by then, but a Go process keeps the memory it has
// touched; a fresh one that only waits, relays signals and cleans up
// holds well under half of it (measured in bench/results/launch.md).
const WaitArg = earlysig.WaitArg

// slimAfter: an app still running this long after its start gets the
// slim waiter. Short-lived apps never pay for the exec.
const slimAfter = 100 * time.Millisecond

// slimLatest: while other launches in the state directory are building
// their roots, the hand-over waits, in steps of slimAfter, up to this
// long after the app's start (slimDue).
const slimLatest = time.Second

// supervisor waits for the app: it relays signals, SIGKILLs the cgroup a
// stop timeout after SIGTERM or SIGINT, and reports an OOM kill.
type supervisor struct {
	pid         int
	pidfd       int // signals never reach a recycled pid
	cg          *cgroup.Cgroup
	name        string
	memory      string // the limit, for the OOM report
	stopTimeout time.Duration
	stopAt      time.Time // set once SIGTERM/SIGINT was relayed
	warn        func(string)
	ended       *instance.Exit     // filled in by finish
	inst        *instance.Instance // a named instance: its lock and log go to the waiter

	tasks   *os.File       // /proc/self/task, for becomeWaiter
	sigs    chan os.Signal // the forwarded ones, and flushSignal once becomeWaiter asks for it
	flushed chan struct{}  // the relay has handled every signal taken in before flushSignal
	done    chan struct{}
}

// newSupervisor watches the app forked as pid.
func newSupervisor(pid int, l *launch) *supervisor {
	// Before Linux 5.3 there are no pidfds: signals then go by pid (ours
	// until we reap it) and the slim waiter is skipped.
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		pidfd = -1
	}
	return &supervisor{pid: pid, pidfd: pidfd, sigs: l.sigs, cg: l.cg, name: l.plan.Name, memory: l.plan.Memory,
		stopTimeout: l.opts.StopTimeout, warn: l.opts.Warn, ended: &l.ended, inst: l.opts.Instance}
}

// relay forwards signals until finish; it returns at once.
func (s *supervisor) relay() {
	s.done = make(chan struct{})
	if s.sigs == nil { // the slim waiter's come from its init
		s.sigs = earlysig.Waiter
	}
	s.flushed = make(chan struct{}, 1)
	go func() {
		var kill <-chan time.Time
		if !s.stopAt.IsZero() {
			kill = time.After(time.Until(s.stopAt))
		}
		for {
			select {
			case sig := <-s.sigs:
				if sig == flushSignal {
					// os/signal hands signals on in the order the runtime
					// took them in (by number within one batch, and
					// flushSignal's is above every forwarded one): all
					// that came before it are forwarded by now.
					s.flushed <- struct{}{}
					continue
				}
				s.forward(sig.(syscall.Signal))
			case <-kill:
				// Grace period over: everything in the cgroup dies.
				s.cg.Kill(syscall.SIGKILL)
			case <-s.done:
				return
			}
			if !s.stopAt.IsZero() && kill == nil {
				kill = time.After(time.Until(s.stopAt))
			}
		}
	}()
}

func (s *supervisor) forward(sig syscall.Signal) {
	if s.pidfd >= 0 {
		unix.PidfdSendSignal(s.pidfd, sig, nil, 0)
	} else {
		syscall.Kill(s.pid, sig)
	}
	if (sig == syscall.SIGTERM || sig == syscall.SIGINT) && s.stopAt.IsZero() {
		s.stopAt = time.Now().Add(s.stopTimeout)
	}
}

// finish reaps the app and returns its status as an exit code.
func (s *supervisor) finish() (int, error) {
	var ws syscall.WaitStatus
	var err error
	for {
		if _, err = syscall.Wait4(s.pid, &ws, 0, nil); err != syscall.EINTR {
			break
		}
	}
	// The relay ends; its signals stay taken in (ignored from now on):
	// giving them back (signal.Stop) measured 0.8 ms of round trips to
	// os/signal's thread, in line before the exit, and one arriving during
	// the cleanup below would have killed us half way through it.
	close(s.done)
	if s.pidfd >= 0 {
		unix.Close(s.pidfd)
	}
	if err != nil {
		return 0, fmt.Errorf("wait for the app: %w", err)
	}
	code := ws.ExitStatus()
	e := instance.Exit{Code: code}
	if ws.Signaled() {
		code = 128 + int(ws.Signal())
		e.Code, e.Signal = code, unix.SignalName(ws.Signal())
	}
	if e.OOM = s.cg.OOMKilled(); e.OOM && s.warn != nil {
		s.warn(fmt.Sprintf("%s was killed by the OOM killer: it exceeded its memory limit of %s", s.name, s.memory))
	}
	if s.ended != nil {
		*s.ended = e
	}
	return code, nil
}

// slimDue waits until the app has run slimAfter, and then for as long as
// other launches in state are building their roots (up to slimLatest):
// the exec and the waiter's Go start, some 2 ms of CPU, would be taken
// from them. When many apps start at once, as at boot, every launch
// would otherwise pay for the hand-overs of those that started before
// it (50 launches at once on 2 cores, alternating rounds by hand: median
// start 0.88-0.96x with this wait).
// It returns false if the app ended first.
func (s *supervisor) slimDue(state string) bool {
	for waited := slimAfter; ; waited += slimAfter {
		if s.exited(slimAfter) {
			return false
		}
		if waited >= slimLatest || !imagecache.Launching(state) {
			return true
		}
	}
}

// exited waits up to d for the app to exit, without reaping it (without
// a pidfd it does not wait, and says yes: no slim waiter then).
func (s *supervisor) exited(d time.Duration) bool {
	if s.pidfd < 0 {
		return true
	}
	fds := []unix.PollFd{{Fd: int32(s.pidfd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, int(d.Milliseconds()))
		if err == unix.EINTR {
			continue
		}
		return n > 0 || err != nil
	}
}

// stopSignals are the forwarded signals the Go runtime will not leave
// blocked when a process starts: until package earlysig asks for them, a
// new waiter dies of them.
var stopSignals = [...]os.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT}

// flushSignal marks the end of the signals the relay must handle before
// the exec: a real-time signal nobody else sends (the runtime ignores it
// while nothing asks for it), numbered above every forwarded one.
const flushSignal = syscall.Signal(63)

// flushWait bounds the wait for the relay to reach the marker; a relay
// that late means a machine in trouble, and this fuller process then
// stays the supervisor rather than exec with a stop request in flight.
const flushWait = 2 * time.Second

// openTasks opens /proc/self/task for becomeWaiter, from a thread that
// has the host's root.
func (s *supervisor) openTasks() error {
	f, err := os.Open("/proc/self/task")
	if err != nil {
		return fmt.Errorf("the slim waiter is skipped: %w", err)
	}
	s.tasks = f
	return nil
}

// becomeWaiter replaces this process with the slim waiter, from the thread
// that forked the app (so the app's parent-death signal stays armed), and
// returns only if that fails. exe is the cimg-run executable, opened
// before the thread's root changed.
//
// No signal may be lost across the exec (CI saw a stop request lost when
// a fixed 1 ms pause stood where the flush is: the relay had not run yet;
// and a SIGUSR1 taken in by the runtime after the flush). In order:
//  1. SIGUSR1/2 are blocked on this thread, the one that survives execve
//     (a signal mask survives execve).
//  2. The stop signals get the kernel's default action: from now on one
//     ends the process, and the app with it by its parent-death signal,
//     rather than sit in the runtime's queue when execve ends the relay.
//     The same happens to one arriving before the new waiter asks for it.
//  3. SIGUSR1/2 are deferred (sigdefer.go): from now on they end up
//     pending in the kernel, where they wait for the waiter to ask.
//  4. flushSignal goes to this process and the relay answers it once it
//     has forwarded everything taken in before it, so the deadline of a
//     stop forwarded just before step 2 is known when argv is written.
//  5. Last before execve, the deferral settles: no thread but this one
//     can be handed SIGUSR1/2 any more.
//
// What remains: a runtime signal handler already entered for a signal
// before step 2 or 3, and stalled past the whole flush before it queues
// the signal.
func (s *supervisor) becomeWaiter(exe *os.File) error {
	var set, old unix.Sigset_t
	for _, sig := range earlysig.Forwarded {
		n, w := uint(sig.(syscall.Signal))-1, uint(unsafe.Sizeof(set.Val[0])*8)
		set.Val[n/w] |= 1 << (n % w)
	}
	if err := unix.PthreadSigmask(unix.SIG_BLOCK, &set, &old); err != nil {
		return fmt.Errorf("block signals: %w", err)
	}
	defer unix.PthreadSigmask(unix.SIG_SETMASK, &old, nil) // the defers run only if execve failed
	// Set under the runtime's feet (not with signal.Reset), so that one
	// it took in just before still reaches the relay.
	var saved [len(stopSignals)][4]uint64 // struct sigaction, any arch; all zero is SIG_DFL
	for i, sig := range stopSignals {
		var dfl [4]uint64
		if err := sigaction(sig.(syscall.Signal), &dfl, &saved[i]); err != nil {
			return err
		}
		defer sigaction(sig.(syscall.Signal), &saved[i], nil)
	}
	signal.Notify(s.sigs, flushSignal)
	defer signal.Reset(flushSignal)
	deferred, err := deferSignals()
	if err != nil {
		return err
	}
	defer deferred.restore()
	if err := syscall.Kill(os.Getpid(), flushSignal); err != nil {
		return fmt.Errorf("flush the signal relay: %w", err)
	}
	select {
	case <-s.flushed: // and the relay's stopAt is ours to read
	case <-time.After(flushWait):
		return fmt.Errorf("the signal relay did not answer in %v: the slim waiter is skipped", flushWait)
	}
	argv := []string{"cimg-run", WaitArg, "pid=" + strconv.Itoa(s.pid), "pidfd=" + strconv.Itoa(s.pidfd),
		"name=" + s.name, "memory=" + s.memory, "stop-timeout=" + s.stopTimeout.String(), "id=" + s.cg.ID}
	if !s.stopAt.IsZero() {
		argv = append(argv, "stop-at="+strconv.FormatInt(s.stopAt.UnixNano(), 10))
	}
	if s.cg.V2 {
		argv = append(argv, "v2")
	}
	keep := []int{s.pidfd} // exited made sure there is a pidfd
	words, fds := s.cg.HandOver()
	for _, w := range words {
		argv = append(argv, "cgroup="+w)
	}
	keep = append(keep, fds...)
	if s.inst != nil {
		word, fds := s.inst.HandOver()
		argv = append(argv, "instance="+word)
		keep = append(keep, fds...)
	}
	for _, fd := range keep {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0); err != nil {
			return err
		}
	}
	argvp, err := syscall.SlicePtrFromStrings(argv)
	if err != nil {
		return err
	}
	envp, err := syscall.SlicePtrFromStrings([]string{"GOMAXPROCS=1"})
	if err != nil {
		return err
	}
	empty := [1]byte{}
	if err := deferred.settle(s.tasks, flushWait); err != nil {
		return fmt.Errorf("defer SIGUSR1/2 across the exec: %w: the slim waiter is skipped", err)
	}
	_, _, errno := syscall.Syscall6(unix.SYS_EXECVEAT, exe.Fd(), uintptr(unsafe.Pointer(&empty[0])),
		uintptr(unsafe.Pointer(&append(argvp, nil)[0])), uintptr(unsafe.Pointer(&append(envp, nil)[0])), unix.AT_EMPTY_PATH, 0)
	return fmt.Errorf("exec the waiter: %w", errno)
}

// sigaction sets sig's disposition to act, the kernel's struct sigaction,
// keeping the old one in old unless it is nil.
func sigaction(sig syscall.Signal, act, old *[4]uint64) error {
	var o uintptr
	if old != nil {
		o = uintptr(unsafe.Pointer(old))
	}
	if _, _, errno := syscall.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(sig), uintptr(unsafe.Pointer(act)), o, 8, 0, 0); errno != 0 {
		return fmt.Errorf("rt_sigaction %v: %w", sig, errno)
	}
	return nil
}

// WaitMain is the slim waiter (see WaitArg): it takes over the app from
// the launcher it replaced, and exits with the app's status.
func WaitMain(args []string) {
	s, err := parseWaiterArgs(args)
	if err != nil {
		// Only a launcher of another version could hand us words we do not
		// know: the app must not run on unsupervised.
		fmt.Fprintf(os.Stderr, "cimg-run: slim waiter: %v; killing the app\n", err)
		if s.pidfd > 0 {
			unix.PidfdSendSignal(s.pidfd, unix.SIGKILL, nil, 0)
		}
		os.Exit(125)
	}
	s.warn = func(m string) { fmt.Fprintf(os.Stderr, "cimg-run: warning: %s\n", m) }
	// The exec made us dumpable again: no process of the container may
	// open our /proc/PID/exe, the host's cimg-run (CVE-2019-5736).
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		s.warn(fmt.Sprintf("prctl(PR_SET_DUMPABLE): %v", err))
	}
	if s.inst != nil {
		s.inst.CopyLog() // a detached instance's output, which nothing read so far
	}
	s.relay()
	var ended instance.Exit
	s.ended = &ended
	code, err := s.finish()
	if rerr := s.cg.Remove(); err == nil && rerr != nil {
		s.warn(rerr.Error())
	}
	if s.inst != nil {
		if err != nil {
			ended.Code = 125
		}
		if err := s.inst.Exited(ended); err != nil {
			s.warn(err.Error())
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "cimg-run: %v\n", err)
		os.Exit(125)
	}
	os.Exit(code)
}

// parseWaiterArgs reads what becomeWaiter put in argv. Every word must
// parse: the supervisor it builds is the app's only one.
func parseWaiterArgs(args []string) (*supervisor, error) {
	s := &supervisor{pidfd: -1}
	var id string
	var v2 bool
	var words []string
	var errs []error
	num := func(k, v string) int64 {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: %w", k, v, err))
		}
		return n
	}
	for _, a := range args {
		k, v, _ := strings.Cut(a, "=")
		switch k {
		case "pid":
			s.pid = int(num(k, v))
		case "pidfd":
			s.pidfd = int(num(k, v))
		case "name":
			s.name = v
		case "memory":
			s.memory = v
		case "stop-timeout":
			d, err := time.ParseDuration(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("stop-timeout: %w", err))
			}
			s.stopTimeout = d
		case "stop-at":
			s.stopAt = time.Unix(0, num(k, v))
		case "id":
			id = v
		case "v2":
			v2 = true
		case "cgroup":
			words = append(words, v)
		case "instance":
			in, err := instance.Adopt(v)
			if err != nil {
				errs = append(errs, err)
			}
			s.inst = in
		default:
			errs = append(errs, fmt.Errorf("unknown argument %q", a))
		}
	}
	if s.pid <= 0 || s.pidfd < 0 {
		errs = append(errs, errors.New("no pid= and pidfd= of the app"))
	}
	cg, err := cgroup.Adopt(id, v2, words)
	if err != nil {
		errs = append(errs, err)
	}
	s.cg = cg
	return s, errors.Join(errs...)
}
