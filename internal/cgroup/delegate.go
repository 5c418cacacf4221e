package cgroup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Delegation is the cgroup a service manager delegated to the launcher
// (systemd's Delegate=yes): the app's cgroup goes inside it, so that the
// unit accounts for the app, and stopping or killing the unit reaches it.
type Delegation struct {
	V2 string            // the unit's directory on a v2 host
	V1 map[string]string // controller → the unit's directory in that v1 hierarchy
}

// Delegated is the cgroup this process was started in, read from
// /proc/self/cgroup: on v2 the one "0::" line; on v1 (or hybrid) the
// line of each controller cimg uses.
func Delegated() (*Delegation, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	return parseDelegation(string(b), IsV2())
}

func parseDelegation(procCgroup string, v2 bool) (*Delegation, error) {
	d := &Delegation{V1: map[string]string{}}
	for _, line := range strings.Split(strings.TrimSpace(procCgroup), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		if v2 && f[0] == "0" && f[1] == "" {
			d.V2 = filepath.Join(Root, f[2])
		}
		for _, c := range strings.Split(f[1], ",") {
			if !v2 && contains(v1Hierarchies, c) {
				d.V1[c] = filepath.Join(Root, c, f[2])
			}
		}
	}
	if v2 && (d.V2 == "" || d.V2 == Root) {
		return nil, errors.New("this process is in the root cgroup, not a unit's: run it as a service with Delegate=yes")
	}
	if !v2 && len(d.V1) == 0 {
		return nil, errors.New("this process is in no v1 controller's cgroup: run it as a service with Delegate=yes")
	}
	return d, nil
}

// leaveV2Root moves this process from the unit's cgroup into a leaf of
// it, "launcher": on v2 a cgroup that hands controllers to its children
// may hold no process itself. The launcher ends soon after; the leaf
// stays empty, removed with the unit's cgroup.
func (d *Delegation) leaveV2Root() error {
	leaf := filepath.Join(d.V2, "launcher")
	if err := os.Mkdir(leaf, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("create cgroup %s: %w", leaf, err)
	}
	if err := writeFile(filepath.Join(leaf, "cgroup.procs"), strconv.Itoa(os.Getpid())); err != nil {
		return fmt.Errorf("leave the unit's cgroup for %s (Delegate=yes?): %w", leaf, err)
	}
	return nil
}

// Keep lets the cgroup outlive this process: its fds close, nothing is
// removed (a unit's app, handed to systemd, lives on in it).
func (cg *Cgroup) Keep() { cg.release() }
