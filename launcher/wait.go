package launcher

import (
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// WaitArg as argv[1] makes cimg-run the slim waiter: what a launcher
// turns into once its app has run for slimAfter. Everything that set the
// app up is garbage by then, but a Go process keeps the memory it has
// touched; a fresh one that only waits, relays signals and cleans up
// holds well under half of it (measured in bench/results/launch.md).
const WaitArg = "__cimg_wait__"

// slimAfter: an app still running this long after its start gets the
// slim waiter. Short-lived apps never pay for the exec.
const slimAfter = 100 * time.Millisecond

// forwarded are the signals relayed to the app.
var forwarded = []os.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2}

// supervisor waits for the app: it relays signals, SIGKILLs the cgroup a
// stop timeout after SIGTERM or SIGINT, and reports an OOM kill.
type supervisor struct {
	pid         int
	pidfd       int // signals never reach a recycled pid
	cg          *Cgroup
	name        string
	memory      string // the limit, for the OOM report
	stopTimeout time.Duration
	stopAt      time.Time // set once SIGTERM/SIGINT was relayed
	warn        func(string)

	mu   sync.Mutex // held while relaying, and by the hand-over to the waiter
	sigs chan os.Signal
	done chan struct{}
}

// relay forwards signals until finish; it returns at once.
func (s *supervisor) relay() {
	s.sigs = make(chan os.Signal, 8)
	s.done = make(chan struct{})
	signal.Notify(s.sigs, forwarded...)
	go func() {
		var kill <-chan time.Time
		if !s.stopAt.IsZero() {
			kill = time.After(time.Until(s.stopAt))
		}
		for {
			select {
			case sig := <-s.sigs:
				s.mu.Lock()
				s.forward(sig.(syscall.Signal))
				s.mu.Unlock()
				if !s.stopAt.IsZero() && kill == nil {
					kill = time.After(time.Until(s.stopAt))
				}
			case <-kill:
				// Grace period over: everything in the cgroup dies.
				s.cg.Kill(syscall.SIGKILL)
			case <-s.done:
				return
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
	close(s.done)
	signal.Stop(s.sigs)
	if err != nil {
		return 0, fmt.Errorf("wait for the app: %w", err)
	}
	code := ws.ExitStatus()
	if ws.Signaled() {
		code = 128 + int(ws.Signal())
	}
	if s.cg.OOMKilled() && s.warn != nil {
		s.warn(fmt.Sprintf("%s was killed by the OOM killer: it exceeded its memory limit of %s", s.name, s.memory))
	}
	return code, nil
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

// becomeWaiter replaces this process with the slim waiter, from the thread
// that forked the app (so the app's parent-death signal stays armed), and
// returns only if that fails. exe is the cimg-run executable, opened
// before the thread's root changed.
func (s *supervisor) becomeWaiter(exe *os.File) error {
	// No relaying while the process image changes; signals already taken
	// in are forwarded now. (One that arrives between here and execve is
	// lost: the window is the execve itself.)
	s.mu.Lock()
	defer s.mu.Unlock()
	// Blocked on this thread, signals stay pending through execve until
	// the waiter asks for them (a signal mask survives execve); without
	// this, one sent while the waiter's runtime starts would kill it.
	var set, old unix.Sigset_t
	for _, sig := range forwarded {
		n, w := uint(sig.(syscall.Signal))-1, uint(unsafe.Sizeof(set.Val[0])*8)
		set.Val[n/w] |= 1 << (n % w)
	}
	if err := unix.PthreadSigmask(unix.SIG_BLOCK, &set, &old); err != nil {
		return fmt.Errorf("block signals: %w", err)
	}
	defer unix.PthreadSigmask(unix.SIG_SETMASK, &old, nil) // only if execve failed
	for drained := false; !drained; {
		select {
		case sig := <-s.sigs:
			s.forward(sig.(syscall.Signal))
		default:
			drained = true
		}
	}
	argv := []string{"cimg-run", WaitArg, "pid=" + strconv.Itoa(s.pid), "pidfd=" + strconv.Itoa(s.pidfd),
		"name=" + s.name, "memory=" + s.memory, "stop-timeout=" + s.stopTimeout.String(), "id=" + s.cg.ID}
	if !s.stopAt.IsZero() {
		argv = append(argv, "stop-at="+strconv.FormatInt(s.stopAt.UnixNano(), 10))
	}
	if s.cg.V2 {
		argv = append(argv, "v2")
	}
	keep := []int{s.pidfd} // exited made sure there is one
	for c, p := range s.cg.parents {
		d := s.cg.held[c]
		argv = append(argv, fmt.Sprintf("cgroup=%s:%d:%d", c, p.Fd(), d.Fd()))
		keep = append(keep, int(p.Fd()), int(d.Fd()))
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
	_, _, errno := syscall.Syscall6(unix.SYS_EXECVEAT, exe.Fd(), uintptr(unsafe.Pointer(&empty[0])),
		uintptr(unsafe.Pointer(&append(argvp, nil)[0])), uintptr(unsafe.Pointer(&append(envp, nil)[0])), unix.AT_EMPTY_PATH, 0)
	return fmt.Errorf("exec the waiter: %w", errno)
}

// WaitMain is the slim waiter (see WaitArg): it takes over the app from
// the launcher it replaced, and exits with the app's status.
func WaitMain(args []string) {
	s := &supervisor{cg: newCgroup("", false)}
	s.warn = func(m string) { fmt.Fprintf(os.Stderr, "cimg-run: warning: %s\n", m) }
	for _, a := range args {
		k, v, _ := strings.Cut(a, "=")
		switch k {
		case "pid":
			s.pid, _ = strconv.Atoi(v)
		case "pidfd":
			s.pidfd, _ = strconv.Atoi(v)
		case "name":
			s.name = v
		case "memory":
			s.memory = v
		case "stop-timeout":
			s.stopTimeout, _ = time.ParseDuration(v)
		case "stop-at":
			n, _ := strconv.ParseInt(v, 10, 64)
			s.stopAt = time.Unix(0, n)
		case "id":
			s.cg.ID = v
		case "v2":
			s.cg.V2 = true
		case "cgroup": // controller:parent-fd:held-fd
			f := strings.Split(v, ":")
			if len(f) == 3 {
				p, _ := strconv.Atoi(f[1])
				d, _ := strconv.Atoi(f[2])
				s.cg.parents[f[0]] = os.NewFile(uintptr(p), "cgroup parent "+f[0])
				s.cg.held[f[0]] = os.NewFile(uintptr(d), "cgroup "+f[0])
			}
		}
	}
	s.relay()
	code, err := s.finish()
	if rerr := s.cg.Remove(); err == nil && rerr != nil {
		s.warn(rerr.Error())
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "cimg-run: %v\n", err)
		os.Exit(125)
	}
	os.Exit(code)
}
