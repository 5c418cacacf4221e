// Package instance is the record of a named app instance: one directory
// per instance under STATE/instances, a lock that the instance's
// supervisor holds for as long as it lives, and files replaced atomically.
// It is all that ps, stop, kill, exec, inspect and logs read: there is no
// daemon to ask.
//
// Liveness is the kernel's word, never a pid guess: the supervisor holds
// a POSIX write lock on NAME/lock (fcntl F_SETLK). Such a lock is not
// inherited by fork, survives execve (the slim waiter keeps it), and goes
// when the process dies however it dies; F_GETLK tells anyone else
// whether it is held and by which pid. A directory whose lock nobody
// holds and that has no exit record belongs to a supervisor that was
// killed: the next command that looks records it as lost and removes
// what it left (its cgroup).
package instance

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The files of an instance directory.
const (
	lockFile  = "lock"       // the supervisor's POSIX lock
	stateFile = "state.json" // State, once the app runs
	planFile  = "plan.json"  // the effective launch plan, which exec re-creates (apart: ps need not parse it)
	exitFile  = "exit.json"  // Exit, once it is gone
	logFile   = "log"        // a detached instance's output (and log.1 before it)
)

// State is what the supervisor records once the app has started.
type State struct {
	Name       string            `json:"name"`
	App        string            `json:"app"`
	Version    string            `json:"version"`
	Image      string            `json:"image"`
	RootHash   string            `json:"root_hash"`
	Pid        int               `json:"pid"`       // the app's pid on the host
	PidStart   uint64            `json:"pid_start"` // its start time (/proc/PID/stat field 22): pid and start time name one process for good
	Supervisor int               `json:"supervisor_pid"`
	Started    time.Time         `json:"started"`
	CgroupID   string            `json:"cgroup_id"`
	CgroupV2   bool              `json:"cgroup_v2"`
	Cgroup     map[string]string `json:"cgroup"` // controller ("" on v2) → directory
	Detached   bool              `json:"detached"`
	Unit       string            `json:"unit,omitempty"` // the systemd unit supervising the app (no launcher stays)
	// UnitOOMKills: the unit's memory cgroup's OOM kill count when the app
	// started (its ExecStopPost= compares).
	UnitOOMKills int      `json:"unit_oom_kills,omitempty"`
	Command      []string `json:"command"` // the cimg-run command line that started it (for a unit)
}

// Exit is how the instance ended.
type Exit struct {
	Code     int       `json:"code"`               // the launcher's exit status (128+N for signal N)
	Signal   string    `json:"signal,omitempty"`   // the signal that killed the app
	OOM      bool      `json:"oom,omitempty"`      // the kernel's OOM killer struck in its cgroup
	Lost     bool      `json:"lost,omitempty"`     // the supervisor died (SIGKILL) before it could record the end
	Leftover string    `json:"leftover,omitempty"` // what of a lost instance could not be removed
	Result   string    `json:"result,omitempty"`   // a unit's app: systemd's SERVICE_RESULT
	Unknown  bool      `json:"unknown,omitempty"`  // a unit's app whose status systemd did not know
	Finished time.Time `json:"finished"`
}

// ErrNameInUse: another live instance has the name.
type ErrNameInUse struct {
	Name string
	Pid  int
}

func (e *ErrNameInUse) Error() string {
	return fmt.Sprintf("instance name %q is in use by a running instance (supervisor pid %d): stop it (cimg-run stop %s) or choose another --name", e.Name, e.Pid, e.Name)
}

// ErrNotFound: no instance has the name.
type ErrNotFound struct{ Name, Dir string }

func (e *ErrNotFound) Error() string {
	return fmt.Sprintf("no instance %q in %s (cimg-run ps -a lists them)", e.Name, e.Dir)
}

// validName: 1-63 of [A-Za-z0-9_.-], the first alphanumeric. (Not a
// regexp: every cimg-run start, the slim waiter's too, would compile it.)
func validName(name string) bool {
	if len(name) == 0 || len(name) > 63 {
		return false
	}
	for i, r := range name {
		alnum := r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z'
		if !alnum && (i == 0 || r != '_' && r != '.' && r != '-') {
			return false
		}
	}
	return true
}

// CheckName refuses a name that could not be a directory of its own.
func CheckName(name string) error {
	if !validName(name) {
		return fmt.Errorf("instance name %q: use 1-63 letters, digits, '_', '.' or '-', starting with a letter or digit", name)
	}
	return nil
}

// DefaultName is the app's name and a short random suffix.
func DefaultName(app string) string {
	var b [3]byte
	rand.Read(b[:])
	app = strings.Map(func(r rune) rune {
		if r == '_' || r == '.' || r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' {
			return r
		}
		return '-'
	}, app)
	if len(app) > 50 {
		app = app[:50]
	}
	if app == "" || !validName(app+"-x") {
		app = "app"
	}
	return app + "-" + hex.EncodeToString(b[:])
}

// Root is the directory holding a state directory's instances.
func Root(stateDir string) string { return filepath.Join(stateDir, "instances") }

// openRoot makes sure STATE/instances exists, is root's, 0700 and not a
// link, and returns it.
func openRoot(stateDir string) (string, error) {
	root := Root(stateDir)
	// The state directory itself is made as the launch makes it (root's,
	// 0700), and checked by the launch.
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return "", fmt.Errorf("state directory %s: %w", stateDir, err)
	}
	if err := os.Mkdir(root, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("instance directory %s: %w", root, err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(root, &st); err != nil {
		return "", fmt.Errorf("instance directory %s: %w", root, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR || st.Uid != 0 || st.Mode&0o077 != 0 {
		return "", fmt.Errorf("instance directory %s must be a directory owned by root with mode 0700 (it records what runs as root): fix it or remove it", root)
	}
	return root, nil
}

// lockRoot takes STATE/instances/.lock: names are claimed and lost
// instances cleaned under it, one command at a time.
func lockRoot(root string) (func(), error) {
	fd, err := unix.Open(filepath.Join(root, ".lock"), unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("instance lock: %w", err)
	}
	for {
		err = unix.Flock(fd, unix.LOCK_EX)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("instance lock: %w", err)
	}
	return func() { unix.Close(fd) }, nil
}

// holder is the pid of the process holding dir's lock, 0 if none does.
func holder(dir string) (int, error) {
	fd, err := unix.Open(filepath.Join(dir, lockFile), unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err == unix.ENOENT {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("instance lock %s: %w", dir, err)
	}
	defer unix.Close(fd)
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0}
	if err := unix.FcntlFlock(uintptr(fd), unix.F_GETLK, &lk); err != nil {
		return 0, fmt.Errorf("instance lock %s: %w", dir, err)
	}
	if lk.Type == unix.F_UNLCK {
		return 0, nil
	}
	return int(lk.Pid), nil
}

// WriteFileAtomic replaces dir/name as writeAtomic does (cimg-oci's
// state files).
func WriteFileAtomic(dir, name string, data []byte) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return writeAtomic(fd, name, data)
}

// writeAtomic replaces name in the directory dirfd: a temp file, fsync,
// rename (the commit point), fsync of the directory.
func writeAtomic(dirfd int, name string, data []byte) error {
	tmp := "." + name + ".tmp"
	fd, err := unix.Openat(dirfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	for len(data) > 0 && err == nil {
		var n int
		if n, err = unix.Write(fd, data); err == nil {
			data = data[n:]
		}
	}
	if err == nil {
		err = unix.Fsync(fd)
	}
	unix.Close(fd)
	if err == nil {
		err = unix.Renameat(dirfd, tmp, dirfd, name)
	}
	if err == nil {
		err = unix.Fsync(dirfd)
	}
	if err != nil {
		unix.Unlinkat(dirfd, tmp, 0)
	}
	return err
}

// ProcStart is field 22 of /proc/PID/stat, the process's start time in
// clock ticks since boot: with the pid, it names one process for good.
func ProcStart(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces and parentheses: count
	// fields after its last ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	return strconv.ParseUint(f[19], 10, 64)
}
