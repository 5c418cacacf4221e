package main

// The store under crashes and bad input, end to end through the binary:
// commands killed at each named failpoint and at random moments, a full
// and a read-only store filesystem, and input the store must refuse.
// After each, the store must hold its invariant (internal/store): every
// app's state parses and names only stored images that verify, the app
// launches, and no temp file outlives the next command.

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"cimg.dev/cimg/format"
	"cimg.dev/cimg/internal/store"
)

// versioned is the body of a probe manifest at version v whose app
// sleeps (so that update's health gate passes) and whose args, not its
// command, say so: `run NAME -- exit 0` then runs "probe exit 0".
func versioned(v string) string {
	return "version = \"" + v + "\"\n[app]\ncommand = [\"/usr/bin/probe\"]\nargs = [\"sleep\"]\n"
}

// storeEnv is a store and a state directory of the test's own: never
// the host's /var/lib/cimg/store or /run/cimg.
type storeEnv struct {
	t           *testing.T
	root, state string
	verified    map[string]bool // image files cimg-build verify accepted, by identity (see verify)
}

// newStoreEnv makes a store root (root's, 0700) and a state directory
// whose instances are stopped when the test ends.
func newStoreEnv(t *testing.T) *storeEnv {
	t.Helper()
	state := instState(t)
	root := filepath.Join(t.TempDir(), "store")
	if err := os.Mkdir(root, 0o700); err != nil {
		t.Fatal(err)
	}
	return &storeEnv{t: t, root: root, state: state, verified: map[string]bool{}}
}

// cmd is `cimg-run SUB --state-dir STATE --store ROOT ARGS...` (instCmd,
// with the store).
func (e *storeEnv) cmd(sub string, args ...string) *exec.Cmd {
	return instCmd(e.state, sub, append([]string{"--store", e.root}, args...)...)
}

// run runs a store command (inst: one that hangs fails the test).
func (e *storeEnv) run(sub string, args ...string) result {
	e.t.Helper()
	return inst(e.t, e.state, sub, append([]string{"--store", e.root}, args...)...)
}

// must runs a store command that must succeed and returns its stdout.
func (e *storeEnv) must(sub string, args ...string) string {
	e.t.Helper()
	res := e.run(sub, args...)
	if res.code != 0 {
		e.t.Fatalf("cimg-run %s %s: exit %d\nstdout: %s\nstderr: %s", sub, strings.Join(args, " "), res.code, res.stdout, res.stderr)
	}
	return res.stdout
}

// refused runs a store command that must fail as cimg-run itself fails
// (125), saying every one of want.
func (e *storeEnv) refused(want []string, sub string, args ...string) {
	e.t.Helper()
	res := e.run(sub, args...)
	if res.code != 125 {
		e.t.Errorf("cimg-run %s %s: exit %d, want 125\nstdout: %s\nstderr: %s", sub, strings.Join(args, " "), res.code, res.stdout, res.stderr)
		return
	}
	for _, w := range want {
		if !strings.Contains(strings.ToLower(res.stderr), strings.ToLower(w)) {
			e.t.Errorf("cimg-run %s %s: stderr does not say %q: %s", sub, strings.Join(args, " "), w, res.stderr)
		}
	}
}

// apps is `list --json`, which must succeed and parse.
func (e *storeEnv) apps(when string) map[string]store.App {
	e.t.Helper()
	res := e.run("list", "--json")
	if res.code != 0 {
		e.t.Fatalf("%s: list --json: exit %d: %s", when, res.code, res.stderr)
	}
	var rows []store.App
	if err := json.Unmarshal([]byte(res.stdout), &rows); err != nil {
		e.t.Fatalf("%s: list --json does not parse: %v\n%s", when, err, res.stdout)
	}
	m := map[string]store.App{}
	for _, a := range rows {
		m[a.Name] = a
	}
	return m
}

// images lists STORE/images.
func (e *storeEnv) images() []string {
	entries, _ := os.ReadDir(filepath.Join(e.root, "images"))
	var n []string
	for _, en := range entries {
		n = append(n, en.Name())
	}
	return n
}

// temps lists what is in STORE/tmp, and the temp files in STORE/apps.
func (e *storeEnv) temps() []string {
	var left []string
	entries, _ := os.ReadDir(filepath.Join(e.root, "tmp"))
	for _, en := range entries {
		left = append(left, "tmp/"+en.Name())
	}
	entries, _ = os.ReadDir(filepath.Join(e.root, "apps"))
	for _, en := range entries {
		if strings.HasPrefix(en.Name(), ".tmp-") {
			left = append(left, "apps/"+en.Name())
		}
	}
	return left
}

// verify fails unless the stored image of root hash h is there, is
// filed under its own root hash, and cimg-build verify accepts it. A
// file already verified is not verified again while it is the same file
// (device, inode, change time and size): the store never writes an image
// in place, it renames a new file in, which is another inode.
func (e *storeEnv) verify(when, app string, h string) {
	e.t.Helper()
	p := filepath.Join(e.root, "images", h+".cimg")
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		e.t.Errorf("%s: app %s names %s, which is not stored: %v", when, app, h, err)
		return
	}
	id := fmt.Sprintf("%d:%d:%d.%d:%d", st.Dev, st.Ino, st.Ctim.Sec, st.Ctim.Nsec, st.Size)
	if e.verified[id] {
		return
	}
	if out, err := exec.Command(cimgBuild, "verify", p).CombinedOutput(); err != nil {
		e.t.Errorf("%s: app %s names %s, which cimg-build verify refuses: %v: %s", when, app, p, err, out)
		return
	}
	img, f, err := format.OpenFile(p)
	if err != nil {
		e.t.Errorf("%s: %v", when, err)
		return
	}
	f.Close()
	if got := hex.EncodeToString(img.Footer.RootHash[:]); got != h {
		e.t.Errorf("%s: %s holds an image of root hash %s", when, p, got)
		return
	}
	e.verified[id] = true
}

// check is the store's invariant, after whatever happened: list parses;
// every version an app names (current, previous, trial) is a stored
// image that verifies; every app launches (its current version, or its
// trial while it has one); and once list has run, no temp file is left.
// It returns the apps.
func (e *storeEnv) check(when string) map[string]store.App {
	e.t.Helper()
	apps := e.apps(when)
	for name, a := range apps {
		if a.Current == nil {
			e.t.Errorf("%s: app %s has no current version: %+v", when, name, a)
			continue
		}
		for _, v := range []*store.Version{a.Current, a.Previous, a.Trial} {
			if v != nil {
				e.verify(when, name, v.RootHash)
			}
		}
		if res := e.run("run", name, "--", "exit", "0"); res.code != 0 {
			e.t.Errorf("%s: run %s -- exit 0: exit %d: %s", when, name, res.code, res.stderr)
		}
	}
	if left := e.temps(); len(left) > 0 {
		e.t.Errorf("%s: temp files left after list: %v", when, left)
	}
	return apps
}

// expectGCd runs gc and fails unless images/ then holds exactly the
// images the apps name.
func (e *storeEnv) expectGCd(when string) {
	e.t.Helper()
	e.must("gc")
	want := map[string]bool{}
	for _, a := range e.apps(when) {
		for _, v := range []*store.Version{a.Current, a.Previous, a.Trial} {
			if v != nil {
				want[v.RootHash+".cimg"] = true
			}
		}
	}
	got := e.images()
	var named []string
	for n := range want {
		named = append(named, n)
	}
	slices.Sort(named)
	if !slices.Equal(got, named) {
		e.t.Errorf("%s: images/ after gc: %v, want the named ones: %v", when, got, named)
	}
}

// killedBySIGKILL reports whether a command's Wait error says it died of
// SIGKILL.
func killedBySIGKILL(err error) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// imageHash is the root hash of the image file p.
func imageHash(t *testing.T, p string) string {
	t.Helper()
	img, f, err := format.OpenFile(p)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	return hex.EncodeToString(img.Footer.RootHash[:])
}

// hashOf is a version's root hash, "" for none.
func hashOf(v *store.Version) string {
	if v == nil {
		return ""
	}
	return v.RootHash
}

// TestStoreFailpointsLeaveAConsistentStore kills each store command at
// each failpoint it passes (CIMG_STORE_FAILPOINT), then checks the
// invariant, that the state is the old or the new one and nothing in
// between, and that the command, retried, gets where it was going.
func TestStoreFailpointsLeaveAConsistentStore(t *testing.T) {
	v1, v2 := probeImage(t, versioned("1.0.0")), probeImage(t, versioned("2.0.0"))
	h1, h2 := imageHash(t, v1), imageHash(t, v2)
	// Checked last, once every case's instances are stopped and its
	// mount cache emptied: a kill leaks no mount, loop device or cgroup.
	before := ourCounts(t)
	t.Cleanup(func() { expectOurCounts(t, before, "after all cases") })

	// The rollback cases start from an app at 2.0.0 with 1.0.0 as its
	// previous version: one update (and its health gate) here, copied.
	tmpl := newStoreEnv(t)
	tmpl.must("install", "--name", "app", v1)
	tmpl.must("update", "app", v2)

	type state struct{ cur, prev, trial string } // root hashes; "" none; cur "" means not installed
	of := func(apps map[string]store.App) state {
		a, ok := apps["app"]
		if !ok {
			return state{}
		}
		return state{hashOf(a.Current), hashOf(a.Previous), hashOf(a.Trial)}
	}
	commits := []string{"commit-before", "write-synced", "commit-after"}
	all := append([]string{"store-copy", "store-copied", "store-rename", "store-stored"}, commits...)
	type operation struct {
		name    string
		setup   func(e *storeEnv)
		argv    []string
		reaches []string // the failpoints the command passes
		before  state    // the state the command starts from
		after   state    // the state it makes
	}
	ops := []operation{
		{name: "install", setup: func(*storeEnv) {}, argv: []string{"install", "--name", "app", v1},
			reaches: all, before: state{}, after: state{h1, "", ""}},
		{name: "update", setup: func(e *storeEnv) { e.must("install", "--name", "app", v1) }, argv: []string{"update", "app", v2},
			// Killed before the trial starts (the first commit is the
			// trial's): after is the trial committed, not the update done.
			reaches: all, before: state{h1, "", ""}, after: state{h1, "", h2}},
		{name: "rollback", setup: func(e *storeEnv) {
			if out, err := exec.Command("cp", "-a", tmpl.root+"/.", e.root).CombinedOutput(); err != nil {
				e.t.Fatalf("copy the template store: %v: %s", err, out)
			}
		}, argv: []string{"rollback", "app"}, reaches: commits, before: state{h2, h1, ""}, after: state{h1, h2, ""}},
		{name: "gc", setup: func(e *storeEnv) {
			// An image no app names: other's, once other is removed.
			e.must("install", "--name", "app", v1)
			e.must("install", "--name", "other", v2)
			e.must("remove", "other")
		}, argv: []string{"gc"}, reaches: []string{"gc-remove"}, before: state{h1, "", ""}, after: state{h1, "", ""}},
		// run NAME commits only a trial start's count; without a trial it
		// writes nothing (an app must start from a full or read-only
		// store), so no failpoint is reached.
		{name: "run", setup: func(e *storeEnv) { e.must("install", "--name", "app", v1) }, argv: []string{"run", "app", "--", "exit", "0"},
			reaches: nil, before: state{h1, "", ""}, after: state{h1, "", ""}},
	}

	// Every failpoint is reached by some operation here: a new one must
	// get its cases.
	for _, fp := range store.Failpoints {
		if !slices.ContainsFunc(ops, func(o operation) bool { return slices.Contains(o.reaches, fp) }) {
			t.Errorf("failpoint %s: no operation of this test reaches it", fp)
		}
	}

	for _, op := range ops {
		for _, fp := range op.reaches {
			if !slices.Contains(store.Failpoints, fp) {
				t.Errorf("%s: %s is not in store.Failpoints", op.name, fp)
				continue
			}
			t.Run(op.name+"/"+fp, func(t *testing.T) {
				t.Parallel() // update's retries each wait out a 2 s health gate
				e := newStoreEnv(t)
				op.setup(e)
				if got := of(e.apps("setup")); got != op.before {
					t.Fatalf("setup: %+v, want %+v", got, op.before)
				}
				imagesBefore := e.images()

				cmd := e.cmd(op.argv[0], op.argv[1:]...)
				cmd.Env = append(os.Environ(), "CIMG_STORE_FAILPOINT="+fp)
				out, err := cmd.CombinedOutput()
				if !killedBySIGKILL(err) {
					t.Fatalf("%s at failpoint %s: not killed (%v): %s", op.name, fp, err, out)
				}

				apps := e.check("after the kill")
				got := of(apps)
				if got != op.before && got != op.after {
					t.Errorf("after the kill: state %+v, neither the old %+v nor the new %+v", got, op.before, op.after)
				}
				for name := range apps {
					if name != "app" {
						t.Errorf("after the kill: an app %s appeared", name)
					}
				}
				// images/ holds what it held and at most the one image
				// the command was storing.
				for _, n := range e.images() {
					if !slices.Contains(imagesBefore, n) && n != op.after.trial+".cimg" && n != op.after.cur+".cimg" {
						t.Errorf("after the kill: images/ holds %s, which the command was not storing", n)
					}
				}

				// Retried, the command gets there.
				switch {
				case op.name == "install" && got == op.after:
					e.refused([]string{"installed already"}, "install", "--name", "app", v1)
				case op.name == "rollback" && got == op.after:
				case op.name == "update":
					e.must("update", "app", v2)
				default:
					e.must(op.argv[0], op.argv[1:]...)
				}
				want := op.after
				if op.name == "update" {
					want = state{h2, h1, ""}
				}
				if got := of(e.check("after the retry")); got != want {
					t.Errorf("after the retry: %+v, want %+v", got, want)
				}
				e.expectGCd("after the retry")
				if len(e.temps()) > 0 {
					t.Errorf("after gc: %v", e.temps())
				}
			})
		}
	}

	// update killed (kill -9, from outside) during its health gate: the
	// trial is committed and its instance runs. The invariant holds, and
	// update, retried, stops that instance, gates again and commits.
	t.Run("update/in-health-gate", func(t *testing.T) {
		t.Parallel()
		e := newStoreEnv(t)
		e.must("install", "--name", "app", v1)
		cmd := e.cmd("update", "app", v2)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, func() bool { r := psFind(t, e.state, "app"); return r != nil && r.State == "running" })
		cmd.Process.Kill()
		if err := cmd.Wait(); !killedBySIGKILL(err) {
			t.Fatalf("update: %v, want killed", err)
		}
		apps := e.apps("after the kill")
		if a := apps["app"]; hashOf(a.Current) != h1 || hashOf(a.Trial) != h2 || a.TrialAttempts != 1 {
			t.Errorf("after the kill: %+v, want 1.0.0 current and 2.0.0 on trial, started once", a)
		}
		// The trial's instance holds the name: stop it before check
		// launches the app by that name.
		mustInst(t, e.state, "stop", "-t", "1", "app")
		e.check("after the kill")
		e.must("update", "app", v2)
		if got := of(e.check("after the retry")); got != (state{h2, h1, ""}) {
			t.Errorf("after the retry: %+v", got)
		}
		e.expectGCd("after the retry")
	})
}

// TestStoreRandomKills: install, rollback, remove and gc, over and over,
// each SIGKILLed at a random moment 0-30 ms after it starts, and the
// invariant after each.
func TestStoreRandomKills(t *testing.T) {
	v1, v2, v3 := probeImage(t, versioned("1.0.0")), probeImage(t, versioned("2.0.0")), probeImage(t, versioned("3.0.0"))
	h1, h2, h3 := imageHash(t, v1), imageHash(t, v2), imageHash(t, v3)
	before := ourCounts(t)
	e := newStoreEnv(t)
	// App a has a previous version to roll back to; b comes and goes
	// with an image of its own, which gc then deletes.
	e.must("install", "--name", "a", v1)
	e.must("update", "a", v2)

	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 0))
	steps := [][]string{{"install", "--name", "b", v3}, {"rollback", "a"}, {"remove", "b"}, {"gc"}}
	// What a command that was not killed may say instead of succeeding:
	// an earlier kill may have done (or not done) its step already.
	mayRefuse := map[string]string{"install": "installed already", "remove": `no app "b" is installed`}
	const iterations = 500
	start := time.Now()
	killed := 0
	for i := 0; i < iterations && !t.Failed(); i++ {
		argv := steps[i%len(steps)]
		when := fmt.Sprintf("iteration %d (seed %d), %s", i, seed, strings.Join(argv, " "))
		cmd := e.cmd(argv[0], argv[1:]...)
		var errb bytes.Buffer
		cmd.Stderr = &errb
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// 0-30 ms, most of them short: the commands take 2-15 ms, and
		// a kill after the end tests nothing.
		u := rng.Float64()
		time.Sleep(time.Duration(u * u * u * float64(30*time.Millisecond)))
		cmd.Process.Signal(syscall.SIGKILL) // an error: it has ended already
		err := cmd.Wait()
		switch {
		case killedBySIGKILL(err):
			killed++
		case err == nil:
		case strings.Contains(errb.String(), mayRefuse[argv[0]]) && mayRefuse[argv[0]] != "":
		default:
			t.Errorf("%s: %v: %s", when, err, errb.String())
		}
		apps := e.check(when)
		a, ok := apps["a"]
		if !ok || !(hashOf(a.Current) == h1 && hashOf(a.Previous) == h2 || hashOf(a.Current) == h2 && hashOf(a.Previous) == h1) || a.Trial != nil {
			t.Errorf("%s: app a: %+v, want 1.0.0 and 2.0.0 as current and previous", when, a)
		}
		if b, ok := apps["b"]; ok && (hashOf(b.Current) != h3 || b.Previous != nil) {
			t.Errorf("%s: app b: %+v", when, b)
		}
	}
	e.expectGCd("at the end") // gc --state-dir empties the mount cache too
	expectNothingLeft(t, e.state, before, "after the kills")
	t.Logf("%d iterations, %d of them killed midway, in %v (seed %d)", iterations, killed, time.Since(start).Round(time.Millisecond), seed)
}

// smallExt4 mounts a fresh ext4 filesystem of size bytes (on a loop
// device) and returns its root, root's and 0700, for a store. At the end
// the instances of state are stopped and its mount cache emptied (a
// cache mount of a stored image keeps the filesystem busy), then it is
// unmounted and the loop device freed.
func smallExt4(t *testing.T, state string, size int64) string {
	t.Helper()
	dir := t.TempDir()
	img, mnt := filepath.Join(dir, "fs.ext4"), filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	out, err := exec.Command("losetup", "-f", "--show", img).Output()
	if err != nil {
		t.Fatalf("losetup: %v", err)
	}
	loop := strings.TrimSpace(string(out))
	if out, err := exec.Command("mount", "-t", "ext4", loop, mnt).CombinedOutput(); err != nil {
		exec.Command("losetup", "-d", loop).Run()
		t.Fatalf("mount %s: %v: %s", loop, err, out)
	}
	t.Cleanup(func() {
		stopAll(t, state)
		// gc of the cache only: a --store that is not there (never the
		// host's), and not this one, which may be read-only by now.
		noStore := filepath.Join(dir, "no-store")
		var last []byte
		if !settleFor(30*time.Second, func() bool {
			exec.Command(cimgRun, "gc", "--state-dir", state, "--store", noStore).Run()
			last, err = exec.Command("umount", mnt).CombinedOutput()
			return err == nil
		}) {
			t.Errorf("umount %s: %s", mnt, last)
		}
		if out, err := exec.Command("losetup", "-d", loop).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", loop, err, out)
		}
	})
	if err := os.Chmod(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	return mnt
}

// fill writes a file at p until the filesystem is full (as root: the
// blocks reserved for root too).
func fill(t *testing.T, p string) {
	t.Helper()
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, chunk := range []int{1 << 20, 64 << 10, 4 << 10, 1 << 10} {
		b := make([]byte, chunk)
		for {
			if _, err = f.Write(b); err != nil {
				break
			}
		}
		if !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("fill %s: %v", p, err)
		}
	}
	if err := f.Sync(); err != nil && !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("fill %s: %v", p, err)
	}
}

// TestStoreENOSPC: a store whose filesystem is full refuses a new image
// saying so, keeps nothing of it, and still runs what it has; then one
// that is read-only.
func TestStoreENOSPC(t *testing.T) {
	v1, v2 := probeImage(t, versioned("1.0.0")), probeImage(t, versioned("2.0.0"))
	h1 := imageHash(t, v1)
	e := newStoreEnv(t)
	e.root = smallExt4(t, e.state, 8<<20) // an image is 2 MiB: one fits, not two once full
	e.must("install", "--name", "app", v1)

	filler := filepath.Join(e.root, "filler") // not in tmp/: the next command would clean it
	fill(t, filler)
	before := e.images()
	for _, argv := range [][]string{{"install", "--name", "second", v2}, {"update", "app", v2}} {
		what := strings.Join(argv, " ")
		res := e.run(argv[0], argv[1:]...)
		if res.code == 0 {
			t.Errorf("%s on a full store: exit 0", what)
		}
		if !strings.Contains(res.stderr, "full") && !strings.Contains(res.stderr, "no space") {
			t.Errorf("%s on a full store: exit %d, stderr does not say it is full: %s", what, res.code, res.stderr)
		}
		if left := e.temps(); len(left) > 0 {
			t.Errorf("%s on a full store left %v", what, left)
		}
		if after := e.images(); !slices.Equal(before, after) {
			t.Errorf("%s on a full store: images/ %v → %v", what, before, after)
		}
	}
	apps := e.check("full store")
	if len(apps) != 1 || hashOf(apps["app"].Current) != h1 || apps["app"].Trial != nil {
		t.Errorf("full store: apps %+v, want app at 1.0.0 only", apps)
	}
	// Space again: the same install goes through.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	e.must("install", "--name", "second", v2)
	e.check("after freeing space")

	// Read-only: nothing can be stored, but what is installed runs (a
	// device whose data partition went read-only still boots its apps).
	if out, err := exec.Command("mount", "-o", "remount,ro", e.root).CombinedOutput(); err != nil {
		t.Fatalf("remount read-only: %v: %s", err, out)
	}
	e.refused([]string{"read-only"}, "install", "--name", "third", v1)
	if res := e.run("list", "--json"); res.code != 0 {
		t.Errorf("list on a read-only store: exit %d: %s", res.code, res.stderr)
	}
	for _, name := range []string{"app", "second"} {
		if res := e.run("run", name, "--", "exit", "0"); res.code != 0 {
			t.Errorf("run %s on a read-only store: exit %d: %s", name, res.code, res.stderr)
		}
	}
}

// TestStoreBadInput: names of no app, a corrupt image, a downgrade and
// privileges not granted are refused, clearly, with the store unchanged.
func TestStoreBadInput(t *testing.T) {
	v100, v110 := probeImage(t, versioned("1.0.0")), probeImage(t, versioned("1.1.0"))
	h100, h110 := imageHash(t, v100), imageHash(t, v110)
	capImg := probeImage(t, versioned("2.0.0")+"[security]\ncapabilities = [\"SYS_ADMIN\"]\n")
	e := newStoreEnv(t)

	// No app of that name: exit 125 naming it, and nothing stored.
	e.refused([]string{`"nope"`, "no app"}, "update", "nope", v100)
	e.refused([]string{`"nope"`, "no app"}, "rollback", "nope")
	e.refused([]string{`"nope"`, "no app"}, "remove", "nope")
	if imgs, apps := e.images(), e.apps("no app"); len(imgs) > 0 || len(apps) > 0 {
		t.Errorf("after refusals for an app not installed: images %v, apps %v", imgs, apps)
	}

	// A corrupt copy: one payload byte flipped.
	b, err := os.ReadFile(v100)
	if err != nil {
		t.Fatal(err)
	}
	img, err := format.Open(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	b[img.Footer.PayloadSize/2] ^= 0x40
	corrupt := filepath.Join(t.TempDir(), "corrupt.cimg")
	if err := os.WriteFile(corrupt, b, 0o644); err != nil {
		t.Fatal(err)
	}
	e.refused([]string{"payload"}, "install", "--name", "bad", corrupt)
	if imgs, apps := e.images(), e.apps("corrupt"); len(imgs) > 0 || len(apps) > 0 {
		t.Errorf("after a corrupt install: images %v, apps %v", imgs, apps)
	}
	if left := e.temps(); len(left) > 0 {
		t.Errorf("after a corrupt install: %v", left)
	}

	// Anti-rollback: 1.1.0, then 1.0.0 is refused below the floor, and
	// taken with --allow-downgrade (the floor stays).
	e.must("install", "--name", "app", v110)
	imgs := e.images()
	e.refused([]string{"floor"}, "update", "app", v100)
	if a := e.apps("downgrade")["app"]; hashOf(a.Current) != h110 || a.Trial != nil {
		t.Errorf("after a refused downgrade: %+v", a)
	}
	if after := e.images(); !slices.Equal(imgs, after) {
		t.Errorf("a refused downgrade changed images/: %v → %v", imgs, after)
	}
	e.refused([]string{"payload"}, "update", "app", corrupt)
	e.must("update", "--allow-downgrade", "app", v100)
	if a := e.apps("allowed downgrade")["app"]; hashOf(a.Current) != h100 || hashOf(a.Previous) != h110 || a.Floor != "1.1.0" {
		t.Errorf("after --allow-downgrade: current %s previous %s floor %s, want 1.0.0, 1.1.0, floor 1.1.0", hashOf(a.Current), hashOf(a.Previous), a.Floor)
	}

	// Privileges: granted at install or refused; an update may not ask
	// for more than the app was granted.
	imgs = e.images()
	e.refused([]string{"SYS_ADMIN", "--grant cap=SYS_ADMIN"}, "install", "--name", "capped", capImg)
	if _, ok := e.apps("refused capability")["capped"]; ok {
		t.Error("an app refused for its capability was installed")
	}
	if after := e.images(); !slices.Equal(imgs, after) {
		t.Errorf("a refused install changed images/: %v → %v", imgs, after)
	}
	e.must("install", "--name", "capped", "--grant", "cap=SYS_ADMIN", capImg)
	if a := e.apps("granted")["capped"]; !slices.Equal(a.Grants, []string{"cap=SYS_ADMIN"}) {
		t.Errorf("grants recorded: %v", a.Grants)
	}
	e.refused([]string{"SYS_ADMIN"}, "update", "app", capImg)
	if a := e.apps("update asking for more")["app"]; hashOf(a.Current) != h100 || a.Trial != nil || len(a.Grants) != 0 {
		t.Errorf("after a refused update: %+v", a)
	}
	e.check("bad input")
}
