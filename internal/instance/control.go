package instance

import (
	"fmt"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"cimg.dev/cimg/internal/cgroup"
)

// AppPidfd opens a pidfd of the running instance's app. The pid alone is
// not trusted: the process must still have the start time recorded with
// it, checked after the pidfd was opened (a pid reused in between would
// have a later start time).
func (r *Record) AppPidfd() (int, error) {
	if !r.Running() || r.State.Pid == 0 {
		return -1, fmt.Errorf("instance %s is %s, not running", r.State.Name, r.Status())
	}
	fd, err := unix.PidfdOpen(r.State.Pid, 0)
	if err != nil {
		return -1, fmt.Errorf("instance %s: its app (pid %d) is gone: %w", r.State.Name, r.State.Pid, err)
	}
	if st, err := ProcStart(r.State.Pid); err != nil || st != r.State.PidStart {
		unix.Close(fd)
		return -1, fmt.Errorf("instance %s: its app (pid %d) is gone", r.State.Name, r.State.Pid)
	}
	return fd, nil
}

// supervisorPidfd opens a pidfd of the supervisor; the lock must still be
// held by that pid once the pidfd is open.
func (r *Record) supervisorPidfd() (int, error) {
	fd, err := unix.PidfdOpen(r.Supervisor, 0)
	if err != nil {
		return -1, err
	}
	if pid, _ := holder(r.dir); pid != r.Supervisor {
		unix.Close(fd)
		return -1, fmt.Errorf("instance %s: supervisor %d is gone", r.State.Name, r.Supervisor)
	}
	return fd, nil
}

// Kill sends sig to the instance's app (as docker kill does to the main
// process; in a private pid namespace, SIGKILL of it ends them all).
func Kill(stateDir, name string, sig syscall.Signal) error {
	r, err := Get(stateDir, name)
	if err != nil {
		return err
	}
	if r.Running() && r.State.Pid == 0 {
		// Still starting: the supervisor relays what it forwards; SIGKILL
		// of it ends the app by the parent-death signal.
		fd, err := r.supervisorPidfd()
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.PidfdSendSignal(fd, sig, nil, 0)
	}
	fd, err := r.AppPidfd()
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.PidfdSendSignal(fd, sig, nil, 0); err != nil {
		return fmt.Errorf("instance %s: signal %v: %w", name, sig, err)
	}
	return nil
}

// Stop ends the instance: SIGTERM to its app, then, timeout later,
// SIGKILL to everything in its cgroup; it returns once the supervisor has
// cleaned up and recorded the end (the returned record).
func Stop(stateDir, name string, timeout time.Duration) (*Record, error) {
	r, err := Get(stateDir, name)
	if err != nil {
		return nil, err
	}
	if !r.Running() {
		return r, nil
	}
	sup, err := r.supervisorPidfd()
	if err != nil {
		return Get(stateDir, name) // it ended meanwhile
	}
	defer unix.Close(sup)
	// An error here means the app is gone already and the supervisor is
	// finishing: waiting for it is what is left to do.
	Kill(stateDir, name, syscall.SIGTERM)
	if !waitExit(sup, timeout) {
		if r, err = Get(stateDir, name); err == nil && r.Running() {
			if r.State.Pid == 0 {
				unix.PidfdSendSignal(sup, syscall.SIGKILL, nil, 0)
			}
			cgroup.Signal(r.State.CgroupV2, r.State.Cgroup, syscall.SIGKILL)
		}
		if !waitExit(sup, 30*time.Second) {
			return nil, fmt.Errorf("instance %s: its supervisor (pid %d) did not finish 30 s after SIGKILL of the app's cgroup", name, r.Supervisor)
		}
	}
	return Get(stateDir, name)
}

// waitExit waits up to d for the process of pidfd to end.
func waitExit(pidfd int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	for {
		left := time.Until(deadline)
		if left < 0 {
			left = 0
		}
		n, err := unix.Poll(fds, int(left.Milliseconds()))
		if err == unix.EINTR {
			continue
		}
		return n > 0
	}
}

// StopApp is a unit's ExecStop=: SIGTERM to the app, and SIGKILL to its
// cgroup timeout later if it is still there, as cimg-run stop does.
// Without it, systemd 252 follows its SIGTERM to a main process it did
// not fork with SIGKILL at once, leaving the app no time to finish; and
// with an ExecStop= that only waits, an app deaf to SIGTERM would take
// TimeoutStopSec= twice (ExecStop=, then systemd's own SIGTERM round).
func StopApp(stateDir, name string, timeout time.Duration) error {
	r, err := Get(stateDir, name)
	if err != nil {
		return err
	}
	if !r.Running() {
		return nil
	}
	fd, err := r.AppPidfd()
	if err != nil {
		return nil // ended meanwhile
	}
	defer unix.Close(fd)
	if err := unix.PidfdSendSignal(fd, syscall.SIGTERM, nil, 0); err != nil {
		return nil
	}
	if !waitExit(fd, timeout) {
		cgroup.Signal(r.State.CgroupV2, r.State.Cgroup, syscall.SIGKILL)
		waitExit(fd, 10*time.Second)
	}
	return nil
}
