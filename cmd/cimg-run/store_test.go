package main

// Tests of the store's commands end to end: install, run NAME, update
// through the health gate, rollback, reset, remove and gc.

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"cimg.dev/cimg/internal/instance"
)

// storeCmd runs `cimg-run SUB --store S --state-dir D ARGS...`.
func storeCmd(t *testing.T, store, state, sub string, args ...string) result {
	t.Helper()
	return runImage(t, exec.Command(cimgRun, append([]string{sub, "--store", store, "--state-dir", state}, args...)...))
}

// storeRoot is a store directory of the test's own.
func storeRoot(t *testing.T) string {
	d := filepath.Join(t.TempDir(), "store")
	return d
}

// TestStoreHealthGate: an update whose [health] command fails is rolled
// back (exit 1, naming the check and its output) and the old version runs
// again; one whose check passes becomes current, the old one previous.
func TestStoreHealthGate(t *testing.T) {
	store, state := storeRoot(t), stateDir(t)
	t.Cleanup(func() { exec.Command(cimgRun, "stop", "--state-dir", state, "app").Run() })
	img := func(version, health string) string {
		return probeImage(t, "version = \""+version+"\"\n[app]\ncommand = [\"/usr/bin/probe\", \"sleep\"]\n[health]\ncommand = [\"/usr/bin/probe\", "+health+"]\nstart_period = \"200ms\"\ninterval = \"100ms\"\nretries = 2\n")
	}
	if res := storeCmd(t, store, state, "install", "--name", "app", img("1.0.0", `"exit", "0"`)); res.code != 0 {
		t.Fatalf("install: %+v", res)
	}
	if res := runImage(t, exec.Command(cimgRun, "run", "-d", "--store", store, "--state-dir", state, "app")); res.code != 0 {
		t.Fatalf("run -d app: %+v", res)
	}
	// Run from a directory that holds a file named like the app: the app
	// is started from the store all the same, not from that file.
	cwd := t.TempDir()
	os.WriteFile(filepath.Join(cwd, "app"), []byte("not an image"), 0o644)
	cmd := exec.Command(cimgRun, "update", "--store", store, "--state-dir", state, "app", img("1.1.0", `"show", "/nonexistent-health"`))
	cmd.Dir = cwd
	res := runImage(t, cmd)
	// probe show exits 0 whatever it shows: a passing check.
	if res.code != 0 || !strings.Contains(res.stdout, "updated to 1.1.0") {
		t.Fatalf("update with a passing health check: %+v", res)
	}
	// --json: stdout is the app's state (after the rollback, or the
	// update), and nothing else; what a person reads goes to stderr.
	current := func(what, stdout string) string {
		t.Helper()
		var rows []struct {
			Name    string
			Current struct{ Version string }
			State   string
		}
		if err := json.Unmarshal([]byte(stdout), &rows); err != nil || len(rows) != 1 || rows[0].Name != "app" {
			t.Errorf("%s --json: stdout is not the app's state as JSON (%v):\n%s", what, err, stdout)
			return ""
		}
		return rows[0].Current.Version
	}
	res = storeCmd(t, store, state, "update", "--json", "app", img("1.2.0", `"exit", "3"`))
	if res.code != 1 || !strings.Contains(res.stderr, "rolled back to 1.1.0") || !strings.Contains(res.stderr, "health check") || !strings.Contains(res.stderr, "exit status 3") {
		t.Errorf("update with a failing health check: %+v", res)
	}
	if v := current("a failed update", res.stdout); v != "1.1.0" {
		t.Errorf("a failed update --json: current %q, want 1.1.0", v)
	}
	out := storeCmd(t, store, state, "list")
	if !strings.Contains(out.stdout, "1.1.0") || !strings.Contains(out.stdout, "running") || strings.Contains(out.stdout, "1.2.0") {
		t.Errorf("list after the rollback:\n%s", out.stdout)
	}
	ps := runImage(t, exec.Command(cimgRun, "ps", "--state-dir", state))
	if !strings.Contains(ps.stdout, "1.1.0") {
		t.Errorf("the running version after the rollback:\n%s", ps.stdout)
	}
	res = storeCmd(t, store, state, "update", "--json", "app", img("1.3.0", `"exit", "0"`))
	if res.code != 0 || !strings.Contains(res.stderr, "updated to 1.3.0") {
		t.Errorf("update --json with a passing health check: %+v", res)
	}
	if v := current("an update", res.stdout); v != "1.3.0" {
		t.Errorf("update --json: current %q, want 1.3.0", v)
	}

	// A new version whose launch fails before its app is made (the host
	// directory it binds, granted, is not there): update prepares the new
	// version before it stops the old one, so the old one was never
	// stopped, and runs on, the same process.
	supervisor := func() int {
		r, err := instance.Get(state, "app")
		if err != nil || !r.Running() {
			t.Fatalf("app is not running: %+v %v", r, err)
		}
		return r.Supervisor
	}
	before := supervisor()
	gone := filepath.Join(t.TempDir(), "gone")
	bad := probeImage(t, "version = \"1.4.0\"\n[app]\ncommand = [\"/usr/bin/probe\", \"sleep\"]\n[[mounts]]\ntype = \"bind\"\nsource = \""+gone+"\"\ntarget = \"/mnt\"\n")
	res = storeCmd(t, store, state, "update", "--grant", "bind="+gone, "app", bad)
	t.Logf("update to a version that cannot start: %s", res.stderr)
	if res.code != 1 || !strings.Contains(res.stderr, "1.3.0 runs on") {
		t.Errorf("update to a version that cannot start: %+v", res)
	}
	if after := supervisor(); after != before {
		t.Errorf("the old version was restarted (supervisor %d, then %d): it should never have stopped", before, after)
	}
	if l := storeCmd(t, store, state, "list", "--json").stdout; strings.Contains(l, `"trial"`) || strings.Contains(l, "1.4.0") {
		t.Errorf("the failed version is still on trial:\n%s", l)
	}
	if left, _ := filepath.Glob(filepath.Join(state, "instances", ".new-*")); len(left) != 0 {
		t.Errorf("the standby left its directory: %v", left)
	}
}

// TestStoreLifecycle: install, run NAME, rollback, a trial abandoned
// after three unconfirmed starts, factory reset (volumes wiped), remove
// and gc (images no app names go, and their cache mounts).
func TestStoreLifecycle(t *testing.T) {
	store, state := storeRoot(t), stateDir(t)
	v := func(version string) string {
		return probeImage(t, "version = \""+version+"\"\n[app]\ncommand = [\"/usr/bin/probe\"]\n[[mounts]]\ntype = \"volume\"\nsource = \"data\"\ntarget = \"/data\"\n")
	}
	v1, v2 := v("1.0.0"), v("2.0.0")
	if res := storeCmd(t, store, state, "install", "--name", "app", v1); res.code != 0 {
		t.Fatalf("install: %+v", res)
	}
	if res := storeCmd(t, store, state, "install", "--name", "app", v2); res.code != 125 || !strings.Contains(res.stderr, "installed already") {
		t.Errorf("a second install of one name: %+v", res)
	}
	run := func(args ...string) result {
		return runImage(t, exec.Command(cimgRun, append([]string{"run", "--store", store, "--state-dir", state, "app", "--"}, args...)...))
	}
	if res := run("write", "/data/x", "v1"); res.code != 0 {
		t.Fatalf("run app: %+v", res)
	}
	if _, err := os.Stat(filepath.Join(store, "volumes/app/probe/data/x")); err != nil {
		t.Errorf("the app's volume is not in the store: %v", err)
	}
	// A trial nobody confirms (its update was cut short): counted at each
	// start, abandoned after three.
	st := readStoreState(t, store, "app")
	if res := storeCmd(t, store, state, "install", "--name", "other", v2); res.code != 0 {
		t.Fatalf("install other: %+v", res)
	}
	other := readStoreState(t, store, "other")
	st = strings.Replace(st, `"floor"`, `"trial": `+jsonField(other, "current")+`, "trial_attempts": 0, "floor"`, 1)
	os.WriteFile(filepath.Join(store, "apps/app.json"), []byte(st), 0o600)
	for i := 1; i <= 4; i++ {
		res := run("show", "/proc/self/cgroup")
		if res.code != 0 {
			t.Fatalf("start %d of the trial: %+v", i, res)
		}
	}
	if l := storeCmd(t, store, state, "list", "--json").stdout; strings.Contains(l, `"trial"`) {
		t.Errorf("the trial is still there after four unconfirmed starts:\n%s", l)
	}
	// Factory reset: the volume goes.
	factory := t.TempDir()
	b, _ := os.ReadFile(v1)
	os.WriteFile(filepath.Join(factory, "app.cimg"), b, 0o444)
	if res := storeCmd(t, store, state, "reset", "--factory", factory, "app"); res.code != 0 || !strings.Contains(res.stdout, "app: reset to 1.0.0") {
		t.Errorf("reset: %+v", res)
	}
	if _, err := os.Stat(filepath.Join(store, "volumes/app/probe/data/x")); err == nil {
		t.Error("the app's volume survived the factory reset")
	}
	// Remove and gc: no image is left, nor a cache mount of one.
	for _, n := range []string{"app", "other"} {
		if res := storeCmd(t, store, state, "remove", "--purge", n); res.code != 0 {
			t.Errorf("remove %s: %+v", n, res)
		}
	}
	res := runImage(t, exec.Command(cimgRun, "gc", "--json", "--store", store, "--state-dir", state))
	var collected struct{ Deleted, Unmounted []string }
	if err := json.Unmarshal([]byte(res.stdout), &collected); res.code != 0 || err != nil || len(collected.Deleted) == 0 || len(collected.Unmounted) == 0 {
		t.Errorf("gc --json: want what it deleted and unmounted (%v): %+v", err, res)
	}
	if left, _ := filepath.Glob(filepath.Join(store, "images/*")); len(left) != 0 {
		t.Errorf("images left after remove and gc: %v", left)
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mounts), state) {
		t.Errorf("cache mounts left after gc:\n%s", mounts)
	}
	if res := storeCmd(t, store, state, "rollback", "app"); res.code != 125 || !strings.Contains(res.stderr, `no app "app" is installed`) {
		t.Errorf("rollback of a removed app: %+v", res)
	}
}

func readStoreState(t *testing.T, store, name string) string {
	b, err := os.ReadFile(filepath.Join(store, "apps", name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// jsonField cuts the object value of "key" out of an indented state file.
func jsonField(doc, key string) string {
	i := strings.Index(doc, `"`+key+`": {`)
	j := strings.Index(doc[i:], "\n  }")
	return doc[i+len(key)+4 : i+j+4]
}
