package launcher

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Deferring SIGUSR1 and SIGUSR2 across the exec of the slim waiter.
//
// A signal the Go runtime has taken in lives in this process's memory
// until the relay forwards it, and execve ends the process image with it:
// one arriving in the last moments before the exec would be lost. A mask
// cannot keep it out of the runtime's hands: masks are per thread, and the
// runtime's own threads (sysmon among them) unblock it. So for those last
// moments the two signals get deferHandler (sigdefer_$GOARCH.s), a dozen
// instructions that run on whichever thread the kernel picked, block the
// signal on that thread for after the handler returns (in the saved
// context's mask) and send it to the process again. Once every thread but
// the exec's blocks both, they stay pending in the kernel, which keeps a
// process's pending signals and the exec thread's mask across execve; the
// waiter starts with both blocked and takes them in as soon as package
// earlysig asks for them.
//
// One more step closes the gap between the kernel handing a signal to a
// thread and deferHandler sending it on: execve kills the other threads,
// and one killed in that gap takes the signal with it (once in 360
// launches of TestUserSignalsAcrossWaiterExec without this step). So before the exec, settle has every other thread run
// primeHandler (a thread-directed primeSignal: it blocks both, nothing
// else) until each blocks both outside of any handler. From then on no
// thread but the exec's can be handed one.
//
// Stop signals need none of this: they get the default action instead
// (becomeWaiter).

// deferredMask are the signals deferred, as primeHandler has them built
// in (the index below stops the build if they differ).
const deferredMask = 1<<(syscall.SIGUSR1-1) | 1<<(syscall.SIGUSR2-1)

var _ = [1]int{}[deferredMask-0xa00]

// primeSignal is sent to each thread by settle; a real-time signal the
// runtime leaves to os/signal, and nothing else here asks for.
const primeSignal = syscall.Signal(62)

// inHandlerSignal is blocked on a thread only while it runs a signal
// handler (the Go runtime's and ours block every signal meanwhile).
const inHandlerSignal = flushSignal

// handlerFlags: siginfo and the ucontext as arguments, the Go runtime's
// signal stack (a goroutine's stack may be too small for the kernel's
// frame), and interrupted system calls restarted, as the runtime has them.
const handlerFlags = 0x4 | 0x08000000 | 0x10000000 // SA_SIGINFO | SA_ONSTACK | SA_RESTART

// deferral undoes deferSignals.
type deferral struct {
	sigs  []syscall.Signal
	saved [][4]uint64
	asked chan os.Signal
}

// deferSignals gives SIGUSR1 and SIGUSR2 deferHandler, and primeSignal
// primeHandler.
func deferSignals() (*deferral, error) {
	if !canDeferSignals {
		return nil, fmt.Errorf("no signal deferral on this architecture")
	}
	// Asked for, so the runtime's signal thread, which blocks every
	// signal nobody asked for, can be primed and seen outside handlers.
	d := &deferral{asked: make(chan os.Signal, 1)}
	signal.Notify(d.asked, primeSignal, inHandlerSignal)
	deferAct, primeAct := handlerActions()
	for _, h := range []struct {
		sig syscall.Signal
		act [4]uint64
	}{{syscall.SIGUSR1, deferAct}, {syscall.SIGUSR2, deferAct}, {primeSignal, primeAct}} {
		var old [4]uint64
		if err := sigaction(h.sig, &h.act, &old); err != nil {
			d.restore()
			return nil, err
		}
		d.sigs, d.saved = append(d.sigs, h.sig), append(d.saved, old)
	}
	return d, nil
}

// restore gives the signals back what they had. Threads that deferred
// one keep it blocked, but the runtime's signal thread sets its whole
// mask anew whenever os/signal changes what is asked for: the last step
// has it take in what was left pending.
func (d *deferral) restore() {
	for i := range d.sigs {
		sigaction(d.sigs[i], &d.saved[i], nil)
	}
	signal.Stop(d.asked)
}

// settle returns once every thread of this process but the caller's
// blocks SIGUSR1 and SIGUSR2 outside of any signal handler, priming those
// that do not; or an error after timeout. tasks is /proc/self/task, opened
// where the host's /proc is at hand (becomeWaiter's thread has the app's
// root). Call it last before execve: a thread the runtime starts
// afterwards has both unblocked.
func (d *deferral) settle(tasks *os.File, timeout time.Duration) error {
	self, pid := unix.Gettid(), os.Getpid()
	deadline := time.Now().Add(timeout)
	for {
		before, err := threads(tasks)
		if err != nil {
			return err
		}
		settled := true
		for _, tid := range before {
			if tid == self {
				continue
			}
			blocked, err := blockedSignals(tasks, tid)
			if err != nil {
				continue // it has exited
			}
			switch {
			case blocked&(1<<(inHandlerSignal-1)) != 0:
				settled = false // in a handler: it may hold a signal not yet sent on
			case blocked&deferredMask != deferredMask:
				settled = false
				unix.Tgkill(pid, tid, primeSignal)
			}
		}
		after, err := threads(tasks)
		if err != nil {
			return err
		}
		if settled && slices.Equal(before, after) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("threads still take SIGUSR1 or SIGUSR2 in after %v", timeout)
		}
		// This thread only: with time.Sleep a settle of 9 threads took
		// 1.4 ms, with nanosleep 0.6 ms (a benchmark not kept).
		unix.Nanosleep(&unix.Timespec{Nsec: 50_000}, nil)
	}
}

// threads lists the threads in tasks (/proc/self/task).
func threads(tasks *os.File) ([]int, error) {
	if _, err := tasks.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	names, err := tasks.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("list threads: %w", err)
	}
	tids := make([]int, 0, len(names))
	for _, n := range names {
		if tid, err := strconv.Atoi(n); err == nil {
			tids = append(tids, tid)
		}
	}
	slices.Sort(tids)
	return tids, nil
}

// blockedSignals reads thread tid's signal mask (SigBlk).
func blockedSignals(tasks *os.File, tid int) (uint64, error) {
	fd, err := unix.Openat(int(tasks.Fd()), strconv.Itoa(tid)+"/status", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	f := os.NewFile(uintptr(fd), "status")
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		return 0, err
	}
	_, rest, ok := bytes.Cut(b, []byte("\nSigBlk:\t"))
	if !ok {
		return 0, fmt.Errorf("no SigBlk in thread %d's status", tid)
	}
	line, _, _ := bytes.Cut(rest, []byte("\n"))
	return strconv.ParseUint(string(line), 16, 64)
}
