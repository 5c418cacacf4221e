package main

import (
	"fmt"
	"os"
	"os/exec"
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
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
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
