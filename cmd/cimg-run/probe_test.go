package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

func TestProbeSeesWhatTheManifestSays(t *testing.T) {
	state := stateDir(t)
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
	cmd := cimgRunCmd(state, "--grant", "cap=NET_BIND_SERVICE", img)
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
	for _, bad := range []string{"/work", "/run/cimg", state, "/sys", "/home"} {
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
