package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"cimg.dev/cimg/internal/cgroup"
	"cimg.dev/cimg/internal/instance"
)

// state is what cimg-oci keeps of a container under --root/ID: the OCI
// state, and what delete and exec need later. The status is not trusted
// from the file: it is derived from the process (status).
type state struct {
	specs.State
	PidStart uint64            `json:"pidStart,omitempty"` // the process's start time: with the pid, it names one process for good
	Cgroup   map[string]string `json:"cgroup,omitempty"`   // controller → directory
	Created  time.Time         `json:"created"`
	Image    string            `json:"image,omitempty"` // org.cimg.image, when the root came from a .cimg
	Unit     string            `json:"unit,omitempty"`  // systemd's transient scope for it (--systemd-cgroup under systemd)
}

const (
	stateFile  = "state.json"
	configFile = "config.json" // the config as created: the bundle may change after
	fifoName   = "exec.fifo"
)

func validID(id string) error {
	if id == "" || id == "." || id == ".." || strings.ContainsAny(id, "/\x00") || len(id) > 1024 {
		return fmt.Errorf("container id %q: not a valid id", id)
	}
	return nil
}

// writeAtomic replaces dir/name crash-safely (temp file, fsync, rename,
// fsync of the directory): a power cut leaves the old state or the new,
// never half of one.
func writeAtomic(dir, name string, data []byte) error {
	return instance.WriteFileAtomic(dir, name, data)
}

func (g *globals) dir(id string) string { return filepath.Join(g.root, id) }

func (g *globals) save(st *state) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return writeAtomic(g.dir(st.ID), stateFile, b)
}

var errNotExist = errors.New("container does not exist")

func (g *globals) load(id string) (*state, error) {
	if err := validID(id); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(g.dir(id), stateFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("container %s: %w", id, errNotExist)
	}
	if err != nil {
		return nil, err
	}
	st := &state{}
	if err := json.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("container %s: state: %w", id, err)
	}
	st.Status = g.status(st)
	return st, nil
}

func (g *globals) config(id string) (*specs.Spec, error) {
	b, err := os.ReadFile(filepath.Join(g.dir(id), configFile))
	if err != nil {
		return nil, err
	}
	s := &specs.Spec{}
	return s, json.Unmarshal(b, s)
}

// hooks reads only the hooks of the config as created, for start and
// delete: decoding the whole config cost each of them about a tenth of
// its CPU (encoding/json builds its view of every type it meets).
func (g *globals) hooks(id string) (*specs.Hooks, error) {
	b, err := os.ReadFile(filepath.Join(g.dir(id), configFile))
	if err != nil {
		return nil, err
	}
	var c struct {
		Hooks *specs.Hooks `json:"hooks"`
	}
	return c.Hooks, json.Unmarshal(b, &c)
}

// status: creating until create recorded the process; then created while
// it waits on the exec fifo, running once start took the fifo away (paused
// while its cgroup is frozen), and stopped once that very process (pid and
// start time) is gone or a zombie.
func (g *globals) status(st *state) specs.ContainerState {
	if st.Pid == 0 {
		return specs.StateCreating
	}
	start, zombie, err := procStat(st.Pid)
	if err != nil || start != st.PidStart || zombie {
		return specs.StateStopped
	}
	if _, err := os.Lstat(filepath.Join(g.dir(st.ID), fifoName)); err == nil {
		return specs.StateCreated
	}
	if cgroup.Frozen(st.cgroupV2(), st.Cgroup) {
		return statePaused
	}
	return specs.StateRunning
}

// procStat reads a process's start time (field 22) and whether it is a
// zombie (field 3) from /proc/PID/stat.
func procStat(pid int) (uint64, bool, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')') // the command may hold spaces and parentheses
	if i < 0 {
		return 0, false, errors.New("bad /proc stat")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0, false, errors.New("bad /proc stat")
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	return start, f[0] == "Z" || f[0] == "X", err
}

// alive reports whether the container's process (pid and start) runs.
func alive(st *state) bool {
	start, zombie, err := procStat(st.Pid)
	return err == nil && start == st.PidStart && !zombie
}

// signalProcess signals the container's process through a pidfd, so a
// reused pid is never signalled. A process caught between its exit and
// its reaping makes pidfd_open fail with EINVAL (its pid has no task
// left), not ESRCH: that is a process gone too, so callers see ESRCH.
func signalProcess(st *state, sig unix.Signal) error {
	fd, err := unix.PidfdOpen(st.Pid, 0)
	if err == unix.EINVAL {
		err = unix.ESRCH
	}
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if !alive(st) {
		return unix.ESRCH
	}
	return unix.PidfdSendSignal(fd, sig, nil, 0)
}

// killAndWait SIGKILLs the container's process and waits, up to 5 s,
// for it to end: its pidfd turns readable when it exits (a process we
// did not fork too), so the wait is as long as the dying, not a polling
// period's multiple (10 ms sleeps cost delete about 8 ms a time).
func killAndWait(st *state) {
	fd, err := unix.PidfdOpen(st.Pid, 0)
	if err != nil {
		return
	}
	defer unix.Close(fd)
	if !alive(st) { // the pid names another process now, or a zombie
		return
	}
	unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
	if cgroup.Frozen(st.cgroupV2(), st.Cgroup) {
		cgroup.Freeze(st.cgroupV2(), st.Cgroup, false) // a frozen process takes its SIGKILL once thawed
	}
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		if n, err := unix.Poll(fds, int(time.Until(deadline).Milliseconds())+1); n > 0 || (err != nil && err != unix.EINTR) {
			return
		}
	}
}

// cgroupV2 reports whether the container's cgroup is one cgroup v2
// directory (recorded under the empty controller name).
func (s *state) cgroupV2() bool {
	_, ok := s.Cgroup[""]
	return ok
}
