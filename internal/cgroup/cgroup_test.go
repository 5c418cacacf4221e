package cgroup

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"cimg.dev/cimg/manifest"
)

// TestSubtreeControlMatchesWholeNames: "cpuset" in cgroup.controllers
// does not make "cpu" available (a substring match once enabled +cpu on
// a kernel without it, which the kernel refused).
func TestSubtreeControlMatchesWholeNames(t *testing.T) {
	for _, tc := range []struct {
		controllers string
		need        []string
		enable      string
		missing     string
	}{
		{"cpuset memory\n", nil, "+memory +cpuset", ""},
		{"cpuset memory\n", []string{"cpu"}, "+memory +cpuset", "cpu"},
		{"cpuset memory\n", []string{"memory", "cpuset"}, "+memory +cpuset", ""},
		{"cpu io memory pids\n", []string{"cpuset", "memory"}, "+memory +pids +cpu", "cpuset"},
		{"cpuset cpu io memory hugetlb pids rdma misc\n", []string{"cpu", "pids"}, "+memory +pids +cpu +cpuset", ""},
		{"", []string{"pids"}, "", "pids"},
		{"memory  pids\t", nil, "+memory +pids", ""},
	} {
		enable, missing := subtreeControl(tc.controllers, tc.need)
		if enable != tc.enable || strings.Join(missing, " ") != tc.missing {
			t.Errorf("subtreeControl(%q, %q) = %q, %q; want %q, %q", tc.controllers, tc.need, enable, missing, tc.enable, tc.missing)
		}
	}
}

// fakeV2Root points Root at a directory laid out like a cgroup2 mount
// whose cgroup.controllers offers controllers.
func fakeV2Root(t *testing.T, controllers string) string {
	t.Helper()
	old := Root
	Root = t.TempDir()
	t.Cleanup(func() { Root = old })
	os.WriteFile(filepath.Join(Root, "cgroup.controllers"), []byte(controllers), 0o644)
	return Root
}

// TestSetupV2ReportsCPUMissingBesideCpuset runs the v2 set-up on a fake
// root (plain files) offering "cpuset memory".
func TestSetupV2ReportsCPUMissingBesideCpuset(t *testing.T) {
	root := fakeV2Root(t, "cpuset memory\n")
	l := manifest.Limits{CPU: 0.5}
	cg := newCgroup("fake-1", true)
	err := cg.setupV2(filepath.Join(root, "cimg"), []string{root, filepath.Join(root, "cimg")}, "fake-1", l, controllersFor(l))
	cg.release()
	if err == nil || !strings.Contains(err.Error(), "cgroup v2 controller cpu is not available") {
		t.Errorf("cpu limit with only cpuset and memory: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "cimg", "fake-1")); err == nil {
		t.Error("a cgroup was made for a refused limit")
	}

	l = manifest.Limits{Memory: 32 << 20}
	cg = newCgroup("fake-2", true)
	err = cg.setupV2(filepath.Join(root, "cimg"), []string{root, filepath.Join(root, "cimg")}, "fake-2", l, controllersFor(l))
	cg.release()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{root, filepath.Join(root, "cimg")} {
		b, _ := os.ReadFile(filepath.Join(d, "cgroup.subtree_control"))
		if string(b) != "+memory +cpuset" {
			t.Errorf("%s/cgroup.subtree_control = %q, want \"+memory +cpuset\"", d, b)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(root, "cimg", "fake-2", "memory.max")); string(b) != fmt.Sprint(32<<20) {
		t.Errorf("memory.max = %q", b)
	}
}

// requireV1 stops a test that needs this host's v1 hierarchies (the v2
// case runs in a VM: cmd/cimg-run's *InVM tests).
func requireV1(t *testing.T, ctrls ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("needs root (to create cgroups)")
	}
	if IsV2() {
		t.Skip("pure cgroup v2 host: the v1 case does not apply (TestDevicesInVM covers v2)")
	}
	for _, c := range ctrls {
		if _, err := os.Stat(filepath.Join(Root, c, "cgroup.procs")); err != nil {
			t.Fatalf("v1 %s controller not mounted: %v", c, err)
		}
	}
}

// leftovers lists the directories named id in cimg's v1 hierarchies.
func leftovers(id string) []string {
	var left []string
	for _, c := range v1Hierarchies {
		if _, err := os.Stat(filepath.Join(Root, c, "cimg", id)); err == nil {
			left = append(left, c)
		}
	}
	return left
}

func TestNewV1DeviceAllowListAndRemove(t *testing.T) {
	requireV1(t, "devices", "pids", "memory")
	id := testID("devices")
	cg, err := New(id, manifest.Limits{Pids: 8}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cg.Warning != "" {
		t.Errorf("warning with the devices controller mounted: %s", cg.Warning)
	}
	if cg.Dirs["devices"] == "" {
		t.Errorf("no devices cgroup: %v", cg.Dirs)
	}
	b, err := os.ReadFile(filepath.Join(Root, "devices", "cimg", id, "devices.list"))
	want := strings.Join(devicesList(), "\n")
	if err != nil || strings.TrimSpace(string(b)) != want {
		t.Errorf("devices.list = %q (%v), want %q", b, err, want)
	}
	fds, err := OpenEntry(cg.Dirs)
	if err != nil || len(fds) != len(cg.Dirs) {
		t.Errorf("OpenEntry: %d files, %v; dirs %v", len(fds), err, cg.Dirs)
	}
	for _, fd := range fds {
		name, _ := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
		if filepath.Base(name) != "tasks" {
			t.Errorf("OpenEntry on v1: %s, want the tasks file (a thread moving itself waits for no RCU grace period)", name)
		}
		unix.Close(fd)
	}
	if err := cg.Remove(); err != nil {
		t.Error(err)
	}
	if left := leftovers(id); len(left) > 0 {
		t.Errorf("Remove left cgroup %s in %v", id, left)
	}
}

// TestNewRemovesCgroupWhenALimitIsRefused: a cpuset the kernel refuses
// (cpu 1023, on a machine with fewer) fails New, which leaves no cgroup
// in any hierarchy.
func TestNewRemovesCgroupWhenALimitIsRefused(t *testing.T) {
	requireV1(t, "cpuset", "memory")
	id := testID("refused")
	cg, err := New(id, manifest.Limits{Cpuset: "1023", Memory: 32 << 20}, nil)
	if err == nil || !strings.Contains(err.Error(), "cpuset.cpus") {
		t.Errorf("cpuset 1023: cgroup %v, error %v", cg, err)
	}
	if cg != nil {
		t.Error("New returned a cgroup with its error")
	}
	if left := leftovers(id); len(left) > 0 {
		t.Errorf("refused limit left cgroup %s in %v", id, left)
		for _, c := range left {
			os.Remove(filepath.Join(Root, c, "cimg", id))
		}
	}
}

// testID names a test's cgroup. It does not end in a pid, as launchers'
// do: another launch's removeStale, which takes a cgroup whose pid is no
// cimg-run for a dead launcher's, would remove it between New's mkdir
// and its lock (cimg-run tests run beside these).
func testID(what string) string {
	return fmt.Sprintf("cgtest-%s-%d-test", what, os.Getpid())
}
