package main

// Launcher tests, for real: images built by cimg-build, started by the
// cimg-run binary, with a probe program inside reporting what it sees.
// They need root (CI runs as root) and fail, not skip, without it.

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"cimg.dev/cimg/internal/mounttest"
	"cimg.dev/cimg/internal/testbin"
)

var cimgRun, cimgBuild, probe, faultinject string

// testRoot holds every temporary file of these tests (TMPDIR points
// here), so the leak counts can tell this package's loop devices and
// mounts from those of tests running beside it.
var testRoot string

func TestMain(m *testing.M) {
	var err error
	if testRoot, err = os.MkdirTemp("", "cimg-run-tests-"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Chmod(testRoot, 0o755) // TestRefusals runs cimg-run from here as nobody
	os.Setenv("TMPDIR", testRoot)
	run := func() int {
		defer os.RemoveAll(testRoot)
		return m.Run()
	}
	testbin.Main(run, map[string]string{"cimg-run": ".", "cimg-build": "../cimg-build", "cimg-fetch": "../cimg-fetch", "probe": "../../testdata/probe",
		"faultinject": "../../internal/testbin/faultinject"},
		func(p map[string]string) {
			cimgRun, cimgBuild, probe, faultinject = p["cimg-run"], p["cimg-build"], p["probe"], p["faultinject"]
		})
}

// probeImage builds an image of the probe with the given manifest body
// (name, arch and command are filled in).
func probeImage(t *testing.T, manifestBody string, extra ...string) string {
	t.Helper()
	mounttest.RequireRoot(t)
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	os.MkdirAll(filepath.Join(root, "usr/bin"), 0o755)
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	b, _ := os.ReadFile(probe)
	os.WriteFile(filepath.Join(root, "usr/bin/probe"), b, 0o755)
	os.WriteFile(filepath.Join(root, "usr/bin/probe-suid"), b, 0o755)
	// syscall.Chmod: os.Chmod drops the setuid bit.
	if err := syscall.Chmod(filepath.Join(root, "usr/bin/probe-suid"), 0o4755); err != nil {
		t.Fatal(err)
	}
	mf := filepath.Join(dir, "cimg.toml")
	os.WriteFile(mf, []byte("name = \"probe\"\n"+manifestBody), 0o644)
	img := filepath.Join(dir, "probe.cimg")
	args := append([]string{"-q", "-f", mf, "--rootfs", root, "--entrypoint", "/usr/bin/probe", "-o", img}, extra...)
	if out, err := exec.Command(cimgBuild, args...).CombinedOutput(); err != nil {
		t.Fatalf("cimg-build: %v\n%s", err, out)
	}
	return img
}

type result struct {
	stdout, stderr string
	code           int
}

func runImage(t *testing.T, cmd *exec.Cmd) result {
	t.Helper()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{out.String(), errb.String(), code}
}

// passHostFDs hands the command fds 3..20, all on a host directory: the
// kind of fds a careless caller leaks to cimg-run.
func passHostFDs(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	for i := 3; i <= 20; i++ {
		f, err := os.Open("/etc")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		cmd.ExtraFiles = append(cmd.ExtraFiles, f)
	}
}

// expectNoHostFDs fails for any fd of the probe that names a host path.
// The probe's own fds (Go's epoll, its readdir of /proc/self/fd) are
// anonymous or in /proc.
func expectNoHostFDs(t *testing.T, r probeReport) {
	t.Helper()
	for _, fd := range r.FDs {
		n, target, _ := strings.Cut(fd, "=")
		if i, _ := strconv.Atoi(n); i > 2 && strings.HasPrefix(target, "/") && !strings.HasPrefix(target, "/proc/") {
			t.Errorf("fd %s leaked into the app", fd)
		}
	}
}

type probeReport struct {
	PID         int
	IDs         []int
	Groups      []int
	Status      map[string]string
	Hostname    string
	Cwd         string
	Env         []string
	FDs         []string
	Mounts      []string
	Cgroup      string
	NS          map[string]string
	NoFile      [2]uint64
	Core        [2]uint64
	WriteErrors map[string]string `json:"write_errors"`
	Setuid      string            `json:"setuid_result"`
}

// counts is what a launch could leak: loop devices backed by our images,
// mounts in our state directories (see stateDir) or on our files, cimg
// cgroups, and this process's fds. Other tests' loop devices and mounts
// (other packages run at the same time) are not ours to count.
func counts(t *testing.T) map[string]int {
	lo, _ := exec.Command("losetup", "-a").Output()
	loops := 0
	for _, l := range strings.Split(string(lo), "\n") {
		if strings.Contains(l, testRoot) {
			loops++
		}
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	mounts := 0
	for _, l := range strings.Split(string(mi), "\n") {
		if f := strings.Fields(l); len(f) > 4 && strings.HasPrefix(f[4], testRoot) {
			mounts++
		}
	}
	cg, _ := os.ReadDir("/sys/fs/cgroup/memory/cimg")
	fds, _ := os.ReadDir("/proc/self/fd")
	return map[string]int{"loop devices": loops, "mounts": mounts, "cgroups": len(cg), "fds": len(fds)}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	if !pollFor(10*time.Second, 5*time.Millisecond, cond) {
		t.Fatal("timed out waiting")
	}
}

// settle polls cond for up to 5 s: the kernel tears down namespaces,
// mounts and loop devices of exited processes asynchronously.
func settle(cond func() bool) bool { return settleFor(5*time.Second, cond) }

// settleFor polls cond for up to d.
func settleFor(d time.Duration, cond func() bool) bool { return pollFor(d, 20*time.Millisecond, cond) }

// pollFor calls cond at each interval of every until it holds (true) or d has
// passed (false); cond is tried once more at the end.
func pollFor(d, every time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(d); ; time.Sleep(every) {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

// expectCounts fails unless counts settle back to before.
func expectCounts(t *testing.T, before map[string]int, when string) {
	t.Helper()
	var after map[string]int
	if !settle(func() bool { after = counts(t); return fmt.Sprint(after) == fmt.Sprint(before) }) {
		t.Errorf("%s: %v, before: %v", when, after, before)
	}
}

// runExit0 runs img's probe with "exit 0" and stops the test unless it
// succeeds: the first launch of an image makes its cache mount, a later
// one removes what killed launches left.
func runExit0(t *testing.T, state, img string) {
	t.Helper()
	if res := runImage(t, cimgRunCmd(state, img, "--", "exit", "0")); res.code != 0 {
		t.Fatalf("%+v", res)
	}
}

// startSleeping starts the probe in "sleep" mode and waits until it is up.
func startSleeping(t *testing.T, state string, args ...string) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	cmd := cimgRunCmd(state, append(args, "--", "sleep")...)
	return cmd, startReady(t, cmd)
}

// startReady starts cmd, a launch of the probe, and returns its output
// once the probe has said "ready" (it has asked for its signals); the
// launch is killed if the test ends before it does.
func startReady(t *testing.T, cmd *exec.Cmd) *syncBuffer {
	t.Helper()
	out := &syncBuffer{}
	cmd.Stdout = out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	// Polled finely: the signal tests time their sends from this moment.
	if !pollFor(10*time.Second, 100*time.Microsecond, func() bool { return strings.Contains(out.String(), "ready") }) {
		t.Fatalf("the probe did not say ready in 10 s (it said %q)", out.String())
	}
	return out
}

// stateDir makes a cimg-run state directory of the test's own (root-only,
// as cimg-run wants it), so no test shares a mount cache with another or
// with the host's /run/cimg. When the test ends, cimg-run gc empties the
// cache, and the test fails if a mount is left under the directory or a
// loop device on a file of the test.
func stateDir(t *testing.T) string {
	t.Helper()
	mounttest.RequireRoot(t)
	state := t.TempDir()
	if err := os.Chmod(state, 0o700); err != nil {
		t.Fatal(err)
	}
	files := filepath.Dir(state) // all the test's t.TempDir()s, its images too
	// The test's volumes, never the host's /var/lib/cimg/volumes.
	if err := os.MkdirAll(volumeDir(state), 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		var left []string
		// Retried: gc keeps a cache mount while another mount namespace
		// has it, and every launch on the host (of any image, by any
		// test) starts with a copy of all the host's mounts.
		if !settleFor(30*time.Second, func() bool {
			// --store: a directory that is not there (never the host's store).
			out, err := exec.Command(cimgRun, "gc", "--state-dir", state, "--store", filepath.Join(state, "no-store")).CombinedOutput()
			left = leftBehind(state, files)
			if err != nil {
				left = append(left, fmt.Sprintf("cimg-run gc: %v: %s", err, out))
			}
			return len(left) == 0
		}) {
			t.Errorf("left behind after cimg-run gc --state-dir %s:\n%s", state, strings.Join(left, "\n"))
		}
	})
	return state
}

// leftBehind lists the mounts on or under state and the loop devices
// backed by a file under files.
func leftBehind(state, files string) []string {
	var left []string
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(mi), "\n") {
		if f := strings.Fields(l); len(f) > 4 && (f[4] == state || strings.HasPrefix(f[4], state+"/")) {
			left = append(left, "mount "+f[4])
		}
	}
	backing, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, b := range backing {
		if name, _ := os.ReadFile(b); strings.HasPrefix(string(name), files+"/") {
			left = append(left, fmt.Sprintf("%s on %s", filepath.Base(filepath.Dir(filepath.Dir(b))), strings.TrimSpace(string(name))))
		}
	}
	return left
}

// volumeDir is where the launches of state keep their volumes: one
// root-only directory per test.
func volumeDir(state string) string { return filepath.Join(filepath.Dir(state), "volumes") }

// runArgs is the argv of a cimg-run launch in the state directory state,
// with the test's own volume directory.
func runArgs(state string, args ...string) []string {
	return append([]string{cimgRun, "--state-dir", state, "--volume-dir", volumeDir(state)}, args...)
}

// cimgRunCmd is a cimg-run launch in the state directory state.
func cimgRunCmd(state string, args ...string) *exec.Cmd {
	argv := runArgs(state, args...)
	return exec.Command(argv[0], argv[1:]...)
}
