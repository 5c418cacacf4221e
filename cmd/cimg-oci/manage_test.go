package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// TestPauseResumePsUpdate: pause freezes the container's cgroup (state
// "paused", the kernel's freezer.state FROZEN), ps lists
// its process, update rewrites the limits in the cgroup files (flags and
// --resources on stdin), resume thaws it, and delete --force takes a
// paused container (its SIGKILL lands once thawed). The host's v1 files
// here; TestCgroupV2InVM has v2.
func TestPauseResumePsUpdate(t *testing.T) {
	o := newOCI(t)
	limit := int64(64 << 20)
	b := bundle(t, func(s *specs.Spec) {
		s.Process.Args = []string{"/bin/app", "sleep"}
		s.Linux.Resources = &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}, Pids: &specs.LinuxPids{Limit: 32}}
	})
	id := o.id()
	if r := o.run("run", "--detach", "--bundle", b, id); r.code != 0 {
		t.Fatalf("run -d: %d %s", r.code, r.stderr)
	}
	waitStatus(t, o, id, specs.StateRunning)
	st := o.state(id)
	r := o.run("ps", "--format", "json", id)
	var pids []int
	if err := json.Unmarshal([]byte(r.stdout), &pids); err != nil || len(pids) != 1 || pids[0] != st.Pid {
		t.Errorf("ps --format json: %q (%v), want [%d]", r.stdout, err, st.Pid)
	}
	if r := o.run("resume", id); r.code == 0 || !strings.Contains(r.stderr, "not paused") {
		t.Errorf("resume of a running container: %d %q", r.code, r.stderr)
	}
	if r := o.run("pause", id); r.code != 0 {
		t.Fatalf("pause: %s", r.stderr)
	}
	if got := o.state(id).Status; got != statePaused {
		t.Errorf("after pause: %s, want paused", got)
	}
	if got := readTrim(filepath.Join(cgroupDir(t, o, id, "freezer"), "freezer.state")); got != "FROZEN" {
		t.Errorf("freezer.state after pause: %s", got)
	}
	mem, pidsDir := cgroupDir(t, o, id, "memory"), cgroupDir(t, o, id, "pids")
	if r := o.run("update", "--memory", "33554432", id); r.code != 0 {
		t.Fatalf("update --memory: %s", r.stderr)
	}
	c := o.cmd("update", "--resources", "-", id)
	c.Stdin = strings.NewReader(`{"pids": {"limit": 16}}`)
	if r := runCmd(t, c); r.code != 0 {
		t.Fatalf("update --resources -: %s", r.stderr)
	}
	if got := readTrim(filepath.Join(mem, "memory.limit_in_bytes")); got != "33554432" {
		t.Errorf("memory.limit_in_bytes after update: %s", got)
	}
	if got := readTrim(filepath.Join(pidsDir, "pids.max")); got != "16" {
		t.Errorf("pids.max after update: %s", got)
	}
	c = o.cmd("update", "--resources", "-", id)
	c.Stdin = strings.NewReader(`{"devices": [{"allow": true, "access": "rwm"}]}`)
	if r := runCmd(t, c); r.code == 0 || !strings.Contains(r.stderr, "devices: not updatable") {
		t.Errorf("update of the device rules: %d %q", r.code, r.stderr)
	}
	if r := o.run("resume", id); r.code != 0 {
		t.Fatalf("resume: %s", r.stderr)
	}
	waitStatus(t, o, id, specs.StateRunning)
	if r := o.run("pause", id); r.code != 0 {
		t.Fatalf("pause again: %s", r.stderr)
	}
	if r := o.run("delete", "--force", id); r.code != 0 {
		t.Fatalf("delete --force of a paused container: %s", r.stderr)
	}
}

// cgroupDir is the container's directory in v1 hierarchy c, from its
// process's /proc/PID/cgroup.
func cgroupDir(t *testing.T, o *ociEnv, id, c string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + itoa(o.state(id).Pid) + "/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.SplitN(l, ":", 3); len(f) == 3 && strings.Contains(","+f[1]+",", ","+c+",") {
			return filepath.Join("/sys/fs/cgroup", c, f[2])
		}
	}
	t.Fatalf("no %s cgroup in %s", c, b)
	return ""
}

func readTrim(p string) string {
	b, _ := os.ReadFile(p)
	return strings.TrimSpace(string(b))
}
