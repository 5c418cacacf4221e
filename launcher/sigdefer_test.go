package launcher

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestUserSignalsSurviveWaiterExec: the class "signal lost in the slim
// waiter's exec" (launcher/wait.go, becomeWaiter). Once deferred, a
// SIGUSR1 sent to the process, from any of its threads, must never be
// taken in by the Go runtime (whose queue execve would end), must stay
// pending in the kernel, and must reach the program execve starts. Each
// step runs in a child of its own: a process that deferred signals keeps
// them blocked on its threads.
func TestUserSignalsSurviveWaiterExec(t *testing.T) {
	switch os.Getenv("CIMG_SIGDEFER") {
	case "defer":
		deferAndExec(os.Getenv("CIMG_SIGDEFER_EXEC") != "no")
	case "after-exec":
		takeAfterExec()
	}
	if !canDeferSignals {
		t.Fatalf("no signal deferral for %s: write sigdefer_%s.s (cimg-run has no slim waiter here)", runtime.GOARCH, runtime.GOARCH)
	}
	// The last signal comes at a random moment around the exec: many tries.
	for range 40 {
		cmd := deferChild(exec.Command(os.Args[0]), true)
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdout, cmd.Stderr = w, w
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		w.Close()
		br := bufio.NewReader(r)
		var said strings.Builder
		for {
			line, err := br.ReadString('\n')
			said.WriteString(line)
			if err != nil || line == "primed\n" {
				break
			}
		}
		time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond)
		cmd.Process.Signal(syscall.SIGUSR1)
		rest, _ := io.ReadAll(br)
		said.Write(rest)
		r.Close()
		err = cmd.Wait()
		if err != nil || !strings.Contains(said.String(), "delivered after the exec") {
			t.Fatalf("%v\n%s", err, said.String())
		}
	}
}

// TestUserSignalsSurviveWaiterExecOnARM runs the deferral under qemu-user
// for the other arches cimg-run ships for (each has assembly of its own),
// up to the exec: that needs binfmt_misc, and the kernel part is the same.
func TestUserSignalsSurviveWaiterExecOnARM(t *testing.T) {
	if os.Getenv("CIMG_SIGDEFER") != "" || runtime.GOARCH != "amd64" {
		t.Skip("run from the amd64 test binary")
	}
	dir := t.TempDir()
	for _, arch := range []struct{ goarch, qemu string }{{"arm64", "qemu-aarch64-static"}, {"arm", "qemu-arm-static"}} {
		qemu, err := exec.LookPath(arch.qemu)
		if err != nil {
			t.Fatalf("%s is not installed (make test installs it: qemu-user-static)", arch.qemu)
		}
		bin := filepath.Join(dir, "launcher.test."+arch.goarch)
		build := exec.Command("go", "test", "-c", "-o", bin, ".")
		build.Env = append(os.Environ(), "GOARCH="+arch.goarch, "GOARM=7", "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("build the %s test binary: %v\n%s", arch.goarch, err, out)
		}
		out, err := deferChild(exec.Command(qemu, bin), false).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "primed") {
			t.Errorf("%s: %v\n%s", arch.goarch, err, out)
		}
	}
}

// deferChild makes cmd (the test binary, or qemu running one) the child
// that defers and sends SIGUSR1 (deferAndExec).
func deferChild(cmd *exec.Cmd, exec bool) *exec.Cmd {
	cmd.Args = append(cmd.Args, "-test.run=^TestUserSignalsSurviveWaiterExec$")
	cmd.Env = append(os.Environ(), "CIMG_SIGDEFER=defer", "CIMG_SIGDEFER_EXEC=no")
	if exec {
		cmd.Env[len(cmd.Env)-1] = "CIMG_SIGDEFER_EXEC=yes"
	}
	return cmd
}

// deferAndExec is the child: as becomeWaiter, it blocks SIGUSR1 on the
// thread that will exec and defers it; then every thread sends it in
// turn, a few hundred times over, while the runtime is asked for it (so
// without the deferral it takes them in). The runtime must get none, and
// one must be pending; a thread primed must block both signals. Then it
// settles and execs itself as takeAfterExec, while the test sends one
// more SIGUSR1 at a random moment around that.
func deferAndExec(execAfter bool) {
	fail := func(f string, a ...any) { fmt.Printf(f+"\n", a...); os.Exit(1) }
	runtime.LockOSThread()
	var usr1 unix.Sigset_t
	usr1.Val[0] = 1 << (uint(syscall.SIGUSR1) - 1)
	if err := unix.PthreadSigmask(unix.SIG_BLOCK, &usr1, nil); err != nil {
		fail("block: %v", err)
	}
	// Asked for as cimg-run asks: the runtime's signal thread then has
	// both unblocked: a thread to prime (without it, the first settle
	// never ended, and cimg-run never became the waiter).
	taken := make(chan os.Signal, 1)
	signal.Notify(taken, syscall.SIGUSR1, syscall.SIGUSR2)
	d, err := deferSignals()
	if err != nil {
		fail("defer: %v", err)
	}
	// Senders on threads of their own, and some threads merely busy, so
	// the kernel has many to choose from.
	done := make(chan struct{})
	for i := range 8 {
		go func() {
			runtime.LockOSThread()
			for j := range 50 {
				if i%2 == 0 {
					syscall.Kill(os.Getpid(), syscall.SIGUSR1)
				}
				if j%5 == 0 {
					time.Sleep(time.Millisecond)
				}
			}
			done <- struct{}{}
		}()
	}
	for range 8 {
		<-done
	}
	select {
	case <-taken:
		fail("the Go runtime took in a deferred SIGUSR1")
	case <-time.After(50 * time.Millisecond):
	}
	var pending [2]uint32 // a 64-bit sigset, as the kernel writes it on every arch
	if _, _, errno := syscall.RawSyscall(unix.SYS_RT_SIGPENDING, uintptr(unsafe.Pointer(&pending)), 8, 0); errno != 0 {
		fail("rt_sigpending: %v", errno)
	}
	if pending[0]&(1<<(uint(syscall.SIGUSR1)-1)) == 0 {
		fail("no SIGUSR1 pending after deferral: lost (%08x)", pending[0])
	}
	// Taken here (blocked on this thread), so that the last one is alone.
	var zero unix.Timespec
	if _, _, errno := syscall.RawSyscall6(unix.SYS_RT_SIGTIMEDWAIT, uintptr(unsafe.Pointer(&usr1)), 0, uintptr(unsafe.Pointer(&zero)), 8, 0, 0); errno != 0 {
		fail("rt_sigtimedwait: %v", errno)
	}
	fmt.Println("pending after deferral")
	primed := make(chan error)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread goes with its mask
		var mask unix.Sigset_t
		unix.PthreadSigmask(unix.SIG_BLOCK, nil, &mask)
		if mask.Val[0]&(1<<(uint(syscall.SIGUSR2)-1)) != 0 {
			primed <- fmt.Errorf("SIGUSR2 blocked before priming")
			return
		}
		unix.Tgkill(os.Getpid(), unix.Gettid(), primeSignal)
		unix.PthreadSigmask(unix.SIG_BLOCK, nil, &mask)
		if mask.Val[0]&deferredMask != deferredMask {
			primed <- fmt.Errorf("after priming, the thread's mask is %x", mask.Val[0])
			return
		}
		primed <- nil
	}()
	if err := <-primed; err != nil {
		fail("%v", err)
	}
	fmt.Println("primed")
	if !execAfter {
		os.Exit(0)
	}
	tasks, err := os.Open("/proc/self/task")
	if err != nil {
		fail("%v", err)
	}
	if err := d.settle(tasks, 2*time.Second); err != nil {
		fail("settle: %v", err)
	}
	env := []string{"CIMG_SIGDEFER=after-exec"}
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "CIMG_SIGDEFER") {
			env = append(env, e)
		}
	}
	err = syscall.Exec("/proc/self/exe", []string{os.Args[0], "-test.run=^TestUserSignalsSurviveWaiterExec$"}, env)
	fail("exec: %v", err)
}

// takeAfterExec is the program the child execs, as the slim waiter: it
// asks for SIGUSR1, which must then arrive at once (or, sent later than
// the exec, a moment later).
func takeAfterExec() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGUSR1)
	select {
	case <-c:
		fmt.Println("delivered after the exec")
		os.Exit(0)
	case <-time.After(10 * time.Second):
		fmt.Println("no SIGUSR1 after the exec: lost in it")
		os.Exit(1)
	}
}
