package main

import (
	"bufio"
	"errors"
	"os/exec"
	"syscall"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// TestSignalProcessReapedLeader: a container's process that has been
// reaped while another member of its session lives leaves its pid
// number allocated with no task; Debian 12's kernel (6.1) then fails
// pidfd_open with EINVAL, where newer kernels say ESRCH. signalProcess
// must report such a process as gone (ESRCH) on both, or `kill --all`
// fails on a container it has just killed (seen in TestCgroupV2InVM,
// which also runs this test inside the 6.1 VM).
func TestSignalProcessReapedLeader(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Fatalf("sh not found: %v", err)
	}
	// The shell prints once it has forked the background sleep, so the
	// session has another member before the leader dies (otherwise the
	// pid number is freed with it and any kernel says ESRCH).
	c := exec.Command(sh, "-c", "sleep 100 & echo forked; sleep 100")
	c.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	out, err := c.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	pid := c.Process.Pid
	defer unix.Kill(-pid, unix.SIGKILL) // the session's other member
	if line, err := bufio.NewReader(out).ReadString('\n'); line != "forked\n" {
		t.Fatalf("shell did not fork its background sleep: %q %v", line, err)
	}
	start, _, err := procStat(pid)
	if err != nil {
		t.Fatal(err)
	}
	st := &state{State: specs.State{Pid: pid}, PidStart: start}
	if err := signalProcess(st, unix.SIGKILL); err != nil {
		t.Fatalf("signal the live leader: %v", err)
	}
	c.Wait()
	if err := signalProcess(st, unix.SIGTERM); !errors.Is(err, unix.ESRCH) {
		t.Fatalf("signal a reaped leader whose session lives: got %v, want ESRCH", err)
	}
}
