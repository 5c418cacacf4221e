package main

// Launcher tests, for real: images built by cimg-build, started by the
// cimg-run binary, with a probe program inside reporting what it sees.
// They need root (CI runs as root) and fail, not skip, without it.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"cimg.dev/cimg/internal/mounttest"
	"cimg.dev/cimg/internal/testbin"
	"cimg.dev/cimg/internal/vmtest"
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
	testbin.Main(run, map[string]string{"cimg-run": ".", "cimg-build": "../cimg-build", "probe": "../../testdata/probe",
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
	os.Chmod(filepath.Join(root, "usr/bin/probe-suid"), 0o4755)
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
	NoFile      [2]uint64
	Core        [2]uint64
	WriteErrors map[string]string `json:"write_errors"`
	Setuid      string            `json:"setuid_result"`
}

func TestProbeSeesWhatTheManifestSays(t *testing.T) {
	img := probeImage(t, `
hostname = "probe-host"
[app]
command = ["/usr/bin/probe"]
workdir = "/usr/bin"
user = 1000
group = 1000
groups = [20]
[app.env]
FOO = "bar"
[limits]
memory = "64MiB"
pids = 32
[limits.rlimits]
nofile = { soft = 1024, hard = 2048 }
core = { soft = 0, hard = 4096 }
[security]
capabilities = ["CAP_NET_BIND_SERVICE"]
`)
	// Host fds 3..20 on host directories must not reach the app.
	cmd := exec.Command(cimgRun, img)
	passHostFDs(t, cmd)
	res := runImage(t, cmd)
	if res.code != 0 {
		t.Fatalf("exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	var r probeReport
	if err := json.Unmarshal([]byte(res.stdout), &r); err != nil {
		t.Fatalf("%v\n%s", err, res.stdout)
	}
	check := func(what string, got, want any) {
		t.Helper()
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: got %v, want %v", what, got, want)
		}
	}
	check("pid", r.PID, 1)
	check("uid/euid/gid/egid", r.IDs, []int{1000, 1000, 1000, 1000})
	check("groups", r.Groups, []int{20})
	const netBind = "0000000000000400"
	for _, set := range []string{"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"} {
		check(set, r.Status[set], netBind)
	}
	check("NoNewPrivs", r.Status["NoNewPrivs"], "1")
	check("Seccomp", r.Status["Seccomp"], "2")
	check("hostname", r.Hostname, "probe-host")
	check("cwd", r.Cwd, "/usr/bin")
	check("nofile hard", r.NoFile[1], 2048)
	check("core", r.Core, [2]uint64{0, 4096})
	env := strings.Join(r.Env, " ")
	if !strings.Contains(env, "FOO=bar") || !strings.Contains(env, "PATH=") {
		t.Errorf("env %v", r.Env)
	}
	expectNoHostFDs(t, r)
	mounts := " " + strings.Join(r.Mounts, " ") + " "
	for _, want := range []string{" / ", " /proc ", " /dev ", " /dev/pts ", " /dev/shm ", " /tmp ", " /run "} {
		if !strings.Contains(mounts, want) {
			t.Errorf("mount %s missing: %v", want, r.Mounts)
		}
	}
	for _, bad := range []string{"/work", "/run/cimg", "/sys", "/home"} {
		if strings.Contains(mounts, " "+bad) {
			t.Errorf("host mount %s visible: %v", bad, r.Mounts)
		}
	}
	for _, line := range strings.Split(r.Cgroup, "\n") {
		if f := strings.SplitN(line, ":", 3); len(f) == 3 && (strings.Contains(f[1], "memory") || strings.Contains(f[1], "pids")) && f[2] != "/" {
			t.Errorf("cgroup %q: the app should see its own cgroup as /", line)
		}
	}
	for p, e := range r.WriteErrors {
		if e == "" {
			t.Errorf("the app could write %s", p)
		}
	}
	check("setuid-root probe's euid", r.Setuid, "1000")
}

func TestExitStatusAndSignals(t *testing.T) {
	img := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n")
	if res := runImage(t, exec.Command(cimgRun, img, "--", "exit", "7")); res.code != 7 {
		t.Errorf("exit 7: got %d %s", res.code, res.stderr)
	}
	cmd, out := startSleeping(t, img)
	cmd.Process.Signal(syscall.SIGUSR1)
	cmd.Wait()
	if !strings.Contains(out.String(), "got user defined signal 1") {
		t.Errorf("SIGUSR1 not forwarded: %q", out.String())
	}
}

// TestSlimWaiter: a launcher whose app outlives its first 100 ms turns
// into the slim waiter (same pid, a fresh process image), which still
// relays signals, reports the status and removes the cgroup — and whose
// death still takes the app with it.
func TestSlimWaiter(t *testing.T) {
	img := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n[limits]\nmemory = \"32MiB\"\n")
	runExit0(t, img) // the cache mount
	before := counts(t)
	cmd, out := startSleeping(t, img)
	waitFor(t, func() bool { return isWaiter(cmd.Process.Pid) })
	cmd.Process.Signal(syscall.SIGUSR1)
	if err := cmd.Wait(); err != nil || !strings.Contains(out.String(), "got user defined signal 1") {
		t.Errorf("through the waiter: %v, %q", err, out.String())
	}
	expectCounts(t, before, "after the waiter's app exited")

	cmd, _ = startSleeping(t, img)
	waitFor(t, func() bool { return isWaiter(cmd.Process.Pid) })
	procs, _ := os.ReadFile(fmt.Sprintf("/sys/fs/cgroup/memory/cimg/probe-%d/cgroup.procs", cmd.Process.Pid))
	app, err := strconv.Atoi(strings.TrimSpace(string(procs)))
	if err != nil {
		t.Fatalf("the app's pid from its cgroup: %q", procs)
	}
	cmd.Process.Kill()
	cmd.Wait()
	waitFor(t, func() bool { // gone, or a zombie waiting for the host's init
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", app))
		return err != nil || strings.Contains(string(b), ") Z ")
	})
	runExit0(t, img) // removes the stale cgroup
	expectCounts(t, before, "after the waiter was killed")
}

func TestCgroupLimitsAppliedAndRemoved(t *testing.T) {
	img := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n[limits]\nmemory = \"48MiB\"\npids = 16\ncpu = 0.5\n")
	cmd, _ := startSleeping(t, img)
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
	img := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n[limits]\nmemory = \"32MiB\"\n")
	res := runImage(t, exec.Command(cimgRun, img, "--", "hog"))
	if res.code != 128+9 || !strings.Contains(res.stderr, "OOM killer") {
		t.Errorf("hog: exit %d, stderr %q", res.code, res.stderr)
	}
}

func TestForkBombStopsAtPidsMax(t *testing.T) {
	img := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n[limits]\npids = 12\n")
	res := runImage(t, exec.Command(cimgRun, img, "--", "forkbomb"))
	var n int
	fmt.Sscanf(res.stdout, "started %d", &n)
	if n == 0 || n >= 12 {
		t.Errorf("fork bomb started %d children under pids.max 12 (%q %q)", n, res.stdout, res.stderr)
	}
}

// counts is what a launch must not leave behind.
// counts is what a launch could leak: loop devices backed by our images,
// mounts in cimg's state directory or on our files, cimg cgroups, and
// this process's fds. Other tests' loop devices and mounts (other
// packages run at the same time) are not ours to count.
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
		if f := strings.Fields(l); len(f) > 4 && (strings.HasPrefix(f[4], "/run/cimg/") || strings.HasPrefix(f[4], testRoot)) {
			mounts++
		}
	}
	cg, _ := os.ReadDir("/sys/fs/cgroup/memory/cimg")
	fds, _ := os.ReadDir("/proc/self/fd")
	return map[string]int{"loop devices": loops, "mounts": mounts, "cgroups": len(cg), "fds": len(fds)}
}

func TestSequentialLaunchesLeakNothing(t *testing.T) {
	img := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n[limits]\nmemory = \"32MiB\"\n")
	// The first launch creates the cache mount, which is meant to stay.
	runExit0(t, img)
	before := counts(t)
	for i := 0; i < 1000; i++ {
		if res := runImage(t, exec.Command(cimgRun, img, "--", "exit", "3")); res.code != 3 {
			t.Fatalf("launch %d: %+v", i, res)
		}
	}
	if after := counts(t); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("after 1000 launches: %v, before: %v", after, before)
	}
}

func TestRefusals(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "k")
	if out, err := exec.Command(cimgBuild, "keygen", key).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	img := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n")
	signed := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n", "--sign", key+".key")
	other := filepath.Join(dir, "other")
	exec.Command(cimgBuild, "keygen", other).Run()
	tampered := filepath.Join(dir, "tampered.cimg")
	b, _ := os.ReadFile(img)
	b[100000] ^= 1
	os.WriteFile(tampered, b, 0o644)

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unsigned with a key", []string{"--key", key + ".pub", img}, "unsigned"},
		{"signed by another key", []string{"--key", other + ".pub", signed}, "untrusted"},
		{"tampered payload", []string{"--verify", "always", tampered}, "payload"},
		{"not an image", []string{"/etc/passwd"}, "not a cimg image"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := runImage(t, exec.Command(cimgRun, tc.args...))
			if res.code != 125 || !strings.Contains(res.stderr, tc.want) || strings.Count(strings.TrimSpace(res.stderr), "\n") > 1 {
				t.Errorf("exit %d, stderr %q; want 125 and %q", res.code, res.stderr, tc.want)
			}
		})
	}
	if res := runImage(t, exec.Command(cimgRun, "--key", key+".pub", signed, "--", "exit", "0")); res.code != 0 {
		t.Errorf("signed image with its key: %+v", res)
	}
	nobody := exec.Command(cimgRun, img)
	nobody.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if res := runImage(t, nobody); res.code != 125 || !strings.Contains(res.stderr, "must run as root") {
		t.Errorf("as nobody: %+v", res)
	}
}

// TestOverlayMounts: an overlay makes a directory of the read-only image
// writable — kept in a volume across runs, or in memory for one run —
// while the image's own files show through and the image stays as built.
func TestOverlayMounts(t *testing.T) {
	vol := fmt.Sprintf("ovl-test-%d", os.Getpid())
	t.Cleanup(func() { os.RemoveAll(filepath.Join("/var/lib/cimg/volumes/probe", vol)) })
	img := probeImage(t, fmt.Sprintf(`[app]
command = ["/usr/bin/probe"]
[[mounts]]
type = "overlay"
source = %q
target = "/usr/bin"
[[mounts]]
type = "overlay"
target = "/etc"
`, vol))
	built, _ := os.ReadFile(img)
	run := func(args ...string) result {
		t.Helper()
		return runImage(t, exec.Command(cimgRun, append([]string{img, "--"}, args...)...))
	}
	for _, step := range []struct {
		args []string
		want string
	}{
		{[]string{"write", "/usr/bin/note", "kept"}, "wrote /usr/bin/note"},
		{[]string{"write", "/etc/note", "gone"}, "wrote /etc/note"},
		{[]string{"read", "/usr/bin/note"}, "read /usr/bin/note: 4 bytes"},     // persisted in the volume
		{[]string{"read", "/usr/bin/probe-suid"}, "read /usr/bin/probe-suid:"}, // the image shows through
		{[]string{"read", "/etc/note"}, "no such file"},                        // the in-memory layer went
	} {
		if res := run(step.args...); !strings.Contains(res.stdout, step.want) {
			t.Errorf("%v: %+v; want %q", step.args, res, step.want)
		}
	}
	if _, err := os.Stat(filepath.Join("/var/lib/cimg/volumes/probe", vol, "upper/note")); err != nil {
		t.Errorf("the overlay's upper layer on the host: %v", err)
	}
	if after, _ := os.ReadFile(img); !bytes.Equal(after, built) {
		t.Error("the image file changed")
	}
}

// TestLoopDevicesExhausted: when the kernel has no loop device to give,
// cimg-run says so with advice, exits 125 and leaves nothing behind —
// both when it fills the mount cache and with --private-mount.
func TestLoopDevicesExhausted(t *testing.T) {
	for _, private := range []bool{false, true} {
		img := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n") // new, so never cached
		before := counts(t)
		args := []string{"loop-enospc", cimgRun, img, "--", "exit", "0"}
		if private {
			args = []string{"loop-enospc", cimgRun, "--private-mount", img, "--", "exit", "0"}
		}
		res := runImage(t, exec.Command(faultinject, args...))
		if res.code != 125 || !strings.Contains(res.stderr, "loop devices exhausted (raise max_loop, or free some with losetup -D)") ||
			strings.Count(strings.TrimSpace(res.stderr), "\n") > 0 {
			t.Errorf("private-mount=%v: exit %d, stderr %q", private, res.code, res.stderr)
		}
		expectCounts(t, before, fmt.Sprintf("after the failed launch (private-mount=%v)", private))
	}
}

// TestLeakedFDsWithoutCloseRange: on a kernel without close_range (here:
// the call fails with ENOSYS), host fds handed to cimg-run still never
// reach the app.
func TestLeakedFDsWithoutCloseRange(t *testing.T) {
	img := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n")
	cmd := exec.Command(faultinject, "close_range-enosys", cimgRun, img)
	passHostFDs(t, cmd)
	res := runImage(t, cmd)
	var r probeReport
	if err := json.Unmarshal([]byte(res.stdout), &r); err != nil || res.code != 0 {
		t.Fatalf("exit %d, %v\n%s%s", res.code, err, res.stdout, res.stderr)
	}
	expectNoHostFDs(t, r)
}

// TestMissingCgroupController: a manifest limit on a controller the host
// does not mount is refused, naming the controller and the kernel option,
// and the cgroups made for the other controllers are removed. The cpuset
// hierarchy is unmounted for real, in a private mount namespace.
func TestMissingCgroupController(t *testing.T) {
	img := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n[limits]\ncpuset = \"0\"\nmemory = \"32MiB\"\npids = 8\n")
	if res := runImage(t, exec.Command(cimgRun, img, "--", "exit", "0")); res.code != 0 {
		t.Fatalf("with cpuset mounted: %+v", res)
	}
	before := counts(t)
	res := runImage(t, exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c",
		`umount -l /sys/fs/cgroup/cpuset && exec "$0" "$@"`, cimgRun, img, "--", "exit", "0"))
	want := "cgroup v1 controller cpuset is not mounted at /sys/fs/cgroup/cpuset but the manifest sets limits on it (CONFIG_CGROUP_CPUSET?"
	if res.code != 125 || !strings.Contains(res.stderr, want) {
		t.Errorf("exit %d, stderr %q; want 125 and %q", res.code, res.stderr, want)
	}
	expectCounts(t, before, "after the refused launch")
}

func TestWrongArchRefused(t *testing.T) {
	mounttest.RequireRoot(t)
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	os.MkdirAll(filepath.Join(root, "bin"), 0o755)
	os.WriteFile(filepath.Join(root, "bin/app"), []byte("#!/bin/sh\n"), 0o755)
	img := filepath.Join(dir, "arm.cimg")
	if out, err := exec.Command(cimgBuild, "-q", "--rootfs", root, "--entrypoint", "/bin/app", "--arch", "arm64", "-o", img).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	if res := runImage(t, exec.Command(cimgRun, img)); res.code != 125 || !strings.Contains(res.stderr, "built for arm64, this machine is amd64") {
		t.Errorf("%+v", res)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("timed out waiting")
}

// TestKilledLaunchesLeakNothing SIGKILLs cimg-run at random moments of
// its setup and of its hand-over to the slim waiter; the next launch
// cleans up whatever a killed one left.
func TestKilledLaunchesLeakNothing(t *testing.T) {
	img := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n[limits]\nmemory = \"32MiB\"\npids = 8\n")
	runExit0(t, img)
	before := counts(t)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 200; i++ {
		cmd := exec.Command(cimgRun, img, "--", "exit", "0")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(rng.IntN(12000)) * time.Microsecond)
		cmd.Process.Kill()
		cmd.Wait()
	}
	// And 30 killed while a running app's launcher turns into the slim
	// waiter (about 100 ms after start), or just after.
	for i := 0; i < 30; i++ {
		cmd := exec.Command(cimgRun, img, "--", "sleep")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(90+rng.IntN(70)) * time.Millisecond)
		cmd.Process.Kill()
		cmd.Wait()
	}
	// The next launch removes stale cgroups; wait for the killed
	// children's namespaces to be torn down.
	runExit0(t, img)
	expectCounts(t, before, "after 230 killed launches")
	// Orphans of a killed launcher are reaped by the host's init; give
	// it a moment, then none of ours may be left as zombies.
	z := 0
	if !settle(func() bool { z = zombies(t); return z == 0 }) {
		t.Errorf("%d cimg-run or probe zombies", z)
	}
}

// settle polls cond for up to 5 s: the kernel tears down namespaces,
// mounts and loop devices of exited processes asynchronously.
func settle(cond func() bool) bool {
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
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

func zombies(t *testing.T) int {
	n := 0
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, s := range stats {
		b, _ := os.ReadFile(s)
		i := bytes.LastIndexByte(b, ')')
		if i > 0 && len(b) > i+2 && b[i+2] == 'Z' && (bytes.Contains(b[:i], []byte("(cimg-run")) || bytes.Contains(b[:i], []byte("(probe"))) {
			n++
		}
	}
	return n
}

// TestConcurrentLaunches: 50 launches of one image at once all succeed
// (the first ones race to create the mount cache).
func TestConcurrentLaunches(t *testing.T) {
	img := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n")
	exec.Command(cimgRun, "gc").Run()
	errs := make(chan string, 50)
	for i := 0; i < 50; i++ {
		go func(i int) {
			out, err := exec.Command(cimgRun, img, "--", "exit", strconv.Itoa(i%5)).CombinedOutput()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			}
			if code != i%5 {
				errs <- fmt.Sprintf("launch %d: exit %d: %s", i, code, out)
				return
			}
			errs <- ""
		}(i)
	}
	for i := 0; i < 50; i++ {
		if e := <-errs; e != "" {
			t.Error(e)
		}
	}
}

// TestSeccompDefaultProfile: even with CAP_SYS_ADMIN kept, the default
// profile refuses unshare and keyctl; "unconfined" lets them through.
func TestSeccompDefaultProfile(t *testing.T) {
	for _, tc := range []struct{ profile, nnp, want string }{
		{"default", "true", "unshare=operation not permitted keyctl=operation not permitted"},
		{"default", "false", "unshare=operation not permitted keyctl=operation not permitted"},
		{"unconfined", "true", "unshare=ok"},
	} {
		img := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n[security]\ncapabilities = [\"CAP_SYS_ADMIN\"]\nseccomp = \""+tc.profile+"\"\nno_new_privileges = "+tc.nnp+"\n")
		res := runImage(t, exec.Command(cimgRun, img, "--", "syscalls"))
		if res.code != 0 || !strings.HasPrefix(res.stdout, tc.want) {
			t.Errorf("%s (nnp %s): %q %q, want %q", tc.profile, tc.nnp, res.stdout, res.stderr, tc.want)
		}
	}
}

func TestDoctor(t *testing.T) {
	mounttest.RequireRoot(t)
	res := runImage(t, exec.Command(cimgRun, "doctor"))
	// This machine has everything required (dm-verity is optional).
	if res.code != 0 {
		t.Errorf("doctor: exit %d\n%s", res.code, res.stdout)
	}
	for _, want := range []string{"squashfs zstd", "pid namespace", "cgroup memory", "seccomp filters", "device-mapper"} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("doctor does not report %q:\n%s", want, res.stdout)
		}
	}
	// The optional calls are probed, not guessed from the version: this
	// kernel has them, and a kernel that fails them with ENOSYS has not.
	for _, sc := range []string{"clone3", "close_range"} {
		if !regexp.MustCompile(`(?m)^` + sc + ` +ok `).MatchString(res.stdout) {
			t.Errorf("doctor on this kernel: %s not ok:\n%s", sc, res.stdout)
		}
		res := runImage(t, exec.Command(faultinject, sc+"-enosys", cimgRun, "doctor"))
		if res.code != 0 || !regexp.MustCompile(`(?m)^`+sc+` +absent \(optional\) `).MatchString(res.stdout) {
			t.Errorf("doctor with %s failing ENOSYS: exit %d\n%s%s", sc, res.code, res.stdout, res.stderr)
		}
	}
	if !regexp.MustCompile(`(?m)^pidfd_open +ok `).MatchString(res.stdout) {
		t.Errorf("doctor on this kernel: pidfd_open not ok:\n%s", res.stdout)
	}
}

// TestInitFromSealedMemfd: with --init the app is not PID 1; PID 1 runs
// from a sealed memfd whose executable cannot be written from inside
// (CVE-2019-5736), and the exit status still comes through.
func TestInitFromSealedMemfd(t *testing.T) {
	img := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n[security]\ncapabilities = [\"CAP_SYS_PTRACE\", \"CAP_DAC_OVERRIDE\"]\n")
	res := runImage(t, exec.Command(cimgRun, "--init", img, "--", "pid1"))
	if res.code != 0 || strings.HasPrefix(res.stdout, "pid=1 ") || !strings.Contains(res.stdout, " exe=/memfd:cimg-init") || strings.Contains(res.stdout, "write=writable") {
		t.Errorf("exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if res := runImage(t, exec.Command(cimgRun, "--init", img, "--", "exit", "9")); res.code != 9 {
		t.Errorf("exit status through the init: %+v", res)
	}
	// SIGTERM reaches the app through the init.
	cmd, out := startSleeping(t, "--init", img)
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	if !strings.Contains(out.String(), "got terminated") {
		t.Errorf("SIGTERM not forwarded by the init: %q", out.String())
	}
}

// TestPrivateMount: the image is mounted inside the instance only; the
// host sees no new mount and no loop device survives the launch.
func TestPrivateMount(t *testing.T) {
	img := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n")
	before := counts(t)
	for i := 0; i < 20; i++ {
		if res := runImage(t, exec.Command(cimgRun, "--private-mount", img, "--", "exit", "4")); res.code != 4 {
			t.Fatalf("%+v", res)
		}
	}
	expectCounts(t, before, "after 20 private-mount launches")
	res := runImage(t, exec.Command(cimgRun, "--private-mount", img))
	var r probeReport
	if err := json.Unmarshal([]byte(res.stdout), &r); err != nil || r.PID != 1 || r.Status["NoNewPrivs"] != "1" {
		t.Errorf("probe under --private-mount: %v %+v %s", err, r, res.stderr)
	}
}

// startSleeping starts the probe in "sleep" mode and waits until it is up.
// runExit0 runs img's probe with "exit 0" and stops the test unless it
// succeeds: the first launch of an image makes its cache mount, a later
// one removes what killed launches left.
func runExit0(t *testing.T, img string) {
	t.Helper()
	if res := runImage(t, exec.Command(cimgRun, img, "--", "exit", "0")); res.code != 0 {
		t.Fatalf("%+v", res)
	}
}

// isWaiter says whether pid is cimg-run turned into its slim waiter.
func isWaiter(pid int) bool {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return strings.Contains(string(b), "__cimg_wait__")
}

func startSleeping(t *testing.T, args ...string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(cimgRun, append(args, "--", "sleep")...)
	out := &bytes.Buffer{}
	cmd.Stdout = out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return strings.Contains(out.String(), "ready") })
	return cmd, out
}

// TestCgroupV2InVM runs the launcher on a second kernel (Debian 6.1)
// booted with cgroup_no_v1=all: real cgroup v2 limits, CLONE_INTO_CGROUP,
// the OOM report and cleanup, which this hybrid host cannot show.
func TestCgroupV2InVM(t *testing.T) {
	img := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n[limits]\nmemory = \"48MiB\"\npids = 16\ncpu = 0.5\n")
	out := vmtest.Run(t, map[string]string{"/cimg-run": cimgRun, "/probe.cimg": img, "/faultinject": faultinject}, `
/faultinject clone3-enosys /cimg-run /probe.cimg -- hog; echo "HOG-NOCLONE3-EXIT $?"
/cimg-run /probe.cimg > /tmp/probe.json; echo "PROBE-EXIT $?"; cat /tmp/probe.json
/cimg-run /probe.cimg -- sleep > /tmp/sleep.out &
pid=$!
sleep 2
for f in memory.max pids.max cpu.max; do echo "LIMIT $f=$(cat /sys/fs/cgroup/cimg/probe-*/$f)"; done
kill -USR1 $pid; wait $pid; echo "SLEEP-EXIT $?"
/cimg-run /probe.cimg -- hog; echo "HOG-EXIT $?"
echo "LEFT $(ls /sys/fs/cgroup/cimg/ | grep -c probe-)"
`)
	for _, want := range []string{"PROBE-EXIT 0", "LIMIT memory.max=50331648", "LIMIT pids.max=16", "LIMIT cpu.max=50000 100000",
		"SLEEP-EXIT 0", "HOG-EXIT 137", "killed by the OOM killer", "LEFT 0",
		"HOG-NOCLONE3-EXIT 137"} { // without clone3 (Linux < 5.3): joined by cgroup.procs, limits hold
		if !strings.Contains(out, want) {
			t.Errorf("VM output lacks %q:\n%s", want, out)
		}
	}
	var r probeReport
	if i := strings.Index(out, "{"); i >= 0 {
		json.NewDecoder(strings.NewReader(out[i:])).Decode(&r)
	}
	if r.PID != 1 || r.Cgroup != "0::/" || r.Status["Seccomp"] != "2" {
		t.Errorf("probe in the VM: pid %d, cgroup %q, seccomp %q", r.PID, r.Cgroup, r.Status["Seccomp"])
	}
}

// TestLauncherInVM runs the launcher's isolation, init, private-mount,
// overlay and seccomp cases on the second kernel too, and checks that a
// run leaves no mount, loop device or cgroup behind there.
func TestLauncherInVM(t *testing.T) {
	img := probeImage(t, `hostname = "vm-probe"
[app]
command = ["/usr/bin/probe"]
user = 1000
group = 1000
[security]
capabilities = ["CAP_NET_RAW"]
[limits]
pids = 32
`)
	ovl := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n[[mounts]]\ntype = \"overlay\"\ntarget = \"/etc\"\n")
	out := vmtest.Run(t, map[string]string{"/cimg-run": cimgRun, "/probe.cimg": img, "/ovl.cimg": ovl}, `
/cimg-run /probe.cimg -- exit 0; /cimg-run /ovl.cimg -- exit 0  # the cache mounts, meant to stay
m0=$(wc -l < /proc/self/mountinfo); l0=$(losetup -a | wc -l)
/cimg-run /probe.cimg > /tmp/probe.json; echo "PROBE-EXIT $?"; cat /tmp/probe.json; echo
/cimg-run /probe.cimg -- syscalls
/cimg-run /ovl.cimg -- write /etc/x y
/cimg-run --private-mount /probe.cimg -- read /usr/bin/probe
/cimg-run --init /probe.cimg -- pid1
/cimg-run /probe.cimg -- exit 7; echo "EXIT $?"
echo "MOUNTS-DIFF $(( $(wc -l < /proc/self/mountinfo) - m0 )) LOOPS-DIFF $(( $(losetup -a | wc -l) - l0 ))"
echo "CGROUPS-LEFT $(ls /sys/fs/cgroup/cimg/ | grep -c probe-)"
`)
	for _, want := range []string{"PROBE-EXIT 0", "unshare=operation not permitted keyctl=operation not permitted",
		"wrote /etc/x", "read /usr/bin/probe:", "exe=/memfd:cimg-init", "EXIT 7", "MOUNTS-DIFF 0 LOOPS-DIFF 0", "CGROUPS-LEFT 0"} {
		if !strings.Contains(out, want) {
			t.Errorf("VM output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "write=writable") {
		t.Errorf("the init's executable was writable from inside:\n%s", out)
	}
	var r probeReport
	if i := strings.Index(out, "{"); i >= 0 {
		json.NewDecoder(strings.NewReader(out[i:])).Decode(&r)
	}
	if r.PID != 1 || fmt.Sprint(r.IDs) != "[1000 1000 1000 1000]" || r.Hostname != "vm-probe" ||
		r.Status["CapEff"] != "0000000000002000" || r.Status["CapBnd"] != "0000000000002000" || r.Status["NoNewPrivs"] != "1" {
		t.Errorf("probe in the VM: %+v", r)
	}
}

// TestMissingCgroupControllerInVM: on a cgroup v2 kernel booted with the
// memory controller disabled, a memory limit is refused with advice and
// leaves no cgroup; an image without one still runs.
func TestMissingCgroupControllerInVM(t *testing.T) {
	limited := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n[limits]\nmemory = \"32MiB\"\n")
	plain := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n")
	out := vmtest.Run(t, map[string]string{"/cimg-run": cimgRun, "/limited.cimg": limited, "/plain.cimg": plain}, `
/cimg-run /limited.cimg -- exit 0; echo "LIMITED-EXIT $?"
/cimg-run /plain.cimg -- exit 0; echo "PLAIN-EXIT $?"
echo "CGROUPS-LEFT $(ls /sys/fs/cgroup/cimg/ | grep -c probe-)"
`, "cgroup_disable=memory")
	for _, want := range []string{"cgroup v2 controller memory is not available", "LIMITED-EXIT 125", "PLAIN-EXIT 0", "CGROUPS-LEFT 0"} {
		if !strings.Contains(out, want) {
			t.Errorf("VM output lacks %q:\n%s", want, out)
		}
	}
}

// TestDMVerityInVM: where the kernel has device-mapper, the image is
// mounted through dm-verity set up from Go, so a tampered block reaches
// the app as an error — EIO from read(2), SIGBUS for a mapped page of a
// program — never as bad data; the device goes away with the mount.
func TestDMVerityInVM(t *testing.T) {
	mounttest.RequireRoot(t)
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	os.MkdirAll(filepath.Join(root, "usr/bin"), 0o755)
	os.MkdirAll(filepath.Join(root, "data"), 0o755)
	pb, _ := os.ReadFile(probe)
	os.WriteFile(filepath.Join(root, "usr/bin/probe"), pb, 0o755)
	blob := make([]byte, 1<<20)
	rand.NewChaCha8([32]byte{3}).Read(blob) // incompressible: stored verbatim
	os.WriteFile(filepath.Join(root, "data/blob"), blob, 0o644)
	img := filepath.Join(dir, "good.cimg")
	if out, err := exec.Command(cimgBuild, "-q", "--rootfs", root, "--entrypoint", "/usr/bin/probe", "-o", img).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	b, _ := os.ReadFile(img)
	at := bytes.Index(b, blob[500000:500064])
	if at < 0 {
		t.Fatal("blob not found verbatim in the image")
	}
	readBad := append([]byte(nil), b...)
	readBad[at] ^= 0x55 // a block of /data/blob
	execBad := append([]byte(nil), b...)
	execBad[at+548576+100000] ^= 0x55 // past the blob: the probe's pages
	for name, data := range map[string][]byte{"read-bad.cimg": readBad, "exec-bad.cimg": execBad} {
		os.WriteFile(filepath.Join(dir, name), data, 0o644)
	}
	out := vmtest.Run(t, map[string]string{"/cimg-run": cimgRun, "/good.cimg": img,
		"/read-bad.cimg": filepath.Join(dir, "read-bad.cimg"), "/exec-bad.cimg": filepath.Join(dir, "exec-bad.cimg")}, `
/cimg-run /read-bad.cimg -- read /data/blob; echo "READ-BAD-EXIT $?"
echo "DM-NAME $(cat /sys/block/dm-*/dm/name)"
/cimg-run gc >/dev/null; sleep 1; echo "DM-AFTER-GC $(ls /sys/block | grep -c dm-)"
/cimg-run /exec-bad.cimg -- exit 3; echo "EXEC-BAD-EXIT $?"
/cimg-run gc >/dev/null; sleep 1
/cimg-run /good.cimg -- read /data/blob; echo "GOOD-EXIT $?"
/cimg-run gc >/dev/null; sleep 1; echo "DM-END $(ls /sys/block | grep -c dm-) LOOPS $(cat /sys/block/loop*/loop/backing_file 2>/dev/null | wc -l)"
`)
	for _, want := range []string{"read /data/blob: input/output error", "READ-BAD-EXIT 1", "DM-NAME cimg-", "DM-AFTER-GC 0",
		"read /data/blob: 1048576 bytes", "GOOD-EXIT 0", "DM-END 0 LOOPS 0"} {
		if !strings.Contains(out, want) {
			t.Errorf("VM output lacks %q:\n%s", want, out)
		}
	}
	// A bad page of the program itself: SIGBUS (128+7) or, if the kernel
	// reads it through read(2) at exec, a failed exec (125).
	if !strings.Contains(out, "EXEC-BAD-EXIT 135") && !strings.Contains(out, "EXEC-BAD-EXIT 125") {
		t.Errorf("tampered program page: %s", out)
	}
}

// TestWorkdirEscapesRefused: a working directory that leads out of the
// image — through a leaked fd's /proc magic link, or a symlink in the
// image — is refused, never entered (CVE-2024-21626).
func TestWorkdirEscapesRefused(t *testing.T) {
	mounttest.RequireRoot(t)
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	os.MkdirAll(filepath.Join(root, "usr/bin"), 0o755)
	pb, _ := os.ReadFile(probe)
	os.WriteFile(filepath.Join(root, "usr/bin/probe"), pb, 0o755)
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.Symlink("/etc", filepath.Join(root, "wd-link")) // absolute: inside the image, /etc
	os.Symlink("../../../../..", filepath.Join(root, "usr/up"))
	build := func(workdir string) (string, string) {
		mf := filepath.Join(dir, "m.toml")
		os.WriteFile(mf, []byte("name = \"wd\"\n[app]\ncommand = [\"/usr/bin/probe\"]\nworkdir = \""+workdir+"\"\n"), 0o644)
		img := filepath.Join(dir, strings.ReplaceAll(workdir, "/", "_")+".cimg")
		out, err := exec.Command(cimgBuild, "-q", "-f", mf, "--rootfs", root, "--entrypoint", "/usr/bin/probe", "-o", img).CombinedOutput()
		if err != nil {
			return "", string(out)
		}
		return img, ""
	}
	// Caught at build time by the manifest rules.
	for _, wd := range []string{"/proc/self/fd/7", "/usr/../..", "relative"} {
		if _, out := build(wd); out == "" {
			t.Errorf("workdir %q built", wd)
		}
	}
	// Symlinks are only known at run time: the launcher checks where chdir
	// really landed.
	for _, wd := range []string{"/wd-link", "/usr/up"} {
		img, out := build(wd)
		if img == "" {
			t.Fatalf("build with workdir %s: %s", wd, out)
		}
		cmd := exec.Command(cimgRun, img, "--", "exit", "0")
		for i := 0; i < 8; i++ {
			f, _ := os.Open("/")
			defer f.Close()
			cmd.ExtraFiles = append(cmd.ExtraFiles, f)
		}
		res := runImage(t, cmd)
		if res.code != 125 || !strings.Contains(res.stderr, "refused") {
			t.Errorf("workdir %s: %+v", wd, res)
		}
	}
}

// TestCrossCompiles: cimg-run stays a static binary for the devices'
// arches (CGO_ENABLED=0, GOARCH=arm/arm64).
func TestCrossCompiles(t *testing.T) {
	for _, arch := range []string{"arm", "arm64"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(t.TempDir(), "cimg-run"), ".")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch, "GOARM=7")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("GOARCH=%s: %v\n%s", arch, err, out)
		}
	}
}

// TestSignalsAcrossWaiterExec sends SIGTERM around the moment the
// launcher replaces itself with the slim waiter. None may be lost (a lost
// one leaves the app running and cimg-run waiting for ever): each either
// reaches the app, or, in the few milliseconds before the new process
// can take it in (launcher/wait.go), ends cimg-run and the app with it;
// the next launch then removes what that one left. Every other app
// ignores SIGTERM: the stop timeout must still end it, so the deadline
// must cross the exec too.
func TestSignalsAcrossWaiterExec(t *testing.T) {
	img := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n[limits]\npids = 16\n")
	runExit0(t, img) // the cache mount
	before := counts(t)
	// When the exec happens, measured from start (it follows a fixed
	// poll of the app, so it varies little between launches).
	var at []time.Duration
	for range 5 {
		cmd := exec.Command(cimgRun, img, "--", "sleep")
		start := time.Now()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		for !isWaiter(cmd.Process.Pid) {
			time.Sleep(100 * time.Microsecond)
		}
		at = append(at, time.Since(start))
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}
	slices.Sort(at)
	lo, hi := at[0]-10*time.Millisecond, at[len(at)-1]+2*time.Millisecond
	var graceful, timedOut, hard int
	for i := range 60 {
		mode := []string{"sleep", "deaf"}[i%2]
		cmd := exec.Command(cimgRun, "--stop-timeout=300ms", img, "--", mode)
		out := &bytes.Buffer{}
		cmd.Stdout = out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(lo + time.Duration(rand.Int64N(int64(hi-lo))))
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
			ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
			switch {
			case mode == "sleep" && ws.Exited() && ws.ExitStatus() == 0 && strings.Contains(out.String(), "got terminated"):
				graceful++
			case mode == "deaf" && ws.Exited() && ws.ExitStatus() == 128+int(syscall.SIGKILL):
				timedOut++
			case ws.Signaled() && ws.Signal() == syscall.SIGTERM:
				hard++
				procs := fmt.Sprintf("/sys/fs/cgroup/pids/cimg/probe-%d/cgroup.procs", cmd.Process.Pid)
				waitFor(t, func() bool { b, _ := os.ReadFile(procs); return len(b) == 0 })
			default:
				t.Errorf("launch %d (%s): %v, %q", i, mode, cmd.ProcessState, out.String())
			}
		case <-time.After(5 * time.Second):
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
			t.Errorf("launch %d (%s): SIGTERM lost (waiter: %v, app said %q)\n%s", i, mode, isWaiter(cmd.Process.Pid), out.String(),
				regexp.MustCompile(`(?m)^(Threads|Sig|Shd).*\n`).FindAll(b, -1))
			cmd.Process.Kill()
			<-done
		}
	}
	t.Logf("exec at %v–%v after start; SIGTERM sent in %v–%v: %d reached the app, %d apps ignoring it were killed at the stop timeout, %d ended cimg-run",
		at[0], at[len(at)-1], lo, hi, graceful, timedOut, hard)
	runExit0(t, img) // removes stale cgroups
	expectCounts(t, before, "after the signalled launches")
}

// TestWaiterAsksForSignalsFirst: the slim waiter dies of a stop signal
// until package earlysig asks for them, so that package must be
// initialised the moment os/signal is (an import added to it, or a
// package name sorting before it, would move it later).
func TestWaiterAsksForSignalsFirst(t *testing.T) {
	cmd := exec.Command(cimgRun, "__cimg_wait__")
	cmd.Env = append(os.Environ(), "GODEBUG=inittrace=1")
	out, _ := cmd.CombinedOutput() // no app to wait for: it fails, after its inits
	var order []string
	for _, m := range regexp.MustCompile(`(?m)^init (\S+) @`).FindAllStringSubmatch(string(out), -1) {
		order = append(order, m[1])
	}
	i := slices.Index(order, "os/signal")
	if i < 0 || i+1 >= len(order) || order[i+1] != "cimg.dev/cimg/internal/earlysig" {
		t.Errorf("package initialisation order %v: want cimg.dev/cimg/internal/earlysig right after os/signal\n%s", order, out)
	}
}
