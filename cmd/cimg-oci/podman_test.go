package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestPodmanRunRm: podman run --rm --rootfs with cimg-oci as the runtime:
// the app runs as pid 1 of its namespaces with podman's capabilities,
// podman's default seccomp profile loaded, its hostname; its exit status
// is podman's; a command that is not there is 127, as with runc.
func TestPodmanRunRm(t *testing.T) {
	p := newPodman(t)
	r := p.podRun([]string{"--rm", "--hostname", "oci-probe"})
	if r.code != 0 {
		t.Fatalf("podman run: %d\n%s", r.code, r.stderr)
	}
	rep := parseReport(t, r.stdout)
	if rep.PID != 1 {
		t.Errorf("pid %d, want 1 (a pid namespace of its own)", rep.PID)
	}
	if rep.Hostname != "oci-probe" {
		t.Errorf("hostname %q, want oci-probe", rep.Hostname)
	}
	if rep.Status["Seccomp"] != "2" {
		t.Errorf("Seccomp %q, want 2: podman's default profile is not loaded", rep.Status["Seccomp"])
	}
	// podman's default capabilities: CHOWN DAC_OVERRIDE FOWNER FSETID KILL
	// NET_BIND_SERVICE SETFCAP SETGID SETPCAP SETUID SYS_CHROOT.
	if got := rep.Status["CapBnd"]; got != "00000000800405fb" {
		t.Errorf("CapBnd %s, want podman's default 00000000800405fb", got)
	}
	if rep.NoFile[1] != 1024 {
		t.Errorf("nofile hard %d, want 1024 (--ulimit)", rep.NoFile[1])
	}
	for _, m := range []string{"/proc/timer_list", "/proc/keys", "/sys/firmware", "/proc/sys"} {
		found := false
		for _, have := range rep.Mounts {
			found = found || have == m
		}
		if !found {
			t.Errorf("%s is not masked or read-only (mounts: %v)", m, rep.Mounts)
		}
	}
	for _, code := range []string{"0", "3", "42"} {
		if r := p.podRun([]string{"--rm"}, "exit", code); r.stderr != "" || code != strconv.Itoa(r.code) {
			t.Errorf("exit %s: podman's status %d, stderr %q", code, r.code, r.stderr)
		}
	}
	if r := p.podRun([]string{"--rm", "--entrypoint", "/bin/nothing"}); r.code != 127 || !strings.Contains(r.stderr, "no such file") {
		t.Errorf("a missing command: status %d (want 127), stderr %q", r.code, r.stderr)
	}
}

// TestPodmanDetached: run -d, ps, logs, exec (exit status, same pid
// namespace), kill with a signal the app catches, stop.
func TestPodmanDetached(t *testing.T) {
	p := newPodman(t)
	id := sleeping(t, p)
	if ps := p.run("ps", "--no-trunc"); !strings.Contains(ps.stdout, id) || !strings.Contains(ps.stdout, "Up ") {
		t.Errorf("podman ps does not show it up:\n%s", ps.stdout)
	}
	if r := p.run("exec", id, "/bin/app", "exit", "5"); r.code != 5 {
		t.Errorf("podman exec ... exit 5: status %d\n%s", r.code, r.stderr)
	}
	r := p.run("exec", id, "/bin/app")
	if r.code != 0 {
		t.Fatalf("podman exec: %d\n%s", r.code, r.stderr)
	}
	rep := parseReport(t, r.stdout)
	if rep.PID == 1 || rep.Status["Seccomp"] != "2" || rep.Status["CapBnd"] != "00000000800405fb" {
		t.Errorf("exec'd process: pid %d, Seccomp %s, CapBnd %s: want another pid of the container's namespace, its seccomp and capabilities",
			rep.PID, rep.Status["Seccomp"], rep.Status["CapBnd"])
	}
	if r := p.run("kill", "--signal", "USR1", id); r.code != 0 {
		t.Fatalf("podman kill: %d\n%s", r.code, r.stderr)
	}
	waitLog(t, p, id, "got user defined signal 1")
	waitExited(t, p, id, "0")

	// stop: SIGTERM, which the app catches and exits on.
	r = p.podRun([]string{"-d"}, "sleep")
	id = strings.TrimSpace(r.stdout)
	waitLog(t, p, id, "ready")
	if r := p.run("stop", "-t", "20", id); r.code != 0 {
		t.Fatalf("podman stop: %d\n%s", r.code, r.stderr)
	}
	waitLog(t, p, id, "got terminated")
	waitExited(t, p, id, "0")
}

// sleeping starts the probe detached (podman run -d), sleeping until a
// signal, and returns its id once it says it is ready.
func sleeping(t *testing.T, p *podmanEnv) string {
	t.Helper()
	r := p.podRun([]string{"-d"}, "sleep")
	if r.code != 0 {
		t.Fatalf("podman run -d: %d\n%s", r.code, r.stderr)
	}
	id := strings.TrimSpace(r.stdout)
	waitLog(t, p, id, "ready")
	return id
}

func waitLog(t *testing.T, p *podmanEnv, id, want string) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); ; {
		r := p.run("logs", id)
		if strings.Contains(r.stdout, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("podman logs %s: no %q in a minute:\n%s%s", id, want, r.stdout, r.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func waitExited(t *testing.T, p *podmanEnv, id, code string) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); ; {
		r := p.run("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", id)
		if strings.TrimSpace(r.stdout) == "exited "+code {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("podman inspect %s: %q, want exited %s", id, r.stdout, code)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestPodmanTTY: podman run -it under a pseudo-terminal (script(1)): the
// app's stdio is a terminal of the container's devpts, passed to conmon
// through --console-socket, and what it writes reaches podman's
// terminal. (The app keeps running while it is checked: podman and
// conmon may drop the last output of a process that exits at once, with
// runc too — 8 of 10 runs here.)
func TestPodmanTTY(t *testing.T) {
	p := newPodman(t)
	if _, err := exec.LookPath("script"); err != nil {
		t.Fatal("script(1) is not installed (bsdutils)")
	}
	args := append(append([]string{"podman"}, p.args...), "run", "--rm", "-it", "--name", "tty-test")
	args = append(append(args, runFlags...), "--rootfs", p.rootfs, "/bin/app", "sleep")
	out := filepath.Join(t.TempDir(), "out")
	f, _ := os.Create(out)
	defer f.Close()
	c := exec.Command("script", "-qfec", strings.Join(args, " "), "/dev/null")
	c.Stdout, c.Stderr = f, f
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	defer func() {
		c.Process.Kill()
		<-done
	}()
	for deadline := time.Now().Add(time.Minute); ; {
		if b, _ := os.ReadFile(out); strings.Contains(string(b), "ready") {
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(out)
			t.Fatalf("podman run -it: no \"ready\" on its terminal in a minute:\n%s", b)
		}
		time.Sleep(20 * time.Millisecond)
	}
	r := p.run("exec", "tty-test", "/bin/app", "show", "/proc/1/fd/0", "/proc/1/fd/2")
	if !strings.Contains(r.stdout, "/proc/1/fd/0=/dev/pts/0") || !strings.Contains(r.stdout, "/proc/1/fd/2=/dev/pts/0") {
		t.Errorf("the app's stdio is not the container's terminal:\n%s%s", r.stdout, r.stderr)
	}
	if r := p.run("kill", "--signal", "TERM", "tty-test"); r.code != 0 {
		t.Fatalf("podman kill: %s", r.stderr)
	}
	select {
	case err := <-done:
		done <- err
		if err != nil {
			t.Errorf("podman run -it: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("podman run -it: no end a minute after the app was killed")
	}
	if b, _ := os.ReadFile(out); !strings.Contains(string(b), "got terminated") {
		t.Logf("podman's terminal (the last line may be dropped, see above):\n%s", b)
	}
}

// TestPodmanCgroupLimits: --memory and --pids-limit land in the
// container's v1 cgroups, which it sees as its /sys/fs/cgroup.
func TestPodmanCgroupLimits(t *testing.T) {
	p := newPodman(t)
	r := p.podRun([]string{"--rm", "--memory", "64m", "--pids-limit", "50"}, "show",
		"/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/pids/pids.max", "/proc/self/cgroup")
	if r.code != 0 {
		t.Fatalf("podman run: %d\n%s", r.code, r.stderr)
	}
	for _, want := range []string{"memory.limit_in_bytes=67108864", "pids.max=50"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("no %s in the container's cgroup:\n%s", want, r.stdout)
		}
	}
	// And on the host, in the cgroup podman named.
	r = p.podRun([]string{"-d", "--memory", "32m", "--pids-limit", "20"}, "sleep")
	if r.code != 0 {
		t.Fatalf("podman run -d: %d\n%s", r.code, r.stderr)
	}
	id := strings.TrimSpace(r.stdout)
	for file, want := range map[string]string{"memory/libpod_parent/libpod-" + id + "/memory.limit_in_bytes": "33554432",
		"pids/libpod_parent/libpod-" + id + "/pids.max": "20"} {
		b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", file))
		if err != nil || strings.TrimSpace(string(b)) != want {
			t.Errorf("%s: %q %v, want %s", file, b, err, want)
		}
	}
}

// TestPodmanUserNamespace: --uidmap/--gidmap: the app is root of a user
// namespace whose 0 is host 100000; several ranges are mapped as given.
func TestPodmanUserNamespace(t *testing.T) {
	p := newPodman(t)
	r := p.podRun([]string{"--rm", "--uidmap", "0:100000:65536", "--gidmap", "0:100000:65536"}, "show", "/proc/self/uid_map", "/proc/self/gid_map")
	if r.code != 0 {
		t.Fatalf("podman run --uidmap: %d\n%s", r.code, r.stderr)
	}
	for _, want := range []string{"uid_map=0 100000 65536", "gid_map=0 100000 65536"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("no %q:\n%s", want, r.stdout)
		}
	}
	// Several ranges: the kernel's map has a line (33 bytes) for each.
	r = p.podRun([]string{"--rm", "--uidmap", "0:100000:1000", "--uidmap", "1000:300000:64536", "--gidmap", "0:100000:65536"},
		"read", "/proc/self/uid_map")
	if r.code != 0 || !strings.Contains(r.stdout, "read /proc/self/uid_map: 66 bytes") {
		t.Errorf("podman run with two uid ranges: %d %q %s", r.code, r.stdout, r.stderr)
	}
	// podman exec joins that user namespace too, as any user of it.
	r = p.podRun([]string{"-d", "--uidmap", "0:100000:65536", "--gidmap", "0:100000:65536"}, "sleep")
	if r.code != 0 {
		t.Fatalf("podman run -d --uidmap: %d\n%s", r.code, r.stderr)
	}
	id := strings.TrimSpace(r.stdout)
	waitLog(t, p, id, "ready")
	if r := p.run("exec", id, "/bin/app", "show", "/proc/self/uid_map"); !strings.Contains(r.stdout, "uid_map=0 100000 65536") {
		t.Errorf("podman exec in a user namespace: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := p.run("exec", "--user", "1000", id, "/bin/app", "euid"); strings.TrimSpace(r.stdout) != "1000" {
		t.Errorf("podman exec --user 1000: %d %q %s", r.code, r.stdout, r.stderr)
	}
}

// TestPodmanSeccompProfile: a seccomp profile from the command line
// reaches the app: mkdir denied with EPERM, the rest allowed.
func TestPodmanSeccompProfile(t *testing.T) {
	p := newPodman(t)
	prof := filepath.Join(t.TempDir(), "deny-mkdir.json")
	os.WriteFile(prof, []byte(`{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]}`), 0o644)
	r := p.podRun([]string{"--rm", "--security-opt", "seccomp=" + prof}, "mkdir", "/bin")
	if !strings.Contains(r.stdout, "operation not permitted") {
		t.Errorf("mkdir under a profile denying it: status %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = p.podRun([]string{"--rm"}, "mkdir", "/bin")
	if !strings.Contains(r.stdout, "/bin ok") {
		t.Errorf("mkdir under podman's default profile: status %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// TestPodmanPauseUnpause: podman pause and unpause go through cimg-oci's
// pause and resume, podman reads "paused" back from its state, and
// podman rm -f takes a paused container.
func TestPodmanPauseUnpause(t *testing.T) {
	p := newPodman(t)
	id := sleeping(t, p)
	if r := p.run("pause", id); r.code != 0 {
		t.Fatalf("podman pause: %d\n%s", r.code, r.stderr)
	}
	if r := p.run("inspect", "--format", "{{.State.Status}}", id); strings.TrimSpace(r.stdout) != "paused" {
		t.Errorf("podman inspect after pause: %q %s", r.stdout, r.stderr)
	}
	if r := p.run("unpause", id); r.code != 0 {
		t.Fatalf("podman unpause: %d\n%s", r.code, r.stderr)
	}
	if r := p.run("inspect", "--format", "{{.State.Status}}", id); strings.TrimSpace(r.stdout) != "running" {
		t.Errorf("podman inspect after unpause: %q %s", r.stdout, r.stderr)
	}
	if r := p.run("exec", id, "/bin/app", "exit", "3"); r.code != 3 {
		t.Errorf("podman exec after unpause: %d\n%s", r.code, r.stderr)
	}
	if r := p.run("pause", id); r.code != 0 {
		t.Fatalf("podman pause again: %d\n%s", r.code, r.stderr)
	}
	if r := p.run("rm", "-f", id); r.code != 0 {
		t.Fatalf("podman rm -f of a paused container: %d\n%s", r.code, r.stderr)
	}
}
