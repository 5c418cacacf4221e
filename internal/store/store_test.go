package store

// Unit tests of the store: its own steps (Open's checks, cleanTmp, the
// state files, the version order) and its operations on real images
// built by package build, with an Admit that lets everything in (the
// launcher's checks are cmd/cimg-run's to test, end to end). They run as
// root: Open wants the store owned by root.

import (
	"context"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"cimg.dev/cimg/build"
	"cimg.dev/cimg/format"
	"cimg.dev/cimg/internal/mounttest"
	"cimg.dev/cimg/manifest"
)

// admitAll is an Admit that refuses nothing and finds no signers.
func admitAll(string, []string) ([]string, error) { return nil, nil }

// newStore opens a store in a fresh root-only directory of the test's.
func newStore(t *testing.T) *Store {
	t.Helper()
	mounttest.RequireRoot(t)
	root := t.TempDir()
	if err := os.Chmod(root, 0o700); err != nil {
		t.Fatal(err)
	}
	s, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// testImage builds a small valid image of app name at version: a rootfs
// of one script whose text holds the version, so that each version has a
// payload (and so a root hash) of its own.
func testImage(t *testing.T, name, version string) string {
	t.Helper()
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	if err := os.MkdirAll(filepath.Join(root, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "bin/app"), []byte("#!/bin/sh\necho "+version+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	m := manifest.Default()
	m.Name, m.Version, m.Arch = name, version, manifest.CanonicalArch(runtime.GOARCH)
	m.App.Command = []string{"/bin/app"}
	out := filepath.Join(dir, name+"-"+version+".cimg")
	if _, err := build.Build(context.Background(), build.Spec{Manifest: &m, Rootfs: root, Epoch: 1, Output: out}); err != nil {
		t.Fatal(err)
	}
	return out
}

// rootHash is the root hash of the image file at p, as the store names it.
func rootHash(t *testing.T, p string) string {
	t.Helper()
	img, f, err := format.OpenFile(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return hex.EncodeToString(img.Footer.RootHash[:])
}

// dirNames lists a directory's entries (nil if it cannot be read).
func dirNames(dir string) []string {
	entries, _ := os.ReadDir(dir)
	var n []string
	for _, e := range entries {
		n = append(n, e.Name())
	}
	return n
}

// expectNoTemp fails if a temp file is left in tmp/ or apps/.
func expectNoTemp(t *testing.T, s *Store, when string) {
	t.Helper()
	if left := dirNames(filepath.Join(s.Root, "tmp")); len(left) > 0 {
		t.Errorf("%s: tmp/ holds %v", when, left)
	}
	for _, n := range dirNames(filepath.Join(s.Root, "apps")) {
		if strings.HasPrefix(n, ".tmp-") {
			t.Errorf("%s: apps/ holds the temp file %s", when, n)
		}
	}
}

// TestStoreCompareVersions: versions are dotted numbers where they are
// numbers. What the function does with the forms below decides which
// updates the anti-rollback floor lets in.
func TestStoreCompareVersions(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want int
		why  string
	}{
		{"1.9", "1.10", -1, "numbers, not text: 10 > 9"},
		{"1.0", "1.0.1", -1, "a patch release is newer"},
		{"1.2.3", "1.2.3", 0, "equal"},
		{"10.0", "9.99", 1, "the first number decides"},
		{"v1.2", "v1.10", -1, "a text part that is equal, then numbers"},
		// A missing part is 0: 1.0 and 1.0.0 are the same version. The
		// function orders a missing part before "0" as text, so an app
		// at 1.0.0 refuses an update to "1.0" as a downgrade.
		{"1.0.0", "1.0", 0, "a missing part is 0"},
		// A pre-release comes before its release (semver): the floor of a
		// device that installed 2.0.0-rc1 must let 2.0.0 in. The function
		// compares "rc1" with a missing part as text, and the missing part
		// loses: 2.0.0-rc1 > 2.0.0, so the release is refused as a
		// downgrade (see TestStoreReleaseAfterReleaseCandidate).
		{"2.0.0-rc1", "2.0.0", -1, "a pre-release is older than its release"},
		{"2.0.0-rc1", "2.0.0-rc2", -1, "pre-releases in order"},
	} {
		if got := CompareVersions(c.a, c.b); got != c.want {
			t.Errorf("CompareVersions(%q, %q) = %d, want %d: %s", c.a, c.b, got, c.want, c.why)
		}
		// Antisymmetric, whatever the answer: an order the floor can use.
		if got, rev := CompareVersions(c.a, c.b), CompareVersions(c.b, c.a); got != -rev {
			t.Errorf("CompareVersions(%q, %q) = %d but CompareVersions(%q, %q) = %d", c.a, c.b, got, c.b, c.a, rev)
		}
	}
}

// TestStoreReleaseAfterReleaseCandidate: the usual path of a release,
// rc then final, through the floor. Fails while CompareVersions orders
// 2.0.0-rc1 above 2.0.0 (store.go, CompareVersions: a missing part
// compares below any text part).
func TestStoreReleaseAfterReleaseCandidate(t *testing.T) {
	s := newStore(t)
	if _, err := s.Install("app", testImage(t, "app", "2.0.0-rc1"), nil, admitAll); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Update("app", testImage(t, "app", "2.0.0"), nil, false, admitAll); err != nil {
		t.Errorf("update from 2.0.0-rc1 to the release 2.0.0: %v", err)
	}
}

// TestStoreOpenChecksTheRoot: the store holds what root runs, so Open
// refuses a root others could write or read, or a symlink to one.
func TestStoreOpenChecksTheRoot(t *testing.T) {
	mounttest.RequireRoot(t)
	base := t.TempDir()

	made := filepath.Join(base, "new", "store")
	s, err := Open(made)
	if err != nil {
		t.Fatalf("a store that does not exist yet is made: %v", err)
	}
	fi, err := os.Stat(made)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("made store root: %v %v, want mode 0700", fi.Mode(), err)
	}
	for _, d := range []string{"images", "apps", "locks", "tmp", "volumes"} {
		if fi, err := os.Stat(filepath.Join(s.Root, d)); err != nil || !fi.IsDir() {
			t.Errorf("%s/ not made: %v", d, err)
		}
	}

	open := filepath.Join(base, "open")
	os.Mkdir(open, 0o755)
	os.Chmod(open, 0o755)
	if _, err := Open(open); err == nil || !strings.Contains(err.Error(), "0700") {
		t.Errorf("a store root of mode 0755: %v, want a refusal that says 0700", err)
	}
	if _, err := os.Stat(filepath.Join(open, "images")); err == nil {
		t.Error("Open made images/ in a root it refused")
	}

	foreign := filepath.Join(base, "foreign")
	os.Mkdir(foreign, 0o700)
	os.Chown(foreign, 65534, 65534)
	if _, err := Open(foreign); err == nil || !strings.Contains(err.Error(), "owned by root") {
		t.Errorf("a store root owned by nobody: %v, want a refusal", err)
	}

	// A symlink, even to a good directory: Lstat, not Stat.
	link := filepath.Join(base, "link")
	os.Symlink(made, link)
	if _, err := Open(link); err == nil {
		t.Error("a symlinked store root was accepted")
	}

	file := filepath.Join(base, "file")
	os.WriteFile(file, nil, 0o600)
	if _, err := Open(file); err == nil {
		t.Error("a regular file as the store root was accepted")
	}
}

// TestStoreCleanTmp: temp files are written only under the store's
// shared lock, so while a command holds it Open removes nothing; once
// none does, Open removes every temp file (a killed command's) in tmp/
// and apps/, and nothing else.
func TestStoreCleanTmp(t *testing.T) {
	s := newStore(t)
	tmp, apps := filepath.Join(s.Root, "tmp"), filepath.Join(s.Root, "apps")
	write := func(p string) {
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(tmp, ".tmp-a.cimg"))
	write(filepath.Join(tmp, "whatever"))
	write(filepath.Join(apps, ".tmp-app.json-1"))
	write(filepath.Join(apps, "app.json"))
	write(filepath.Join(apps, "notes"))
	all := []string{".tmp-a.cimg", "whatever"}
	// A command at work (it holds the shared lock): nothing goes.
	unlock, err := s.lockApp("other")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(s.Root); err != nil {
		t.Fatal(err)
	}
	if got := dirNames(tmp); !slices.Equal(got, all) {
		t.Errorf("tmp/ after Open beside a command: %v, want %v", got, all)
	}
	unlock()
	if _, err := Open(s.Root); err != nil { // Open cleans
		t.Fatal(err)
	}
	if got := dirNames(tmp); len(got) != 0 {
		t.Errorf("tmp/ after Open: %v, want nothing", got)
	}
	if got, want := dirNames(apps), []string{"app.json", "notes"}; !slices.Equal(got, want) {
		t.Errorf("apps/ after Open: %v, want %v", got, want)
	}
}

// TestStoreStateRoundTrip: a state file written by commit reads back
// the same through Get and List; List sorts by name and skips what is
// not a state file; Get names the file it cannot parse.
func TestStoreStateRoundTrip(t *testing.T) {
	s := newStore(t)
	at := time.Date(2026, 3, 4, 5, 6, 7, 890, time.UTC)
	v := func(ver, h string) *Version {
		return &Version{Version: ver, RootHash: strings.Repeat(h, 64), Size: 4096, Signers: []string{"k1", "k2"}, Installed: at}
	}
	apps := []*App{
		{Name: "zeta", Current: v("1.0.0", "a"), Floor: "1.0.0", Grants: []string{}},
		{Name: "alpha", Current: v("2.0.0", "b"), Previous: v("1.0.0", "c"), Trial: v("3.0.0-rc1", "d"),
			TrialAttempts: 2, Floor: "2.0.0", Grants: []string{"cap=NET_ADMIN", "net=host"}},
	}
	for _, a := range apps {
		if err := s.commit(a); err != nil {
			t.Fatal(err)
		}
	}
	expectNoTemp(t, s, "after commits")
	// Not state files: a temp file of a writer, and other names.
	os.WriteFile(filepath.Join(s.Root, "apps", ".tmp-x.json-123"), []byte("{"), 0o600)
	os.WriteFile(filepath.Join(s.Root, "apps", "README"), []byte("hi"), 0o600)

	for _, a := range apps {
		got, err := s.Get(a.Name)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, a) {
			t.Errorf("Get(%s) = %+v, want %+v", a.Name, got, a)
		}
	}
	list, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Name != "alpha" || list[1].Name != "zeta" || !reflect.DeepEqual(list[0], apps[1]) {
		t.Errorf("List: %+v", list)
	}

	var ni *ErrNotInstalled
	if _, err := s.Get("nope"); !errors.As(err, &ni) || ni.Name != "nope" {
		t.Errorf("Get of an app not installed: %v, want ErrNotInstalled", err)
	}
	if _, err := s.Get("../apps/zeta"); err == nil {
		t.Error("Get accepted a name with a path in it")
	}
	bad := filepath.Join(s.Root, "apps", "broken.json")
	os.WriteFile(bad, []byte(`{"name": "broken", "current": `), 0o600)
	if _, err := s.Get("broken"); err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("Get of a state file that does not parse: %v, want an error naming %s", err, bad)
	}
}

// TestStoreLifecycle: install, update (trial), confirm, rollback, the
// trial's boot counter, remove and gc, through the API, with the state
// and images/ checked after each.
func TestStoreLifecycle(t *testing.T) {
	s := newStore(t)
	v1, v2, v3 := testImage(t, "app", "1.0.0"), testImage(t, "app", "2.0.0"), testImage(t, "app", "3.0.0")
	h1, h2, h3 := rootHash(t, v1), rootHash(t, v2), rootHash(t, v3)
	check := func(when string, a *App, cur, prev, trial string) {
		t.Helper()
		got, err := s.Get("app")
		if err != nil {
			t.Fatalf("%s: %v", when, err)
		}
		if a != nil && !reflect.DeepEqual(got, a) {
			t.Errorf("%s: returned %+v, stored %+v", when, a, got)
		}
		name := func(v *Version) string {
			if v == nil {
				return ""
			}
			if _, err := os.Stat(s.Image(v.RootHash)); err != nil {
				t.Errorf("%s: version %s: %v", when, v.Version, err)
			}
			return v.Version
		}
		if c, p, tr := name(got.Current), name(got.Previous), name(got.Trial); c != cur || p != prev || tr != trial {
			t.Errorf("%s: current %q previous %q trial %q, want %q %q %q", when, c, p, tr, cur, prev, trial)
		}
		expectNoTemp(t, s, when)
	}

	a, err := s.Install("app", v1, []string{"cap=NET_ADMIN"}, admitAll)
	if err != nil {
		t.Fatal(err)
	}
	check("install", a, "1.0.0", "", "")
	if a.Current.RootHash != h1 || a.Floor != "1.0.0" || !slices.Equal(a.Grants, []string{"cap=NET_ADMIN"}) {
		t.Errorf("installed: %+v", a)
	}
	if fi, err := os.Stat(s.Image(h1)); err != nil || fi.Mode().Perm() != 0o444 {
		t.Errorf("stored image: %v %v, want mode 0444", fi.Mode(), err)
	}
	if _, err := s.Install("app", v2, nil, admitAll); err == nil || !strings.Contains(err.Error(), "installed already") {
		t.Errorf("a second install of the app: %v", err)
	}

	a, err = s.Update("app", v2, []string{"net=host"}, false, admitAll)
	if err != nil {
		t.Fatal(err)
	}
	check("update", a, "1.0.0", "", "2.0.0")
	if !slices.Equal(a.Grants, []string{"cap=NET_ADMIN", "net=host"}) {
		t.Errorf("grants after update: %v, want the old and the new", a.Grants)
	}
	// The boot counter: two unconfirmed starts of the trial, then the
	// third start gets the current version and the trial is dropped.
	for i := 1; i <= 2; i++ {
		a, v, err := s.TrialStart("app", 2)
		if err != nil || v.RootHash != h2 || a.TrialAttempts != i {
			t.Fatalf("trial start %d: %v %+v %+v", i, err, v, a)
		}
	}
	a, v, err := s.TrialStart("app", 2)
	if err != nil || v.RootHash != h1 || a.Trial != nil {
		t.Fatalf("trial start past the limit: %v %+v %+v, want the current version and no trial", err, v, a)
	}
	check("trial given up", nil, "1.0.0", "", "")
	if _, err := s.Confirm("app"); err == nil {
		t.Error("Confirm without a trial succeeded")
	}

	if _, err := s.Update("app", v2, nil, false, admitAll); err != nil {
		t.Fatal(err)
	}
	a, err = s.Confirm("app")
	if err != nil {
		t.Fatal(err)
	}
	check("confirm", a, "2.0.0", "1.0.0", "")
	if a.Floor != "2.0.0" {
		t.Errorf("floor after confirming 2.0.0: %s", a.Floor)
	}

	// Below the floor: refused before the image is kept.
	before := dirNames(filepath.Join(s.Root, "images"))
	if _, err := s.Update("app", v1, nil, false, admitAll); err == nil || !strings.Contains(err.Error(), "floor") {
		t.Errorf("update below the floor: %v", err)
	}
	if after := dirNames(filepath.Join(s.Root, "images")); !slices.Equal(before, after) {
		t.Errorf("a refused update changed images/: %v → %v", before, after)
	}
	check("refused downgrade", nil, "2.0.0", "1.0.0", "")
	if _, err := s.Update("app", v2, nil, false, admitAll); err == nil || !strings.Contains(err.Error(), "current version already") {
		t.Errorf("update to the current version: %v", err)
	}

	a, err = s.Rollback("app")
	if err != nil {
		t.Fatal(err)
	}
	check("rollback", a, "1.0.0", "2.0.0", "")
	a, err = s.Rollback("app")
	if err != nil {
		t.Fatal(err)
	}
	check("rollback again", a, "2.0.0", "1.0.0", "")

	if _, err := s.Update("app", v3, nil, false, admitAll); err != nil {
		t.Fatal(err)
	}
	if a, err = s.Abandon("app"); err != nil {
		t.Fatal(err)
	}
	check("abandon", a, "2.0.0", "1.0.0", "")

	// v3 is named by no state now: gc removes it, and a dead temp file.
	os.WriteFile(filepath.Join(s.Root, "tmp", ".tmp-dead.cimg"), []byte("x"), 0o600)
	removed, err := s.GC(0)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(removed, []string{s.Image(h3)}) {
		t.Errorf("gc removed %v, want only %s", removed, s.Image(h3))
	}
	if got, want := dirNames(filepath.Join(s.Root, "images")), []string{h1 + ".cimg", h2 + ".cimg"}; !slices.Equal(got, sorted(want)) {
		t.Errorf("images/ after gc: %v, want %v", got, sorted(want))
	}
	expectNoTemp(t, s, "gc")

	os.MkdirAll(filepath.Join(s.Volumes(), "app", "data"), 0o700)
	if err := s.Remove("app", true); err != nil {
		t.Fatal(err)
	}
	var ni *ErrNotInstalled
	if _, err := s.Get("app"); !errors.As(err, &ni) {
		t.Errorf("Get after remove: %v", err)
	}
	if _, err := os.Stat(filepath.Join(s.Volumes(), "app")); !os.IsNotExist(err) {
		t.Errorf("remove --purge left the volumes: %v", err)
	}
	if err := s.Remove("app", false); !errors.As(err, &ni) {
		t.Errorf("a second remove: %v, want ErrNotInstalled", err)
	}
	if _, err := s.GC(0); err != nil {
		t.Fatal(err)
	}
	if left := dirNames(filepath.Join(s.Root, "images")); len(left) != 0 {
		t.Errorf("images/ after remove and gc: %v", left)
	}
}

func sorted(s []string) []string { s = slices.Clone(s); slices.Sort(s); return s }

// TestStoreRefusalsKeepNothing: an image that is corrupt, an image the
// launcher's check refuses, and a file that is no image leave the store
// as it was: no state, nothing in images/ or tmp/.
func TestStoreRefusalsKeepNothing(t *testing.T) {
	s := newStore(t)
	good := testImage(t, "app", "1.0.0")
	b, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	img, err := format.Open(strings.NewReader(string(b)), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	corrupt := filepath.Join(t.TempDir(), "corrupt.cimg")
	c := slices.Clone(b)
	c[img.Footer.PayloadSize/2] ^= 0x40
	os.WriteFile(corrupt, c, 0o644)
	notImage := filepath.Join(t.TempDir(), "text.cimg")
	os.WriteFile(notImage, []byte("hello\n"), 0o644)
	refuse := func(string, []string) ([]string, error) { return nil, errors.New("refused by the launcher") }

	for _, c := range []struct {
		what, file string
		admit      Admit
		want       string
	}{
		{"corrupt payload", corrupt, admitAll, "payload"},
		{"not an image", notImage, admitAll, "footer"},
		{"refused by admit", good, refuse, "refused by the launcher"},
		{"missing file", filepath.Join(t.TempDir(), "nothing.cimg"), admitAll, "no such file"},
	} {
		if _, err := s.Install("app", c.file, nil, c.admit); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error with %q", c.what, err, c.want)
		}
		if imgs := dirNames(filepath.Join(s.Root, "images")); len(imgs) > 0 {
			t.Errorf("%s: images/ holds %v", c.what, imgs)
		}
		if _, err := s.Get("app"); !errors.As(err, new(*ErrNotInstalled)) {
			t.Errorf("%s: the app has state: %v", c.what, err)
		}
		expectNoTemp(t, s, c.what)
	}
}

// TestStoreImagesWithTheSameRootHash: two images may share a root hash
// yet differ: the root hash covers the payload (under a salt the image
// chooses), not the manifest after it, nor the signatures. The store
// files images by root hash alone (store.go, store: dst :=
// s.Image(h); os.Rename(tmp, dst)), so storing the second replaces the
// file the first app's state names: that app then runs the other
// image's manifest (command, environment, version), not what it was
// admitted with. Fails while that is so.
func TestStoreImagesWithTheSameRootHash(t *testing.T) {
	s := newStore(t)
	first := testImage(t, "app", "1.0.0")
	img, f, err := format.OpenFile(first)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// The same payload and salt, another manifest: a valid image.
	other := strings.Replace(string(img.Manifest), `version = "1.0.0"`, `version = "1.0.1"`, 1)
	if other == string(img.Manifest) {
		t.Fatalf("no version line in the manifest:\n%s", img.Manifest)
	}
	second := filepath.Join(t.TempDir(), "second.cimg")
	out, err := os.Create(second)
	if err != nil {
		t.Fatal(err)
	}
	payload := make([]byte, img.Footer.PayloadSize)
	if _, err := f.ReadAt(payload, 0); err != nil {
		t.Fatal(err)
	}
	out.Write(payload)
	_, size, err := format.Finish(out, img.Footer.PayloadSize, format.FinishOptions{Manifest: []byte(other), Salt: img.Footer.Salt})
	if err == nil {
		err = out.Truncate(size)
	}
	out.Close()
	if err != nil {
		t.Fatal(err)
	}
	if h1, h2 := rootHash(t, first), rootHash(t, second); h1 != h2 {
		t.Fatalf("the crafted image has another root hash: %s, %s", h1, h2)
	}

	a, err := s.Install("one", first, nil, admitAll)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Install("two", second, nil, admitAll); err != nil {
		t.Fatal(err)
	}
	stored, sf, err := format.OpenFile(s.Image(a.Current.RootHash))
	if err != nil {
		t.Fatal(err)
	}
	defer sf.Close()
	if string(stored.Manifest) != string(img.Manifest) {
		m, _ := manifest.Parse(stored.Manifest, "stored")
		t.Errorf("app one's current version %s names %s, which now holds the manifest of app two's image (version %s)",
			a.Current.Version, s.Image(a.Current.RootHash), m.Version)
	}
}

// TestStoreCommitBesideOpen: every command's Open runs cleanTmp, with
// no lock, beside commands of other apps (or of the same app: list, run
// NAME) that are writing. A writer creates its temp file and flocks it
// only afterwards (store.go writeAtomic: os.CreateTemp, then
// unix.Flock; store: os.OpenFile, then unix.Flock), so a cleanTmp that
// comes between the two takes the flock, deletes the file, and the
// writer's rename fails with ENOENT: the commit (an install, an update's
// Confirm, a rollback, run NAME's trial count) fails for nothing. Fails
// while that window is open.
func TestStoreCommitBesideOpen(t *testing.T) {
	s := newStore(t)
	if _, err := s.Install("app", testImage(t, "app", "1.0.0"), nil, admitAll); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Update("app", testImage(t, "app", "2.0.0"), nil, false, admitAll); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Confirm("app"); err != nil {
		t.Fatal(err)
	}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
				Open(s.Root) // what a concurrent cimg-run list does first
			}
		}
	}()
	defer func() { close(stop); <-done }()
	// Bounded: a store without the window passes in a few seconds.
	for i := 0; i < 2000; i++ {
		if _, err := s.Rollback("app"); err != nil {
			t.Fatalf("rollback %d, beside cleanTmp: %v", i, err)
		}
	}
	expectNoTemp(t, s, "after the rollbacks")
}

// TestStoreGCKeep: gc --keep N keeps, per app, the N most recent versions
// that were superseded (newest first), besides current and previous.
func TestStoreGCKeep(t *testing.T) {
	s := newStore(t)
	var imgs, hashes []string
	for _, v := range []string{"1.0.0", "2.0.0", "3.0.0", "4.0.0"} {
		img := testImage(t, "app", v)
		imgs, hashes = append(imgs, img), append(hashes, rootHash(t, img))
	}
	if _, err := s.Install("app", imgs[0], nil, admitAll); err != nil {
		t.Fatal(err)
	}
	for _, img := range imgs[1:] {
		if _, err := s.Update("app", img, nil, false, admitAll); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Confirm("app"); err != nil {
			t.Fatal(err)
		}
	}
	a, err := s.Get("app")
	if err != nil {
		t.Fatal(err)
	}
	var older []string
	for _, v := range a.Older {
		older = append(older, v.Version)
	}
	if !slices.Equal(older, []string{"2.0.0", "1.0.0"}) {
		t.Fatalf("older versions %v, want 2.0.0, 1.0.0 (newest first)", older)
	}
	images := func() []string { return dirNames(filepath.Join(s.Root, "images")) }
	for _, c := range []struct {
		keep int
		want []string // versions whose images remain
	}{
		{5, []string{"1", "2", "3", "4"}},
		{1, []string{"2", "3", "4"}},
		{0, []string{"3", "4"}},
	} {
		if _, err := s.GC(c.keep); err != nil {
			t.Fatal(err)
		}
		var want []string
		for _, v := range c.want {
			i := int(v[0] - '1')
			want = append(want, hashes[i]+".cimg")
		}
		if got := images(); !slices.Equal(got, sorted(want)) {
			t.Errorf("gc --keep %d left %v, want versions %v", c.keep, got, c.want)
		}
	}
}

// TestStoreAbandonedTrialGivesItsGrantsBack: the grants an update added
// for its version are that version's: when the trial is dropped (abandon,
// rollback, the boot counter, a reset), the app has its grants from
// before the update again — also when it had none — and a confirmed trial
// keeps them. (Before, an abandoned update's --grant stayed granted.)
func TestStoreAbandonedTrialGivesItsGrantsBack(t *testing.T) {
	s := newStore(t)
	v1, v2 := testImage(t, "app", "1.0.0"), testImage(t, "app", "2.0.0")
	if _, err := s.Install("app", v1, nil, admitAll); err != nil {
		t.Fatal(err)
	}
	grants := func(what string, want ...string) {
		t.Helper()
		a, err := s.Get("app") // as stored: a round trip through the state file
		if err != nil {
			t.Fatal(err)
		}
		if len(a.Grants) != len(want) || len(want) > 0 && !slices.Equal(a.Grants, want) {
			t.Errorf("%s: grants %q, want %q", what, a.Grants, want)
		}
	}
	for _, drop := range []struct {
		name string
		do   func() error
	}{
		{"abandon", func() error { _, err := s.Abandon("app"); return err }},
		{"the boot counter", func() error {
			for range 4 {
				if _, _, err := s.TrialStart("app", 3); err != nil {
					return err
				}
			}
			return nil
		}},
	} {
		if _, err := s.Update("app", v2, []string{"net=host"}, false, admitAll); err != nil {
			t.Fatal(err)
		}
		grants(drop.name+": on trial", "net=host")
		if err := drop.do(); err != nil {
			t.Fatal(err)
		}
		grants(drop.name + ": after the trial was dropped")
	}
	if _, err := s.Update("app", v2, []string{"net=host"}, false, admitAll); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Confirm("app"); err != nil {
		t.Fatal(err)
	}
	grants("confirmed", "net=host")
}
