package main

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestExitStatusAndSignals(t *testing.T) {
	state := stateDir(t)
	img := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n")
	if res := runImage(t, cimgRunCmd(state, img, "--", "exit", "7")); res.code != 7 {
		t.Errorf("exit 7: got %d %s", res.code, res.stderr)
	}
	cmd, out := startSleeping(t, state, img)
	cmd.Process.Signal(syscall.SIGUSR1)
	if err := waitDeadline(cmd, 10*time.Second); err != nil {
		t.Fatalf("SIGUSR1 %v", err)
	}
	if !strings.Contains(out.String(), "got user defined signal 1") {
		t.Errorf("SIGUSR1 not forwarded: %q", out.String())
	}
}

// TestSlimWaiter: a launcher whose app outlives its first 100 ms turns
// into the slim waiter (same pid, a fresh process image), which still
// relays signals, reports the status and removes the cgroup — and whose
// death still takes the app with it.
func TestSlimWaiter(t *testing.T) {
	state := stateDir(t)
	img := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n[limits]\nmemory = \"32MiB\"\n")
	runExit0(t, state, img) // the cache mount
	before := counts(t)
	cmd, out := startSleeping(t, state, img)
	waitFor(t, func() bool { return isWaiter(cmd.Process.Pid) })
	cmd.Process.Signal(syscall.SIGUSR1)
	if err := waitDeadline(cmd, 10*time.Second); err != nil || !strings.Contains(out.String(), "got user defined signal 1") {
		t.Errorf("through the waiter: %v, %v, %q", err, cmd.ProcessState, out.String())
	}
	expectCounts(t, before, "after the waiter's app exited")

	cmd, _ = startSleeping(t, state, img)
	waitFor(t, func() bool { return isWaiter(cmd.Process.Pid) })
	procs, _ := os.ReadFile(fmt.Sprintf("/sys/fs/cgroup/memory/cimg/probe-%d/cgroup.procs", cmd.Process.Pid))
	app, err := strconv.Atoi(strings.TrimSpace(string(procs)))
	if err != nil {
		t.Fatalf("the app's pid from its cgroup: %q", procs)
	}
	cmd.Process.Kill()
	cmd.Wait()
	waitFor(t, func() bool { // gone, or a zombie waiting for the host's init
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", app))
		return err != nil || strings.Contains(string(b), ") Z ")
	})
	runExit0(t, state, img) // removes the stale cgroup
	expectCounts(t, before, "after the waiter was killed")
}

// TestSignalsAcrossWaiterExec sends SIGTERM around the moment the
// launcher replaces itself with the slim waiter. None may be lost (a lost
// one leaves the app running and cimg-run waiting for ever): each either
// reaches the app, or, in the few milliseconds before the new process
// can take it in (launcher/wait.go), ends cimg-run and the app with it;
// the next launch then removes what that one left. Every other app
// ignores SIGTERM: the stop timeout must still end it, so the deadline
// must cross the exec too.
func TestSignalsAcrossWaiterExec(t *testing.T) {
	state := stateDir(t)
	img := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n[limits]\npids = 16\n")
	runExit0(t, state, img) // the cache mount
	before := counts(t)
	lo, hi := waiterExecWindow(t, state, img)
	var graceful, timedOut, hard int
	for i := range 60 {
		mode := []string{"sleep", "deaf"}[i%2]
		cmd := cimgRunCmd(state, "--stop-timeout=300ms", img, "--", mode)
		out := startReady(t, cmd)
		time.Sleep(lo + time.Duration(rand.Int64N(int64(hi-lo))))
		cmd.Process.Signal(syscall.SIGTERM)
		if err := waitDeadline(cmd, 5*time.Second); err != nil {
			t.Errorf("launch %d (%s): SIGTERM %v (app said %q)", i, mode, err, out.String())
			continue
		}
		ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
		switch {
		case mode == "sleep" && ws.Exited() && ws.ExitStatus() == 0 && strings.Contains(out.String(), "got terminated"):
			graceful++
		case mode == "deaf" && ws.Exited() && ws.ExitStatus() == 128+int(syscall.SIGKILL):
			timedOut++
		case ws.Signaled() && ws.Signal() == syscall.SIGTERM:
			hard++
			procs := fmt.Sprintf("/sys/fs/cgroup/pids/cimg/probe-%d/cgroup.procs", cmd.Process.Pid)
			waitFor(t, func() bool { b, _ := os.ReadFile(procs); return len(b) == 0 })
		default:
			t.Errorf("launch %d (%s): %v, %q", i, mode, cmd.ProcessState, out.String())
		}
	}
	t.Logf("SIGTERM sent in %v–%v after the app said ready: %d reached the app, %d apps ignoring it were killed at the stop timeout, %d ended cimg-run",
		lo, hi, graceful, timedOut, hard)
	runExit0(t, state, img) // removes stale cgroups
	expectCounts(t, before, "after the signalled launches")
}

// TestUserSignalsAcrossWaiterExec sends SIGUSR1 around the moment the
// launcher replaces itself with the slim waiter. Unlike a stop signal, it
// may neither be lost nor end cimg-run: each one must reach the app (CI
// saw one taken in by the launcher's Go runtime just before the exec, and
// lost with it, leaving the app waiting for ever).
func TestUserSignalsAcrossWaiterExec(t *testing.T) {
	state := stateDir(t)
	img := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n")
	runExit0(t, state, img) // the cache mount
	before := counts(t)
	lo, hi := waiterExecWindow(t, state, img)
	for i := range 60 {
		cmd := cimgRunCmd(state, img, "--", "sleep")
		stderr := &bytes.Buffer{}
		cmd.Stderr = stderr
		out := startReady(t, cmd)
		time.Sleep(lo + time.Duration(rand.Int64N(int64(hi-lo))))
		cmd.Process.Signal(syscall.SIGUSR1)
		if err := waitDeadline(cmd, 5*time.Second); err != nil {
			t.Errorf("launch %d: SIGUSR1 %v (the app said %q) %s", i, err, out.String(), stderr)
		} else if !strings.Contains(out.String(), "got user defined signal 1") || stderr.Len() > 0 {
			t.Errorf("launch %d: %v, the app said %q, cimg-run %q", i, cmd.ProcessState, out.String(), stderr)
		}
	}
	expectCounts(t, before, "after the signalled launches")
}

// TestWaiterWaitsForStartingLaunches: while another launch in the same
// state directory builds its root (it holds byte 1 of
// STATE/images/.gc.lock shared, as this test does), a launch hands its app
// to the slim waiter only once that is over, or a second after the app
// started at the latest: the hand-over's exec would take CPU from the
// apps that are starting (launcher/wait.go, slimDue). Without the wait
// the hand-over comes 100 ms after the start.
func TestWaiterWaitsForStartingLaunches(t *testing.T) {
	state := stateDir(t)
	img := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n")
	runExit0(t, state, img) // the state directory and its cache lock
	before := counts(t)
	starting := func() (done func()) {
		fd, err := unix.Open(filepath.Join(state, "images", ".gc.lock"), unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		lk := unix.Flock_t{Type: unix.F_RDLCK, Start: 1, Len: 1}
		if err := unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &lk); err != nil {
			t.Fatalf("a launch's hold on the cache: %v", err)
		}
		return func() { unix.Close(fd) }
	}
	for _, throughout := range []bool{false, true} {
		done := starting()
		cmd := cimgRunCmd(state, img, "--", "sleep")
		startReady(t, cmd)
		ready := time.Now()
		time.Sleep(500 * time.Millisecond)
		if isWaiter(cmd.Process.Pid) {
			t.Errorf("the launch handed its app to the slim waiter within 500 ms, while another launch was starting")
		}
		if !throughout {
			done()
		}
		if !pollFor(10*time.Second, time.Millisecond, func() bool { return isWaiter(cmd.Process.Pid) }) {
			t.Errorf("no slim waiter 10 s after the app said ready (the other launch still starting: %v)", throughout)
		} else {
			t.Logf("the other launch still starting: %v; the slim waiter came %v after the app said ready", throughout, time.Since(ready))
		}
		if throughout {
			done()
		}
		// SIGUSR1, not SIGTERM, ends it: the waiter has just been seen,
		// and a stop signal in the exec's window ends cimg-run instead
		// (TestSignalsAcrossWaiterExec), leaving the cgroup to the next
		// launch.
		cmd.Process.Signal(syscall.SIGUSR1)
		if err := waitDeadline(cmd, 10*time.Second); err != nil {
			t.Fatalf("SIGUSR1: %v", err)
		}
	}
	expectCounts(t, before, "after the launches")
}

// waiterExecWindow returns when, after its app said "ready", a launch
// becomes the slim waiter: the earliest of five such moments less 10 ms,
// and the latest plus 2 ms (the exec follows a fixed poll of the app, so
// the moment varies little between launches). Timed from "ready", not
// from the start: a signal sent before the probe has asked for it is lost
// in the probe (its Go runtime drops SIGUSR1 and dies of SIGTERM), and
// under load a launch's start can take longer than that poll (CI saw one
// SIGUSR1 so lost with the window timed from the start).
func waiterExecWindow(t *testing.T, state, img string) (lo, hi time.Duration) {
	t.Helper()
	var at []time.Duration
	for range 5 {
		cmd := cimgRunCmd(state, img, "--", "sleep")
		stderr := &bytes.Buffer{}
		cmd.Stderr = stderr
		startReady(t, cmd)
		ready := time.Now()
		if !pollFor(10*time.Second, 100*time.Microsecond, func() bool { return isWaiter(cmd.Process.Pid) }) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("cimg-run did not become the slim waiter in 10 s: %s", stderr)
		}
		at = append(at, time.Since(ready))
		cmd.Process.Signal(syscall.SIGTERM)
		if err := waitDeadline(cmd, 10*time.Second); err != nil {
			t.Fatalf("the waiter, sent SIGTERM: %v", err)
		}
	}
	slices.Sort(at)
	t.Logf("the exec came %v–%v after the app said ready", at[0], at[len(at)-1])
	return max(at[0]-10*time.Millisecond, 0), at[len(at)-1] + 2*time.Millisecond
}

// waitDeadline waits for cmd, and kills it if it has not ended within d:
// a lost signal fails the test rather than hang it.
func waitDeadline(cmd *exec.Cmd, d time.Duration) error {
	var status []byte
	var waiter bool
	if endsWithin(cmd, d, func() {
		status, _ = os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
		waiter = isWaiter(cmd.Process.Pid)
	}) {
		return nil
	}
	return fmt.Errorf("lost: cimg-run (the slim waiter: %v) still ran %v later; it was killed\n%s", waiter, d,
		regexp.MustCompile(`(?m)^(Threads|Sig|Shd).*\n`).FindAll(status, -1))
}

// TestWaiterAsksForSignalsFirst: the slim waiter dies of a stop signal
// until package earlysig asks for them, so that package must be
// initialised the moment os/signal is (an import added to it, or a
// package name sorting before it, would move it later).
func TestWaiterAsksForSignalsFirst(t *testing.T) {
	cmd := exec.Command(cimgRun, "__cimg_wait__")
	cmd.Env = append(os.Environ(), "GODEBUG=inittrace=1")
	out, _ := cmd.CombinedOutput() // no app to wait for: it fails, after its inits
	var order []string
	for _, m := range regexp.MustCompile(`(?m)^init (\S+) @`).FindAllStringSubmatch(string(out), -1) {
		order = append(order, m[1])
	}
	i := slices.Index(order, "os/signal")
	if i < 0 || i+1 >= len(order) || order[i+1] != "cimg.dev/cimg/internal/earlysig" {
		t.Errorf("package initialisation order %v: want cimg.dev/cimg/internal/earlysig right after os/signal\n%s", order, out)
	}
}

// isWaiter says whether pid is cimg-run turned into its slim waiter.
func isWaiter(pid int) bool {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return strings.Contains(string(b), "__cimg_wait__")
}
