package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// TestOperatorSettings: docker-style flags replace the manifest's values
// for this launch — environment, user, hostname, workdir, a host path
// mounted read-only (granted by being typed), a capability, limits — and
// the app sees exactly that.
func TestOperatorSettings(t *testing.T) {
	state := stateDir(t)
	img := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n")
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "from-host"), []byte("x"), 0o644)
	os.Chmod(src, 0o755)
	res := runImage(t, cimgRunCmd(state, "-e", "FOO=bar", "--user", "1000:1000", "--hostname", "box", "-w", "/etc",
		"-v", src+":/etc:ro", "--cap-add", "NET_RAW", img))
	if res.code != 0 {
		t.Fatalf("exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	var r probeReport
	if err := json.Unmarshal([]byte(res.stdout), &r); err != nil {
		t.Fatalf("%v\n%s", err, res.stdout)
	}
	if fmt.Sprint(r.IDs) != "[1000 1000 1000 1000]" || r.Hostname != "box" || r.Cwd != "/etc" || !slices.Contains(r.Env, "FOO=bar") ||
		r.Status["CapEff"] != "0000000000002000" || !slices.Contains(r.Mounts, "/etc") {
		t.Errorf("the app saw %+v", r)
	}
	if res := runImage(t, cimgRunCmd(state, "-v", src+":/etc:ro", img, "--", "read", "/etc/from-host")); !strings.Contains(res.stdout, "read /etc/from-host: 1 bytes") {
		t.Errorf("the host path at /etc: %+v", res)
	}
	if res := runImage(t, cimgRunCmd(state, "-v", src+":/etc:ro", img, "--", "write", "/etc/x", "y")); !strings.Contains(res.stdout, "read-only file system") {
		t.Errorf("a read-only -v written: %+v", res)
	}
	// Limits, seen in the app's cgroup from the host.
	cmd, _ := startSleeping(t, state, "--memory", "48MiB", "--pids-limit", "12", img)
	defer cmd.Wait()
	defer cmd.Process.Signal(syscall.SIGTERM)
	dir := fmt.Sprintf("/sys/fs/cgroup/%%s/cimg/probe-%d/%%s", cmd.Process.Pid)
	for _, f := range [][3]string{{"memory", "memory.limit_in_bytes", "50331648"}, {"pids", "pids.max", "12"}} {
		if b, err := os.ReadFile(fmt.Sprintf(dir, f[0], f[1])); err != nil || strings.TrimSpace(string(b)) != f[2] {
			t.Errorf("%s: %q %v, want %s", f[1], b, err, f[2])
		}
	}
}

// TestOperatorSettingsRefused: a bad flag value gets the flag's name and
// the manifest's rule, before anything is mounted.
func TestOperatorSettingsRefused(t *testing.T) {
	state := stateDir(t)
	img := probeImage(t, "[app]\ncommand = [\"/usr/bin/probe\"]\n")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--memory", "1KiB"}, "--memory (limits.memory, with the command line's settings): 1KiB is below the 4MiB"},
		{[]string{"--user", "nobody"}, "--user: \"nobody\": want UID or UID:GID"},
		{[]string{"-v", "/etc:/proc/x"}, "--volume (mounts[0].target"},
	} {
		res := runImage(t, cimgRunCmd(state, append(c.args, img)...))
		if res.code != 125 || !strings.Contains(res.stderr, c.want) {
			t.Errorf("%v: %+v, want %q", c.args, res, c.want)
		}
	}
}
