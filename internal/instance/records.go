package instance

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"cimg.dev/cimg/internal/cgroup"
)

// Record is an instance as a command other than its supervisor sees it.
type Record struct {
	State      State
	Exit       *Exit // nil while it runs
	Supervisor int   // the live supervisor's pid (the lock's holder), 0 once it is gone
	dir        string
	unitApp    bool // a systemd unit's app (no supervisor of ours), alive
}

// Running reports whether the supervisor lives (the app may be starting),
// or, for an app handed to systemd, the app itself.
func (r *Record) Running() bool { return r.Supervisor != 0 || r.unitApp }

// Status is the instance's state in words: starting, running, exited N,
// killed by SIGNAL, OOM-killed, or lost.
func (r *Record) Status() string {
	switch {
	case r.Running() && r.State.Pid == 0:
		return "starting"
	case r.Running():
		return "running"
	case r.Exit == nil:
		return "lost"
	case r.Exit.Lost:
		return "lost (supervisor killed)"
	case r.Exit.OOM:
		return "OOM-killed"
	case r.Exit.Unknown:
		return "ended (systemd: " + r.Exit.Result + ")"
	case r.Exit.Signal != "":
		return "killed by " + r.Exit.Signal
	}
	return fmt.Sprintf("exited %d", r.Exit.Code)
}

// Plan is the launch plan the instance's app was started with, as its
// launcher recorded it (JSON).
func (r *Record) Plan() ([]byte, error) {
	b, err := os.ReadFile(filepath.Join(r.dir, planFile))
	if err != nil {
		return nil, fmt.Errorf("instance %s: its recorded configuration: %w", r.State.Name, err)
	}
	return b, nil
}

// Dir is the instance's directory.
func (r *Record) Dir() string { return r.dir }

// read reads the instance in dir. The lock is asked first: an exit record
// read after it is never missed (the supervisor writes it before it lets
// go of the lock).
func read(dir string) (*Record, error) {
	r := &Record{dir: dir}
	var err error
	if r.Supervisor, err = holder(dir); err != nil {
		return nil, err
	}
	if b, err := os.ReadFile(filepath.Join(dir, exitFile)); err == nil {
		r.Exit = new(Exit)
		if err := json.Unmarshal(b, r.Exit); err != nil {
			return nil, fmt.Errorf("%s/%s: %w", dir, exitFile, err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &r.State); err != nil {
		return nil, fmt.Errorf("%s/%s: %w", dir, stateFile, err)
	}
	if r.Supervisor != 0 && r.Exit != nil {
		r.Exit = nil // a new supervisor, not yet told of the old record's removal
	}
	if r.Supervisor == 0 && r.Exit == nil && r.State.Unit != "" && r.State.Pid != 0 {
		// Handed to systemd: alive while the process with the recorded pid
		// has the recorded start time.
		st, err := ProcStart(r.State.Pid)
		r.unitApp = err == nil && st == r.State.PidStart
	}
	return r, nil
}

// UnitExited records the end of a systemd unit's app, as systemd reports
// it to the unit's ExecStopPost= ($EXIT_CODE, $EXIT_STATUS,
// $SERVICE_RESULT), with an OOM kill read from the app's cgroup where it
// is still there.
func UnitExited(stateDir, name, exitCode, exitStatus, result string) (*Exit, error) {
	r, err := Get(stateDir, name)
	if err != nil {
		return nil, err
	}
	if r.State.Unit == "" {
		return nil, fmt.Errorf("instance %s is not a systemd unit's", name)
	}
	if r.Running() {
		return nil, fmt.Errorf("instance %s still runs (pid %d)", name, r.State.Pid)
	}
	e := Exit{Finished: time.Now(), OOM: result == "oom-kill" || oomKilled(r.State), Result: result}
	switch exitCode {
	case "":
		// systemd knows no status of the app (it never saw it end).
		e.Code, e.Unknown = 255, true
	case "killed", "dumped":
		e.Signal = "SIG" + exitStatus
		if n := unix.SignalNum(e.Signal); n != 0 {
			e.Code = 128 + int(n)
		}
	default:
		e.Code, _ = strconv.Atoi(exitStatus)
	}
	b, _ := json.Marshal(e)
	d, err := os.Open(r.dir)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return &e, writeAtomic(int(d.Fd()), exitFile, b)
}

// oomKilled reports an OOM kill of the app. Its own cgroup is usually
// gone by the time the unit's ExecStopPost= runs (systemd trims it), so
// the unit's count, which includes its children's (v1 and v2 alike),
// is compared with the count recorded when the app started.
func oomKilled(s State) bool {
	dir := s.Cgroup[""]
	if !s.CgroupV2 {
		dir = s.Cgroup["memory"]
	}
	if n := OOMKills(dir, s.CgroupV2); n > 0 {
		return true
	}
	return OOMKills(filepath.Dir(dir), s.CgroupV2) > s.UnitOOMKills
}

// OOMKills is the OOM kill count of the memory cgroup dir and the
// cgroups below it (-1 if it cannot be read).
func OOMKills(dir string, v2 bool) int {
	file := "memory.oom_control"
	if v2 {
		file = "memory.events"
	}
	b, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "oom_kill "); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return -1
}

// reap settles an instance whose supervisor is gone without an exit
// record (it was SIGKILLed, or the machine lost power mid-write): its
// cgroup goes, and the record says it was lost. Called under the root
// lock, for a directory whose lock nobody holds.
func reap(dir string) error {
	r, err := read(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil // a half-made directory: removed by the caller
		}
		return err
	}
	if r.Running() || r.Exit != nil {
		return nil
	}
	e := Exit{Lost: true, Code: 137, Finished: time.Now()}
	// What cannot be removed is said in the record, once: the instance is
	// settled either way, and ps does not retry (and wait) on every call.
	if err := cgroup.RemoveLeft(r.State.CgroupID, r.State.CgroupV2, r.State.Cgroup); err != nil {
		e.Leftover = "its cgroup could not be removed: " + err.Error()
	}
	b, _ := json.Marshal(e)
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return writeAtomic(int(d.Fd()), exitFile, b)
}

// List returns every instance under stateDir, sorted by name, settling
// lost ones on the way (their cgroups go, their record stays for ps -a)
// and removing directories of starts that never completed.
func List(stateDir string) ([]*Record, error) {
	root := Root(stateDir)
	entries, err := os.ReadDir(root)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []*Record
	var lost []string
	for _, e := range entries {
		name := e.Name()
		if !e.IsDir() {
			continue
		}
		dir := filepath.Join(root, name)
		if strings.HasPrefix(name, ".new-") {
			if pid, _ := holder(dir); pid == 0 {
				lost = append(lost, dir)
			}
			continue
		}
		r, err := read(dir)
		if err != nil {
			continue // being replaced right now
		}
		if !r.Running() && r.Exit == nil {
			lost = append(lost, dir)
		}
		out = append(out, r)
	}
	if len(lost) > 0 {
		// A record that cannot be settled stays as it is: it must not hide
		// the others.
		settle(root, lost)
		for i, r := range out {
			if !r.Running() && r.Exit == nil {
				if nr, err := read(r.dir); err == nil {
					out[i] = nr
				}
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].State.Name < out[j].State.Name })
	return out, nil
}

// settle reaps lost instances and removes abandoned half-made ones, under
// the root lock (a Create of the same name waits).
func settle(root string, dirs []string) error {
	unlock, err := lockRoot(root)
	if err != nil {
		return err
	}
	defer unlock()
	var errs []error
	for _, dir := range dirs {
		if pid, _ := holder(dir); pid != 0 {
			continue // taken over meanwhile
		}
		if strings.HasPrefix(filepath.Base(dir), ".new-") {
			errs = append(errs, os.RemoveAll(dir))
			continue
		}
		errs = append(errs, reap(dir))
	}
	return errors.Join(errs...)
}

// Get returns instance name, settled like List's.
func Get(stateDir, name string) (*Record, error) {
	if err := CheckName(name); err != nil {
		return nil, err
	}
	dir := filepath.Join(Root(stateDir), name)
	r, err := read(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, &ErrNotFound{Name: name, Dir: Root(stateDir)}
	}
	if err != nil {
		return nil, err
	}
	if !r.Running() && r.Exit == nil {
		settle(Root(stateDir), []string{dir}) // a record that cannot be settled is shown as it is
		return read(dir)
	}
	return r, nil
}

// Remove deletes the record of an instance that has ended.
func Remove(stateDir, name string) error {
	r, err := Get(stateDir, name)
	if err != nil {
		return err
	}
	if r.Running() {
		return fmt.Errorf("instance %s is running: stop it first (cimg-run stop %s)", name, name)
	}
	root := Root(stateDir)
	unlock, err := lockRoot(root)
	if err != nil {
		return err
	}
	defer unlock()
	if pid, _ := holder(r.dir); pid != 0 {
		return fmt.Errorf("instance %s was started again meanwhile", name)
	}
	return os.RemoveAll(r.dir)
}
