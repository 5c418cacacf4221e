package main

import (
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

func TestCgroupLimitsAppliedAndRemoved(t *testing.T) {
	state := stateDir(t)
	img := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n[limits]\nmemory = \"48MiB\"\npids = 16\ncpu = 0.5\n")
	cmd, _ := startSleeping(t, state, img)
	id := "probe-" + strconv.Itoa(cmd.Process.Pid)
	for f, want := range map[string]string{
		"memory/cimg/" + id + "/memory.limit_in_bytes": strconv.Itoa(48 << 20),
		"pids/cimg/" + id + "/pids.max":                "16",
		"cpu/cimg/" + id + "/cpu.cfs_quota_us":         "50000",
	} {
		b, err := os.ReadFile("/sys/fs/cgroup/" + f)
		if err != nil || strings.TrimSpace(string(b)) != want {
			t.Errorf("%s = %q (%v), want %s", f, b, err, want)
		}
	}
	// The app ends (signalled itself: a stop request that reaches the
	// launcher while it turns into the slim waiter ends the launcher by
	// design, wait.go, leaving the cgroup to the next launch), and its
	// launcher or waiter removes the cgroup.
	stopApp(t, cmd, id)
	for _, c := range []string{"memory", "pids", "cpu"} {
		if _, err := os.Stat("/sys/fs/cgroup/" + c + "/cimg/" + id); err == nil {
			t.Errorf("cgroup %s/cimg/%s left behind", c, id)
		}
	}
}

func TestMemoryHogIsOOMKilled(t *testing.T) {
	state := stateDir(t)
	img := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n[limits]\nmemory = \"32MiB\"\n")
	res := runImage(t, cimgRunCmd(state, img, "--", "hog"))
	if res.code != 128+9 || !strings.Contains(res.stderr, "OOM killer") {
		t.Errorf("hog: exit %d, stderr %q", res.code, res.stderr)
	}
}

func TestForkBombStopsAtPidsMax(t *testing.T) {
	state := stateDir(t)
	img := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n[limits]\npids = 12\n")
	res := runImage(t, cimgRunCmd(state, img, "--", "forkbomb"))
	var n int
	fmt.Sscanf(res.stdout, "started %d", &n)
	if n == 0 || n >= 12 {
		t.Errorf("fork bomb started %d children under pids.max 12 (%q %q)", n, res.stdout, res.stderr)
	}
}

// TestMissingCgroupController: a manifest limit on a controller the host
// does not mount is refused, naming the controller and the kernel option,
// and the cgroups made for the other controllers are removed. The cpuset
// hierarchy is unmounted for real, in a private mount namespace.
func TestMissingCgroupController(t *testing.T) {
	state := stateDir(t)
	img := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n[limits]\ncpuset = \"0\"\nmemory = \"32MiB\"\npids = 8\n")
	if res := runImage(t, cimgRunCmd(state, img, "--", "exit", "0")); res.code != 0 {
		t.Fatalf("with cpuset mounted: %+v", res)
	}
	before := counts(t)
	unshare := []string{"--mount", "--propagation", "private", "sh", "-c", `umount -l /sys/fs/cgroup/cpuset && exec "$0" "$@"`}
	res := runImage(t, exec.Command("unshare", append(unshare, runArgs(state, img, "--", "exit", "0")...)...))
	want := "cgroup v1 controller cpuset is not mounted at /sys/fs/cgroup/cpuset but the manifest sets limits on it (CONFIG_CGROUP_CPUSET?"
	if res.code != 125 || !strings.Contains(res.stderr, want) {
		t.Errorf("exit %d, stderr %q; want 125 and %q", res.code, res.stderr, want)
	}
	expectCounts(t, before, "after the refused launch")
}

// TestAppInItsCgroupsBeforeItRuns (class: a window outside the limits at
// start): the app's process enters its cgroup itself, first thing after
// the fork, by a move of its one thread (cgroup.EntryFile: v1's tasks).
// It must be in the app's cgroup in every hierarchy, as a whole process
// (cgroup.procs lists it), before anything of its setup: the cgroup
// namespace it unshares later makes each of those cgroups its "/", which
// it is only if it was already there.
func TestAppInItsCgroupsBeforeItRuns(t *testing.T) {
	state := stateDir(t)
	img := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n[limits]\nmemory = \"48MiB\"\npids = 16\ncpu = 0.5\n")
	hierarchies := []string{"memory", "pids", "cpu", "devices"}
	res := runImage(t, cimgRunCmd(state, img, "--", "cat", "/proc/self/cgroup"))
	if res.code != 0 {
		t.Fatalf("probe cat /proc/self/cgroup: exit %d, %q %q", res.code, res.stdout, res.stderr)
	}
	for _, c := range hierarchies {
		if got := cgroupLine(res.stdout, c); got != "/" {
			t.Errorf("the app's own view of its %s cgroup: %q, want \"/\" (its cgroup, entered before the cgroup namespace was made)\n%s", c, got, res.stdout)
		}
	}

	cmd, _ := startSleeping(t, state, img)
	id := "probe-" + strconv.Itoa(cmd.Process.Pid)
	defer stopApp(t, cmd, id)
	b, err := os.ReadFile("/sys/fs/cgroup/pids/cimg/" + id + "/cgroup.procs")
	procs := strings.Fields(string(b))
	if err != nil || len(procs) != 1 {
		t.Fatalf("pids/cimg/%s/cgroup.procs: %q (%v), want the app alone", id, b, err)
	}
	app := procs[0]
	self, err := os.ReadFile("/proc/" + app + "/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range hierarchies {
		if got := cgroupLine(string(self), c); got != "/cimg/"+id {
			t.Errorf("the app (pid %s) in the %s hierarchy: %q, want /cimg/%s", app, c, got, id)
		}
		b, err := os.ReadFile("/sys/fs/cgroup/" + c + "/cimg/" + id + "/cgroup.procs")
		if err != nil || strings.Join(strings.Fields(string(b)), " ") != app {
			t.Errorf("%s/cimg/%s/cgroup.procs: %q (%v), want the app %s as a whole process", c, id, b, err, app)
		}
	}
}

// cgroupLine is the path of the hierarchy with controller c in a
// /proc/PID/cgroup text ("" when none).
func cgroupLine(text, c string) string {
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) == 3 && slices.Contains(strings.Split(f[1], ","), c) {
			return f[2]
		}
	}
	return ""
}

// stopApp sends SIGTERM to the app of launcher cmd (cgroup id), found in
// its pids cgroup, and waits for the launcher to end.
func stopApp(t *testing.T, cmd *exec.Cmd, id string) {
	t.Helper()
	b, err := os.ReadFile("/sys/fs/cgroup/pids/cimg/" + id + "/cgroup.procs")
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil {
			syscall.Kill(pid, syscall.SIGTERM)
		}
	}
	if err != nil || len(strings.Fields(string(b))) == 0 {
		t.Errorf("the app of %s: %q (%v); killing its launcher", id, b, err)
		cmd.Process.Kill()
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("launcher of %s: %v", id, err)
	}
}
