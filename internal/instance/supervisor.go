package instance

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Instance is the supervisor's side of an instance: the directory, held
// by fd, and the lock. Its fds are raw (not *os.File): a POSIX lock goes
// when its owner closes any fd of the file, so nothing may close them but
// the process's end.
type Instance struct {
	Name   string
	Dir    string
	dirfd  int
	lockfd int
	logR   int // detached: the read end of the app's output pipe, -1 otherwise

	started  bool
	pending  string // a standby instance's root: its name is not claimed yet
	replaces int    // the supervisor that held the name when a standby began
	// Ready, when set, is told "ok NAME" once the app runs (a detached start's
	// parent waits for it) and closed.
	Ready *os.File
	// Command is the command line that started the instance, recorded.
	Command []string
}

// HasStarted reports whether the app ran (Started was called).
func (in *Instance) HasStarted() bool { return in.started }

// Create claims name under stateDir for the calling process, its
// supervisor: exactly one of two concurrent Creates of one name wins. A
// name whose instance has ended (or whose supervisor was killed) is taken
// over, its old record removed. The directory is complete when it
// appears: it is made under a temp name and renamed.
func Create(stateDir, name string) (*Instance, error) {
	return create(stateDir, name, false)
}

// CreateStandby makes instance name's directory, under its temp name
// only, for a supervisor that starts the next version of an app while
// the current one still runs under that name (update). The name is
// claimed by Started, once the app runs and the name's holder is gone.
func CreateStandby(stateDir, name string) (*Instance, error) {
	return create(stateDir, name, true)
}

func create(stateDir, name string, standby bool) (*Instance, error) {
	if err := CheckName(name); err != nil {
		return nil, err
	}
	root, err := openRoot(stateDir)
	if err != nil {
		return nil, err
	}
	unlock, err := lockRoot(root)
	if err != nil {
		return nil, err
	}
	defer unlock()
	dir := filepath.Join(root, name)
	if !standby {
		if err := free(dir, name); err != nil {
			return nil, err
		}
	}
	tmp, err := os.MkdirTemp(root, ".new-"+name+"-")
	if err != nil {
		return nil, fmt.Errorf("instance %s: %w", name, err)
	}
	in := &Instance{Name: name, Dir: dir, dirfd: -1, lockfd: -1, logR: -1}
	fail := func(err error) (*Instance, error) {
		in.close()
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("instance %s: %w", name, err)
	}
	if in.dirfd, err = unix.Open(tmp, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0); err != nil {
		return fail(err)
	}
	if in.lockfd, err = unix.Openat(in.dirfd, lockFile, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o600); err != nil {
		return fail(err)
	}
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0}
	if err := unix.FcntlFlock(uintptr(in.lockfd), unix.F_SETLK, &lk); err != nil {
		return fail(fmt.Errorf("lock: %w", err))
	}
	st, _ := json.Marshal(State{Name: name, Supervisor: os.Getpid(), Started: time.Now()})
	if err := writeAtomic(in.dirfd, stateFile, st); err != nil {
		return fail(err)
	}
	if standby {
		in.Dir, in.pending = tmp, root
		in.replaces, _ = holder(dir)
		return in, nil
	}
	// The commit point: the instance appears, complete and locked.
	if err := os.Rename(tmp, dir); err != nil {
		return fail(err)
	}
	syncDir(root)
	return in, nil
}

// free makes the name's directory free to take: an ended or lost
// instance's is removed (after its supervisor's leftovers); a running
// one's is refused. The caller holds the root lock.
func free(dir, name string) error {
	if pid, err := holder(dir); err != nil {
		return err
	} else if pid != 0 {
		return &ErrNameInUse{Name: name, Pid: pid}
	}
	if r, err := read(dir); err == nil && r.unitApp {
		return &ErrNameInUse{Name: name, Pid: r.State.Pid}
	}
	if _, err := os.Lstat(dir); err == nil {
		// Ended, or lost: whatever its supervisor left goes first.
		if err := reap(dir); err != nil {
			return err
		}
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("remove the ended instance %s: %w", dir, err)
		}
	}
	return nil
}

// claim takes the name for a standby instance: it waits (30 s at most)
// for the supervisor holding it to end (its app has ended: update stopped
// it), then renames the directory into place.
func (in *Instance) claim() error {
	dir := filepath.Join(in.pending, in.Name)
	deadline := time.Now().Add(30 * time.Second)
	for {
		unlock, err := lockRoot(in.pending)
		if err != nil {
			return err
		}
		err = free(dir, in.Name)
		if err == nil {
			err = os.Rename(in.Dir, dir)
			if err == nil {
				syncDir(in.pending)
				in.Dir, in.pending = dir, ""
			}
			unlock()
			return err
		}
		unlock()
		// Only the supervisor it replaces is waited for: another that
		// took the name meanwhile keeps it.
		var used *ErrNameInUse
		if !errors.As(err, &used) || used.Pid != in.replaces || time.Now().After(deadline) {
			return err
		}
		// Its supervisor is finishing: wait for its end, not a while.
		if fd, perr := unix.PidfdOpen(used.Pid, 0); perr == nil {
			waitExit(fd, time.Until(deadline))
			unix.Close(fd)
		} else {
			time.Sleep(time.Millisecond)
		}
	}
}

// syncDir makes a rename in dir durable (best effort: on the state
// directory's tmpfs it costs nothing and means nothing).
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// Started records the running app, and the plan it was launched with.
func (in *Instance) Started(s State, plan []byte) error {
	if in.pending != "" {
		if err := in.claim(); err != nil {
			return fmt.Errorf("instance %s: take the name: %w", in.Name, err)
		}
	}
	if err := writeAtomic(in.dirfd, planFile, plan); err != nil {
		return fmt.Errorf("record instance %s: %w", in.Name, err)
	}
	s.Name, s.Supervisor, s.Command = in.Name, os.Getpid(), in.Command
	s.Detached = in.logR >= 0
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := writeAtomic(in.dirfd, stateFile, b); err != nil {
		return fmt.Errorf("record instance %s: %w", in.Name, err)
	}
	in.started = true
	if in.Ready != nil {
		in.Ready.WriteString("ok " + in.Name + "\n")
		in.Ready.Close()
		in.Ready = nil
	}
	return nil
}

// Exited records how the app ended; the lock goes with the process.
func (in *Instance) Exited(e Exit) error {
	in.drainLog()
	e.Finished = time.Now()
	b, _ := json.Marshal(e)
	if err := writeAtomic(in.dirfd, exitFile, b); err != nil {
		return fmt.Errorf("record the end of instance %s: %w", in.Name, err)
	}
	return nil
}

// Discard removes an instance whose app never started (its setup failed):
// there is nothing to list.
func (in *Instance) Discard() {
	os.RemoveAll(in.Dir)
	in.close()
}

func (in *Instance) close() {
	for _, fd := range []*int{&in.dirfd, &in.lockfd, &in.logR} {
		if *fd >= 0 {
			unix.Close(*fd)
			*fd = -1
		}
	}
}

// HandOver describes the instance for a process that takes it over
// across execve (the slim waiter): one word, and the fds the caller must
// keep open across the exec.
func (in *Instance) HandOver() (word string, fds []int) {
	word = fmt.Sprintf("%d:%d:%d:%s", in.dirfd, in.lockfd, in.logR, in.Name)
	fds = []int{in.dirfd, in.lockfd}
	if in.logR >= 0 {
		fds = append(fds, in.logR)
	}
	return word, fds
}

// Adopt rebuilds an Instance from HandOver's word in the process that
// inherited its fds; the lock came with them.
func Adopt(word string) (*Instance, error) {
	f := strings.SplitN(word, ":", 4)
	bad := fmt.Errorf("instance hand-over %q: want dirfd:lockfd:logfd:name", word)
	if len(f) != 4 {
		return nil, bad
	}
	var n [3]int
	for i := range n {
		v, err := strconv.Atoi(f[i])
		if err != nil {
			return nil, bad
		}
		n[i] = v
	}
	for _, fd := range []int{n[0], n[1], n[2]} {
		if fd >= 0 {
			unix.CloseOnExec(fd)
		}
	}
	return &Instance{Name: f[3], dirfd: n[0], lockfd: n[1], logR: n[2], started: true}, nil
}
