package main

// Tests of `cimg-run exec`: a process inside a running instance that is
// the app's equal in every confinement, and no way out.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"
)

// exSub runs `cimg-run SUB --state-dir STATE ARGS...` (run also gets the
// test's volume directory) and returns its result.
func exSub(t *testing.T, state, sub string, args ...string) result {
	t.Helper()
	return runImage(t, exCmd(state, sub, args...))
}

func exCmd(state, sub string, args ...string) *exec.Cmd {
	argv := []string{sub, "--state-dir", state}
	if sub == "run" {
		argv = append(argv, "--volume-dir", volumeDir(state))
	}
	return exec.Command(cimgRun, append(argv, args...)...)
}

// exStart starts a detached instance NAME of img with args, stopped at
// the end of the test.
func exStart(t *testing.T, state, name string, args ...string) {
	t.Helper()
	res := exSub(t, state, "run", append([]string{"-d", "--name", name}, args...)...)
	if res.code != 0 || strings.TrimSpace(res.stdout) != name {
		t.Fatalf("run -d --name %s: %+v", name, res)
	}
	t.Cleanup(func() { exSub(t, state, "stop", "-t", "2", name) })
}

// exState is the instance's state.json.
func exState(t *testing.T, state, name string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(state, "instances", name, "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// exLog waits for a line containing want in the instance's log.
func exLog(t *testing.T, state, name, want string) string {
	t.Helper()
	var log string
	if !settle(func() bool {
		b, _ := os.ReadFile(filepath.Join(state, "instances", name, "log"))
		log = string(b)
		return strings.Contains(log, want)
	}) {
		t.Fatalf("instance %s's log has no %q: %q", name, want, log)
	}
	return log
}

// confinedManifest asks for what exec must reproduce: a user and groups,
// an environment, a working directory, rlimits, a kept capability,
// seccomp and no_new_privs (the defaults), limits.
const confinedManifest = `[app]
command = ["/usr/bin/probe"]
user = 1000
group = 1000
groups = [2000, 2001]
workdir = "/tmp"
env = { FOO = "bar" }
[limits]
memory = "64MiB"
pids = 64
rlimits = { nofile = { soft = 100, hard = 200 }, core = { soft = 0, hard = 0 } }
`

// TestExecSeesWhatTheAppSees: the probe run through exec reports exactly
// what the app reported of itself: namespaces, cgroup, ids and groups,
// capability sets, no_new_privs, seccomp, rlimits, environment, working
// directory, hostname and mounts — with and without a user namespace.
func TestExecSeesWhatTheAppSees(t *testing.T) {
	for _, tc := range []struct{ name, extra string }{
		{"plain", ""},
		{"userns", "[namespaces]\nuser = true\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			state := stateDir(t)
			img := probeImage(t, confinedManifest+tc.extra)
			exStart(t, state, "same", img, "--", "report-sleep")
			log := exLog(t, state, "same", "}\n")
			var app, via probeReport
			if err := json.Unmarshal([]byte(strings.TrimSpace(log)), &app); err != nil {
				t.Fatalf("the app's report: %v: %q", err, log)
			}
			res := exSub(t, state, "exec", "same", "--", "probe")
			if res.code != 0 {
				t.Fatalf("exec: %+v", res)
			}
			if err := json.Unmarshal([]byte(res.stdout), &via); err != nil {
				t.Fatalf("exec's report: %v: %q", err, res.stdout)
			}
			if len(app.NS) != 7 || app.NS["mnt"] == "" {
				t.Fatalf("the app reports no namespaces: %v", app.NS)
			}
			same := func(what string, a, b any) {
				if !reflect.DeepEqual(a, b) {
					t.Errorf("%s: the app has %v, exec %v", what, a, b)
				}
			}
			same("namespaces", app.NS, via.NS)
			same("cgroup", app.Cgroup, via.Cgroup)
			same("ids", app.IDs, via.IDs)
			same("groups", app.Groups, via.Groups)
			same("capabilities, no_new_privs, seccomp", app.Status, via.Status)
			same("nofile", app.NoFile[1], via.NoFile[1])
			same("core", app.Core, via.Core)
			same("environment", app.Env, via.Env)
			same("cwd", app.Cwd, via.Cwd)
			same("hostname", app.Hostname, via.Hostname)
			same("mounts", app.Mounts, via.Mounts)
			same("writes refused", app.WriteErrors, via.WriteErrors)
			if via.IDs[1] != 1000 || via.Status["NoNewPrivs"] != "1" || via.Status["Seccomp"] != "2" || via.Cwd != "/tmp" {
				t.Errorf("exec's process is not confined as the manifest says: ids %v, status %v, cwd %s", via.IDs, via.Status, via.Cwd)
			}
			// Seen from the host: in the instance's cgroup.
			pid := int(exState(t, state, "same")["pid"].(float64))
			if via.PID == 1 || via.PID == pid {
				t.Errorf("exec's process has pid %d in the instance", via.PID)
			}
		})
	}
}

// TestExecExitStatus: the command's status is exec's, a signal's as 128+N;
// a missing command is cimg-run's failure (125) naming it; env and PATH
// lookups work.
func TestExecExitStatus(t *testing.T) {
	state := stateDir(t)
	img := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\nenv = { PATH = \"/usr/bin\" }\n")
	exStart(t, state, "st", img, "--", "sleep")
	if res := exSub(t, state, "exec", "st", "--", "probe", "exit", "7"); res.code != 7 {
		t.Errorf("exit 7 through exec: %+v", res)
	}
	if res := exSub(t, state, "exec", "st", "/usr/bin/probe", "exit", "0"); res.code != 0 {
		t.Errorf("exit 0 through exec: %+v", res)
	}
	res := exSub(t, state, "exec", "st", "--", "no-such-command")
	if res.code != 125 || !strings.Contains(res.stderr, "no-such-command") {
		t.Errorf("a missing command: %+v", res)
	}
	res = exSub(t, state, "exec", "-e", "FOO=exec", "st", "--", "probe", "show", "/proc/self/environ")
	if !strings.Contains(res.stdout, "FOO=exec") {
		t.Errorf("-e FOO=exec: %+v", res)
	}
	// A command killed by a signal: 128+9.
	cmd := exCmd(state, "exec", "st", "--", "probe", "deaf")
	var out bytes.Buffer
	cmd.Stdout = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if !settle(func() bool { return strings.Contains(out.String(), "ready") }) {
		t.Fatalf("the exec'd probe never got ready: %q", out.String())
	}
	cmd.Process.Signal(syscall.SIGKILL) // the exec CLI; its child dies of the parent-death signal
	cmd.Wait()
	if res := exSub(t, state, "exec", "st", "--", "probe", "show", "/proc/2/status", "/proc/3/status"); strings.Contains(res.stdout, "deaf") {
		t.Errorf("the exec'd process outlived its exec command: %s", res.stdout)
	}
	if res := exSub(t, state, "exec", "nope", "--", "probe"); res.code != 125 || !strings.Contains(res.stderr, `no instance "nope"`) {
		t.Errorf("exec into no instance: %+v", res)
	}
}

// TestExecRelaysSignals: SIGTERM and SIGUSR1 sent to cimg-run exec reach
// the command (the probe prints which one it got and exits 0), and exec's
// status is the command's; SIGINT and SIGHUP reach a command that does not
// catch them, which dies of them (128+N).
func TestExecRelaysSignals(t *testing.T) {
	state := stateDir(t)
	img := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n")
	exStart(t, state, "sig", img, "--", "sleep")
	for _, tc := range []struct {
		sig  syscall.Signal
		mode string // probe's
		out  string // what it prints last
		code int
	}{
		{syscall.SIGTERM, "sleep", "got terminated", 0},
		{syscall.SIGUSR1, "sleep", "got user defined signal 1", 0},
		{syscall.SIGINT, "deaf", "ready", 128 + int(syscall.SIGINT)},
		{syscall.SIGHUP, "deaf", "ready", 128 + int(syscall.SIGHUP)},
	} {
		cmd := exCmd(state, "exec", "sig", "--", "/usr/bin/probe", tc.mode)
		var out bytes.Buffer
		cmd.Stdout = &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if !settle(func() bool { return strings.Contains(out.String(), "ready") }) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("the exec'd probe never got ready: %q", out.String())
		}
		cmd.Process.Signal(tc.sig)
		if !endsWithin(cmd, 30*time.Second, nil) {
			t.Fatalf("%v: cimg-run exec did not end", tc.sig)
		}
		ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
		if ws.Signaled() {
			t.Errorf("%v killed cimg-run exec itself instead of reaching the command", tc.sig)
			continue
		}
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		if ws.ExitStatus() != tc.code || lines[len(lines)-1] != tc.out {
			t.Errorf("%v to cimg-run exec: exit %d, output %q; want exit %d after %q", tc.sig, ws.ExitStatus(), out.String(), tc.code, tc.out)
		}
	}
}

// endsWithin waits up to d for the started cmd to end; if it does not, it
// calls before (if not nil, to look at it), kills it and returns false.
func endsWithin(cmd *exec.Cmd, d time.Duration, before func()) bool {
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		if before != nil {
			before()
		}
		cmd.Process.Kill()
		<-done
		return false
	}
}

// TestExecIgnoredSignalsNotInherited: a cimg-run exec started with SIGHUP
// and SIGINT ignored (by nohup, or as a shell's background job) still
// gives its command their default dispositions, so a relayed SIGHUP ends
// it. CI once saw the command keep nohup's SIGHUP — forked before exec had
// asked for its signals — and TestExecRelaysSignals hang; the race needs a
// loaded machine, so this test runs 20 rounds to give it its chances.
func TestExecIgnoredSignalsNotInherited(t *testing.T) {
	state := stateDir(t)
	img := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n")
	exStart(t, state, "ign", img, "--", "sleep")
	for round := range 20 {
		out := filepath.Join(t.TempDir(), "out")
		f, err := os.Create(out)
		if err != nil {
			t.Fatal(err)
		}
		c := exCmd(state, "exec", "ign", "--", "/usr/bin/probe", "deaf")
		cmd := exec.Command("sh", append([]string{"-c", `trap "" HUP INT; exec "$@"`, "sh"}, c.Args...)...)
		cmd.Stdout = f
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		f.Close()
		printed := func() string { b, _ := os.ReadFile(out); return string(b) }
		if !settle(func() bool { return strings.Contains(printed(), "ready") }) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("round %d: the exec'd probe never got ready: %q", round, printed())
		}
		cmd.Process.Signal(syscall.SIGHUP) // sh has become cimg-run exec
		if !endsWithin(cmd, 30*time.Second, nil) {
			t.Fatalf("round %d: SIGHUP relayed, but the command (SIGHUP ignored, inherited?) did not end", round)
		}
		if ws := cmd.ProcessState.Sys().(syscall.WaitStatus); ws.Signaled() || ws.ExitStatus() != 128+int(syscall.SIGHUP) {
			t.Fatalf("round %d: cimg-run exec ended %v, want exit %d (the command killed by SIGHUP)", round, cmd.ProcessState, 128+int(syscall.SIGHUP))
		}
	}
}

// TestExecNoHostFDs_CVE_2024_21626: fds the caller leaks to cimg-run exec
// (a host directory each) do not reach the command.
func TestExecNoHostFDs_CVE_2024_21626(t *testing.T) {
	state := stateDir(t)
	img := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n")
	exStart(t, state, "fds", img, "--", "sleep")
	cmd := exCmd(state, "exec", "fds", "--", "probe")
	passHostFDs(t, cmd)
	res := runImage(t, cmd)
	var r probeReport
	if err := json.Unmarshal([]byte(res.stdout), &r); err != nil {
		t.Fatalf("%v: %+v", err, res)
	}
	expectNoHostFDs(t, r)
	if len(r.FDs) == 0 {
		t.Fatal("the probe listed no fds at all")
	}
}

// TestExecHostBinaryUnreachable_CVE_2019_5736: while execs come and go,
// the app keeps opening every other process's /proc/PID/exe in its pid
// namespace: the exec'd child, before its execve, is the host's cimg-run,
// and must not open (it is not dumpable).
func TestExecHostBinaryUnreachable_CVE_2019_5736(t *testing.T) {
	state := stateDir(t)
	img := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n")
	exStart(t, state, "watch", img, "--", "watch-exe", "4s")
	for i := 0; i < 40; i++ {
		exSub(t, state, "exec", "watch", "--", "probe", "exit", "0")
	}
	log := exLog(t, state, "watch", "watch done")
	if strings.Contains(log, "OPENED") {
		t.Errorf("the app opened a host binary through /proc/PID/exe:\n%s", log)
	}
}

// TestExecCannotOutliveInstance: a command still running in the instance
// when it stops is killed with it, and its exec returns.
func TestExecCannotOutliveInstance(t *testing.T) {
	state := stateDir(t)
	img := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n")
	exStart(t, state, "short", img, "--", "sleep")
	cmd := exCmd(state, "exec", "short", "--", "probe", "deaf")
	var out bytes.Buffer
	cmd.Stdout = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	if !settle(func() bool { return strings.Contains(out.String(), "ready") }) {
		t.Fatalf("the exec'd probe never got ready: %q", out.String())
	}
	cg := exState(t, state, "short")["cgroup"].(map[string]any)
	var procs string
	for _, d := range cg {
		b, _ := os.ReadFile(filepath.Join(d.(string), "cgroup.procs"))
		procs = string(b)
		break
	}
	if n := len(strings.Fields(procs)); n < 2 {
		t.Errorf("the instance's cgroup holds %d processes, want the app and the exec'd one", n)
	}
	if res := exSub(t, state, "stop", "-t", "2", "short"); res.code != 0 {
		t.Fatalf("stop: %+v", res)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatal("exec still runs after its instance stopped")
	}
	if code := cmd.ProcessState.ExitCode(); code != 137 {
		t.Errorf("exec's status after its instance stopped: %d, want 137 (SIGKILL)", code)
	}
}

// TestExecTTYInteractiveShell: exec -t gives a shell a terminal of the
// instance's own devpts, driven through a real pty (tmux): what is typed
// runs, ^C interrupts the command in the container, exit ends it.
func TestExecTTYInteractiveShell(t *testing.T) {
	state := stateDir(t)
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	for _, d := range []string{"bin", "etc", "tmp"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatalf("busybox (Debian's busybox-static, a test dependency): %v", err)
	}
	os.WriteFile(filepath.Join(root, "bin/busybox"), bb, 0o755)
	for _, c := range []string{"sh", "tty", "sleep", "echo", "id"} {
		os.Symlink("busybox", filepath.Join(root, "bin", c))
	}
	mf := filepath.Join(dir, "cimg.toml")
	os.WriteFile(mf, []byte("name = \"bb\"\n[app]\ncommand = [\"/bin/sleep\", \"1000\"]\nenv = { PATH = \"/bin\" }\n"), 0o644)
	img := filepath.Join(dir, "bb.cimg")
	if out, err := exec.Command(cimgBuild, "-q", "-f", mf, "--rootfs", root, "-o", img).CombinedOutput(); err != nil {
		t.Fatalf("cimg-build: %v\n%s", err, out)
	}
	exStart(t, state, "shell", img)
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Fatalf("tmux (a test dependency) is missing: %v", err)
	}
	sock := filepath.Join(dir, "tmux.sock")
	tmux := func(args ...string) string {
		out, err := exec.Command("tmux", append([]string{"-S", sock}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("tmux %v: %v: %s", args, err, out)
		}
		return string(out)
	}
	statusFile := filepath.Join(dir, "status")
	shellCmd := fmt.Sprintf("%s exec --state-dir %s -t shell sh; echo $? > %s", cimgRun, state, statusFile)
	tmux("new-session", "-d", "-x", "120", "-y", "40", "-s", "t", shellCmd)
	t.Cleanup(func() { exec.Command("tmux", "-S", sock, "kill-server").Run() })
	screen := func(want string) string {
		var s string
		if !settle(func() bool { s = tmux("capture-pane", "-p", "-t", "t"); return strings.Contains(s, want) }) {
			t.Fatalf("the terminal never showed %q:\n%s", want, s)
		}
		return s
	}
	tmux("send-keys", "-t", "t", "tty; echo sum=$((40+2))", "Enter")
	screen("sum=42")
	screen("/dev/pts/0")
	tmux("send-keys", "-t", "t", "sleep 100", "Enter")
	time.Sleep(300 * time.Millisecond) // the sleep starts; ^C must reach it, not us
	tmux("send-keys", "-t", "t", "C-c")
	tmux("send-keys", "-t", "t", "echo after=$?", "Enter")
	screen("after=130")
	tmux("send-keys", "-t", "t", "exit 3", "Enter")
	var status string
	if !settle(func() bool {
		b, _ := os.ReadFile(statusFile)
		status = strings.TrimSpace(string(b))
		return status != ""
	}) {
		t.Fatal("the shell's exec never returned")
	}
	if status != "3" {
		t.Errorf("exec -t's status after exit 3: %q", status)
	}
}

// TestExecIntoLostInstance: after its supervisor was SIGKILLed, exec into
// the instance fails clearly, and nothing runs.
func TestExecIntoLostInstance(t *testing.T) {
	state := stateDir(t)
	img := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n")
	exStart(t, state, "lost", img, "--", "sleep")
	sup := int(exState(t, state, "lost")["supervisor_pid"].(float64))
	syscall.Kill(sup, syscall.SIGKILL)
	if !settle(func() bool { return gone(sup, 0) }) {
		t.Fatal("the supervisor survived SIGKILL")
	}
	res := exSub(t, state, "exec", "lost", "--", "probe", "exit", "0")
	if res.code != 125 || !strings.Contains(res.stderr, "not running") {
		t.Errorf("exec into a lost instance: %+v", res)
	}
}
