package cgroup

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
	byPath, err := OpenEntry(cg.Dirs)
	if err != nil || len(byPath) != len(cg.Dirs) {
		t.Errorf("OpenEntry: %d files, %v; dirs %v", len(byPath), err, cg.Dirs)
	}
	byFD, err := cg.Entry()
	if err != nil || len(byFD) != len(cg.Dirs) {
		t.Errorf("Entry: %d files, %v; dirs %v", len(byFD), err, cg.Dirs)
	}
	for _, fd := range append(byPath, byFD...) {
		name, _ := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
		if filepath.Base(name) != "tasks" || !strings.Contains(name, "/cimg/"+id+"/") {
			t.Errorf("entry file on v1: %s, want the tasks file of cgroup %s (a thread moving itself waits for no RCU grace period)", name, id)
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

// TestNewReplacesADeadLaunchersCgroup (pid reuse): a cgroup that a
// SIGKILLed launcher left, whose pid this process has now, bears this
// launch's own name. New must not adopt it with what still runs there
// (that would be counted against the app's limits and die with it): that
// is killed and the cgroup made anew. SweepStale, which a launch runs
// beside its app, leaves the launch's own cgroup alone.
func TestNewReplacesADeadLaunchersCgroup(t *testing.T) {
	requireV1(t, "pids", "memory")
	id := fmt.Sprintf("cgtest-reuse-%d", os.Getpid()) // a launcher's name: it ends in the pid
	t.Cleanup(func() {
		for _, c := range v1Hierarchies {
			os.Remove(filepath.Join(Root, c, "cimg", id))
		}
	})
	dir := filepath.Join(Root, "pids", "cimg", id)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := writeFile(filepath.Join(dir, "pids.max"), "3"); err != nil {
		t.Fatal(err)
	}
	left := exec.Command("sleep", "60")
	if err := left.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- left.Wait() }()
	defer left.Process.Kill()
	if err := writeFile(filepath.Join(dir, "cgroup.procs"), fmt.Sprint(left.Process.Pid)); err != nil {
		t.Fatal(err)
	}
	cg, err := New(id, manifest.Limits{Pids: 8, Memory: 32 << 20}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cg.Remove()
	select {
	case err := <-waited:
		if err == nil || !strings.Contains(err.Error(), "killed") {
			t.Errorf("the dead launcher's process ended with %v, want killed", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("New adopted the dead launcher's cgroup: its process still runs after 5 s")
	}
	if got := strings.TrimSpace(cg.read("pids", "pids.max")); got != "8" {
		t.Errorf("pids.max = %q, want this launch's 8", got)
	}
	if got := strings.TrimSpace(cg.read("pids", "cgroup.procs")); got != "" {
		t.Errorf("the new cgroup has processes: %q", got)
	}
	cg.SweepStale()
	for _, c := range []string{"pids", "memory"} {
		if _, err := os.Stat(filepath.Join(Root, c, "cimg", id)); err != nil {
			t.Errorf("SweepStale took the launch's own %s cgroup: %v", c, err)
		}
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
// do, so that no launch's removeStale (cimg-run tests run beside these)
// ever takes it for a launcher's.
func testID(what string) string {
	return fmt.Sprintf("cgtest-%s-%d-test", what, os.Getpid())
}

// TestStaleSweepSparesALaunchBeforeItsLock (a time-of-check race: the
// sweep every launch runs must not take another launch's cgroup between
// its mkdir and its lock). A young directory whose pid is a live process
// stays, even though that process's executable is not called cimg-run
// (a renamed cimg-run, as bench comparisons make: before, concurrent
// launches of one SIGKILLed each other's apps); an old one whose pid is
// alive (reused) goes, and so does one whose pid is dead.
func TestStaleSweepSparesALaunchBeforeItsLock(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (to create cgroups)")
	}
	v2 := IsV2()
	parents := []string{filepath.Join(Root, "cimg")}
	if !v2 {
		parents = parents[:0]
		for _, c := range v1Hierarchies {
			if _, err := os.Stat(filepath.Join(Root, c, "cgroup.procs")); err == nil {
				parents = append(parents, filepath.Join(Root, c, "cimg"))
			}
		}
	}
	live := exec.Command("sleep", "60")
	if err := live.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { live.Process.Kill(); live.Wait() }()
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	name := func(pid int) string { return fmt.Sprintf("sweeptest-%d-%d", os.Getpid(), pid) }
	mk := func(n string) {
		t.Helper()
		for _, p := range parents {
			if err := os.MkdirAll(filepath.Join(p, n), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	there := func(n string) (in []string) {
		for _, p := range parents {
			if _, err := os.Stat(filepath.Join(p, n)); err == nil {
				in = append(in, p)
			}
		}
		return in
	}
	t.Cleanup(func() {
		for _, n := range []string{name(live.Process.Pid), name(dead.Process.Pid)} {
			for _, p := range parents {
				os.Remove(filepath.Join(p, n))
			}
		}
	})
	mk(name(live.Process.Pid))
	mk(name(dead.Process.Pid))
	removeStale(v2, "")
	if got := there(name(live.Process.Pid)); len(got) != len(parents) {
		t.Errorf("the sweep took a young, unlocked cgroup of a live pid (%s) from %d of %d hierarchies", live.Path, len(parents)-len(got), len(parents))
	}
	if got := there(name(dead.Process.Pid)); len(got) != 0 {
		t.Errorf("the sweep left a cgroup of a dead pid in %v", got)
	}
	defer func(age time.Duration) { staleAge = age }(staleAge)
	staleAge = 0 // every directory is old now
	removeStale(v2, "")
	if got := there(name(live.Process.Pid)); len(got) != 0 {
		t.Errorf("the sweep left an old, unlocked cgroup of a reused pid in %v", got)
	}
}

// TestRemoveLeftWaitsForASweep (a cleanup race: a lost instance's stop
// returned while another launch's sweep of stale cgroups held some of its
// directories, which stayed behind). A sweep here holds every directory
// for 300 ms, removes two hierarchies' and lets go of the rest: RemoveLeft
// must wait for it and remove what it left, and name a directory still
// held after its wait.
func TestRemoveLeftWaitsForASweep(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (to create cgroups)")
	}
	v2 := IsV2()
	id := testID("left")
	dirs := map[string]string{}
	if v2 {
		dirs[""] = filepath.Join(Root, "cimg", id)
	} else {
		for _, c := range v1Hierarchies {
			if _, err := os.Stat(filepath.Join(Root, c, "cgroup.procs")); err == nil {
				dirs[c] = filepath.Join(Root, c, "cimg", id)
			}
		}
	}
	t.Cleanup(func() {
		for _, d := range dirs {
			os.Remove(d)
		}
	})
	mk := func() {
		t.Helper()
		for _, d := range dirs {
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	mk()
	sweep := newCgroup(id, v2)
	for c, d := range dirs {
		if err := sweep.hold(c, d); err != nil {
			t.Fatal(err)
		}
	}
	let := make(chan struct{})
	go func() {
		defer close(let)
		time.Sleep(300 * time.Millisecond)
		n := 0
		for _, d := range sweep.Dirs {
			if n++; n <= 2 {
				os.Remove(d)
			}
		}
		sweep.release()
	}()
	start := time.Now()
	err := RemoveLeft(id, v2, dirs)
	took := time.Since(start).Round(time.Millisecond)
	<-let
	if err != nil {
		t.Errorf("RemoveLeft beside a sweep: %v", err)
	}
	for _, d := range dirs {
		if _, err := os.Stat(d); err == nil {
			t.Errorf("RemoveLeft returned after %v with %s still there (a sweep held it)", took, d)
		}
	}

	// Held for longer than it waits: named, and left in place.
	mk()
	held := newCgroup(id, v2)
	for c, d := range dirs {
		if err := held.hold(c, d); err != nil {
			t.Fatal(err)
		}
	}
	defer func(d time.Duration) { sweepWait = d }(sweepWait)
	sweepWait = 50 * time.Millisecond
	err = RemoveLeft(id, v2, dirs)
	held.release()
	for _, d := range dirs {
		if err == nil || !strings.Contains(err.Error(), d) {
			t.Errorf("RemoveLeft of a cgroup held throughout: %v; want an error naming %s", err, d)
		}
		if _, serr := os.Stat(d); serr != nil {
			t.Errorf("RemoveLeft removed %s, which another process held throughout", d)
		}
	}
}
