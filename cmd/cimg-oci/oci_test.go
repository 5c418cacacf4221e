package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// TestLifecycle: create leaves the process waiting (the app has not run:
// its file is not there), state says created; start runs it; kill stops
// it; delete removes the state. The state file is the OCI state.
func TestLifecycle(t *testing.T) {
	o := newOCI(t)
	b := bundle(t, func(s *specs.Spec) {
		s.Root.Readonly = false
		s.Process.Args = []string{"/bin/app", "sleep"}
		s.Mounts = append(s.Mounts, specs.Mount{Destination: "/out", Type: "bind", Source: "out", Options: []string{"rbind", "rw"}})
	})
	os.Mkdir(filepath.Join(b, "out"), 0o755)
	id := o.id()
	if r := o.run("create", "--bundle", b, "--pid-file", filepath.Join(b, "pid"), id); r.code != 0 {
		t.Fatalf("create: %d %s", r.code, r.stderr)
	}
	st := o.state(id)
	if st.Status != specs.StateCreated || st.Pid <= 0 || st.Bundle != b || st.ID != id {
		t.Fatalf("after create: %+v", st)
	}
	if pf, _ := os.ReadFile(filepath.Join(b, "pid")); strings.TrimSpace(string(pf)) != itoa(st.Pid) {
		t.Errorf("--pid-file has %q, state pid %d", pf, st.Pid)
	}
	// The process waits before execve: it is still cimg-oci, not the app.
	if exe, _ := os.Readlink("/proc/" + itoa(st.Pid) + "/exe"); strings.HasSuffix(exe, "/app") {
		t.Errorf("the app runs before start")
	}
	if r := o.run("create", "--bundle", b, id); r.code == 0 || !strings.Contains(r.stderr, "already exists") {
		t.Errorf("a second create of %s: %d %q", id, r.code, r.stderr)
	}
	if r := o.run("delete", id); r.code == 0 {
		t.Fatalf("delete of a created container succeeded (it is not stopped)")
	}
	if r := o.run("start", id); r.code != 0 {
		t.Fatalf("start: %s", r.stderr)
	}
	waitStatus(t, o, id, specs.StateRunning)
	for deadline := time.Now().Add(30 * time.Second); ; {
		if exe, _ := os.Readlink("/proc/" + itoa(st.Pid) + "/exe"); strings.HasSuffix(exe, "/app") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the app does not run after start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if r := o.run("delete", id); r.code == 0 {
		t.Errorf("delete of a running container succeeded")
	}
	if r := o.run("kill", id, "KILL"); r.code != 0 {
		t.Fatalf("kill: %s", r.stderr)
	}
	waitStatus(t, o, id, specs.StateStopped)
	if r := o.run("delete", id); r.code != 0 {
		t.Fatalf("delete: %s", r.stderr)
	}
	if r := o.run("state", id); r.code == 0 || !strings.Contains(r.stderr, "does not exist") {
		t.Errorf("state after delete: %d %q", r.code, r.stderr)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func waitStatus(t *testing.T, o *ociEnv, id string, want specs.ContainerState) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; {
		if st := o.state(id); st.Status == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: status %s, want %s", id, o.state(id).Status, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRun: cimg-oci run in the foreground returns the app's status and
// leaves nothing; the masks of runc's floor hold even when the config
// asks for none.
func TestRun(t *testing.T) {
	o := newOCI(t)
	b := bundle(t, func(s *specs.Spec) {
		s.Process.Args = []string{"/bin/app", "exit", "7"}
	})
	if r := o.run("run", "--bundle", b, o.id()); r.code != 7 {
		t.Errorf("run: status %d, want 7\n%s", r.code, r.stderr)
	}
	b = bundle(t, func(s *specs.Spec) {
		s.Linux.MaskedPaths, s.Linux.ReadonlyPaths = nil, nil
	})
	r := o.run("run", "--bundle", b, o.id())
	rep := parseReport(t, r.stdout)
	for _, m := range []string{"/proc/timer_list", "/proc/sys", "/sys/firmware"} {
		found := false
		for _, have := range rep.Mounts {
			found = found || have == m
		}
		if !found {
			t.Errorf("%s: not masked with an empty maskedPaths (mounts %v)", m, rep.Mounts)
		}
	}
}

// TestSystemdCgroupsPath: with --systemd-cgroup, slice:prefix:name is
// the scope's directory below the slice's, in each hierarchy.
func TestSystemdCgroupsPath(t *testing.T) {
	o := newOCI(t)
	id := o.id()
	b := bundle(t, func(s *specs.Spec) {
		s.Linux.CgroupsPath = "cimgtest-oci.slice:cimg:" + id
		limit := int64(30)
		s.Linux.Resources.Pids = &specs.LinuxPids{Limit: limit}
		s.Process.Args = []string{"/bin/app", "sleep"}
	})
	t.Cleanup(func() {
		for _, c := range []string{"pids", "memory", "devices", "freezer", "cpu,cpuacct", "cpuset", "blkio"} {
			os.Remove(filepath.Join("/sys/fs/cgroup", c, "cimgtest.slice/cimgtest-oci.slice"))
			os.Remove(filepath.Join("/sys/fs/cgroup", c, "cimgtest.slice"))
		}
	})
	if r := runCmd(t, o.cmd("--systemd-cgroup", "create", "--bundle", b, id)); r.code != 0 {
		t.Fatalf("create: %s", r.stderr)
	}
	dir := "/sys/fs/cgroup/pids/cimgtest.slice/cimgtest-oci.slice/cimg-" + id + ".scope"
	if v, err := os.ReadFile(dir + "/pids.max"); err != nil || strings.TrimSpace(string(v)) != "30" {
		t.Errorf("%s/pids.max: %q %v", dir, v, err)
	}
	if r := o.run("delete", "--force", id); r.code != 0 {
		t.Fatalf("delete: %s", r.stderr)
	}
	if _, err := os.Stat(dir); err == nil {
		t.Errorf("%s is left after delete", dir)
	}
}

// TestRefusals: what cimg-oci does not apply, create refuses, naming the
// field, and leaves nothing behind.
func TestRefusals(t *testing.T) {
	o := newOCI(t)
	for field, edit := range map[string]func(*specs.Spec){
		"linux.intelRdt": func(s *specs.Spec) { s.Linux.IntelRdt = &specs.LinuxIntelRdt{ClosID: "x"} },
		"hooks.createContainer with a user namespace": func(s *specs.Spec) {
			s.Hooks = &specs.Hooks{CreateContainer: []specs.Hook{{Path: "/bin/true"}}}
			s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
		},
		"linux.sysctl kernel.panic": func(s *specs.Spec) {
			s.Linux.Sysctl = map[string]string{"kernel.panic": "1"}
		},
		"process.apparmorProfile": func(s *specs.Spec) { s.Process.ApparmorProfile = "x" },
		"linux.resources.rdma":    func(s *specs.Spec) { s.Linux.Resources.Rdma = map[string]specs.LinuxRdma{"x": {}} },
		"linux.resources.blockIO": func(s *specs.Spec) { w := uint16(10); s.Linux.Resources.BlockIO = &specs.LinuxBlockIO{Weight: &w} },
		"linux.personality":       func(s *specs.Spec) { s.Linux.Personality = &specs.LinuxPersonality{Domain: "LINUX32"} },
		"linux.seccomp.listenerPath": func(s *specs.Spec) {
			s.Linux.Seccomp = &specs.LinuxSeccomp{DefaultAction: specs.ActAllow, ListenerPath: "/x"}
		},
		"linux.namespaces[": func(s *specs.Spec) {
			s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: "time"})
		},
		"linux.resources.memory.kernel": func(s *specs.Spec) {
			k := int64(1 << 20)
			s.Linux.Resources.Memory = &specs.LinuxMemory{Kernel: &k}
		},
		"mounts[": func(s *specs.Spec) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/x", Type: "bind", Source: "/", Options: []string{"rbind", "idmap"}})
		},
		"process.scheduler": func(s *specs.Spec) { s.Process.Scheduler = &specs.Scheduler{Policy: "SCHED_OTHER"} },
	} {
		b := bundle(t, edit)
		id := o.id()
		r := o.run("create", "--bundle", b, id)
		if r.code == 0 || !strings.Contains(r.stderr, field) {
			t.Errorf("%s: create %d, want a refusal naming it: %q", field, r.code, r.stderr)
		}
		if _, err := os.Stat(filepath.Join(o.root, id)); err == nil {
			t.Errorf("%s: a refused create left its state", field)
		}
	}
}

// TestFeaturesVersion: `features` says what create applies (spec 1.2,
// seccomp, v1 cgroups, no AppArmor), `--version` the spec version.
func TestFeaturesVersion(t *testing.T) {
	o := newOCI(t)
	r := o.run("features")
	var f struct {
		OCIVersionMax string `json:"ociVersionMax"`
		Linux         struct {
			Seccomp  struct{ Enabled bool }
			Apparmor struct{ Enabled bool }
			Cgroup   struct{ V1, V2 bool }
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &f); err != nil || r.code != 0 {
		t.Fatalf("features: %d %v\n%s", r.code, err, r.stdout)
	}
	if f.OCIVersionMax != specs.Version || !f.Linux.Seccomp.Enabled || f.Linux.Apparmor.Enabled || !f.Linux.Cgroup.V1 || !f.Linux.Cgroup.V2 {
		t.Errorf("features: %+v", f)
	}
	if r := o.run("--version"); r.code != 0 || !strings.Contains(r.stdout, "spec: "+specs.Version) {
		t.Errorf("--version: %d %q", r.code, r.stdout)
	}
}

// TestMountsInOrder: the runtime spec wants the config's mounts made in
// the order listed, and mountinfo shows them so. /proc comes first in
// every config (cimg-oci spec's, podman's) but only the container's
// process can mount it, in its pid namespace: it is forked there and
// mounts it before the parent goes on (before, /proc came last and
// runtime-tools found every later mount "not in order"). With a
// terminal /proc still comes last (README).
func TestMountsInOrder(t *testing.T) {
	o := newOCI(t)
	b := bundle(t, nil)
	r := o.run("run", "--bundle", b, o.id())
	if r.code != 0 {
		t.Fatalf("run: %d %s", r.code, r.stderr)
	}
	rep := parseReport(t, r.stdout)
	at := map[string]int{}
	for i, m := range rep.Mounts {
		if _, seen := at[m]; !seen {
			at[m] = i
		}
	}
	s := &specs.Spec{}
	if err := json.Unmarshal([]byte(readTrim(filepath.Join(b, "config.json"))), s); err != nil {
		t.Fatal(err)
	}
	last, lastName := -1, ""
	for _, m := range s.Mounts {
		i, ok := at[m.Destination]
		if !ok {
			t.Errorf("mount %s is not in the container's mountinfo: %v", m.Destination, rep.Mounts)
			continue
		}
		if i < last {
			t.Errorf("mount %s comes before %s in mountinfo, after it in the config: %v", m.Destination, lastName, rep.Mounts)
		}
		last, lastName = i, m.Destination
	}
}
