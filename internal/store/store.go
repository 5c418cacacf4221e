// Package store is the device's store of installed apps: what cimg-run
// install, update, rollback, remove, list and gc change, and what
// cimg-run run NAME launches.
//
// Layout, under the store's root (root's, 0700):
//
//	images/<root-hash>.cimg   verified images, content-addressed, 0444
//	apps/<name>.json          one state file per app: current, previous and
//	                          trial versions, the trial's attempts, the
//	                          version floor, the operator's grants, and
//	                          the older versions gc --keep may keep
//	locks/<name>.lock         flock: one command per app at a time
//	tmp/                      partial files, on the same filesystem; dl-*
//	                          are resumable downloads (package partial)
//	volumes/<name>/...        the app's volumes
//
// Every change is temp file → fsync → rename → fsync(dir). The rename of
// apps/<name>.json is the one commit point of install, update, rollback,
// commit and remove: before it the old state holds, after it the new.
// An image is stored (and verified, as stored) before any state names
// it, so the invariant after a crash at any instant is: every app's state
// file parses and names only images that are in images/ and verify; a
// crash leaves at most temp files in tmp/ (the next command that finds
// no other at work removes them) and images no state names (gc removes
// them).
package store

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"cimg.dev/cimg/format"
	"cimg.dev/cimg/internal/instance"
	"cimg.dev/cimg/internal/partial"
	"cimg.dev/cimg/manifest"
)

// Version is one stored version of an app.
type Version struct {
	Version  string `json:"version"`
	RootHash string `json:"root_hash"`
	// File is the image's name in images/: <root-hash>.cimg, or, for an
	// image whose payload another stored image shares but whose manifest
	// or signatures differ, <root-hash>-<hash of the whole file>.cimg.
	File      string    `json:"file"`
	Size      int64     `json:"size"`
	Signers   []string  `json:"signers,omitempty"` // key ids that signed it (when keys are configured)
	Installed time.Time `json:"installed"`
}

// App is an app's state file.
type App struct {
	Name     string   `json:"name"`
	Current  *Version `json:"current"`
	Previous *Version `json:"previous,omitempty"`
	Trial    *Version `json:"trial,omitempty"`
	// TrialAttempts counts starts of the trial version not yet confirmed
	// healthy (a power cut during a trial must not forget it).
	TrialAttempts int      `json:"trial_attempts,omitempty"`
	Floor         string   `json:"floor"`  // the lowest version an update may install (anti-rollback)
	Grants        []string `json:"grants"` // the operator's --grant words
	// Older are the versions that were previous (or current, before a
	// reset) before, newest first: what gc --keep N keeps besides the
	// versions named above. Their images may be gone (gc).
	Older []*Version `json:"older,omitempty"`
	// TrialGrantsBefore are the grants before the trial's update added
	// its own: they are the app's again if the trial is dropped.
	// (A pointer: no grants at all is a value to give back, too.)
	TrialGrantsBefore *[]string `json:"trial_grants_before,omitempty"`
}

// dropTrial forgets the trial version, and the grants that came with
// its update: the operator granted them to that version.
func (a *App) dropTrial() {
	if a.Trial != nil && a.TrialGrantsBefore != nil {
		a.Grants = *a.TrialGrantsBefore
	}
	a.Trial, a.TrialAttempts, a.TrialGrantsBefore = nil, 0, nil
}

// maxOlder bounds App.Older: gc --keep cannot keep more.
const maxOlder = 16

// retire puts v at the head of a.Older (once, and not if it is one of the
// app's named versions).
func (a *App) retire(v *Version) {
	if v == nil {
		return
	}
	for _, n := range []*Version{a.Current, a.Previous, a.Trial} {
		if n != nil && n.File == v.File {
			return
		}
	}
	older := []*Version{v}
	for _, o := range a.Older {
		if o.File != v.File && len(older) < maxOlder {
			older = append(older, o)
		}
	}
	a.Older = older
}

// Store is a store directory.
type Store struct {
	Root string
}

// Admit is the launcher's check of an image and the operator's grants
// (arch, signatures, privileges), as a launch would check it; the store
// calls it on the copy it keeps. It returns the signer key ids.
type Admit func(image string, grants []string) (signers []string, err error)

// ErrNotInstalled: no app has the name.
type ErrNotInstalled struct{ Name string }

func (e *ErrNotInstalled) Error() string {
	return fmt.Sprintf("no app %q is installed (cimg-run list shows them; cimg-run install FILE --name %s installs it)", e.Name, e.Name)
}

// Open opens (making it if needed) the store at root, and removes what
// earlier commands killed midway left in tmp/.
func Open(root string) (*Store, error) {
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("store %s: %w", root, err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(root, &st); err != nil {
		return nil, fmt.Errorf("store %s: %w", root, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR || st.Uid != 0 || st.Mode&0o077 != 0 {
		return nil, fmt.Errorf("store %s must be a directory owned by root with mode 0700: fix it (chown root: %s; chmod 0700 %s)", root, root, root)
	}
	for _, d := range []string{"images", "apps", "locks", "tmp", "volumes"} {
		if err := os.Mkdir(filepath.Join(root, d), 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("store %s: %w", root, err)
		}
	}
	s := &Store{Root: root}
	// Temp files are written only under the store's shared lock: when
	// the exclusive one is free, whatever is in tmp/ is a killed
	// command's.
	if fd, err := s.lock(".store.lock", unix.LOCK_EX|unix.LOCK_NB); err == nil {
		s.cleanTmp()
		unix.Close(fd)
	}
	return s, nil
}

// cleanTmp removes temp files; the caller holds the store's exclusive
// lock, so no command is writing one.
func (s *Store) cleanTmp() {
	for _, dir := range []string{filepath.Join(s.Root, "tmp"), filepath.Join(s.Root, "apps")} {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if !strings.HasPrefix(e.Name(), ".tmp-") && dir != filepath.Join(s.Root, "tmp") {
				continue
			}
			if strings.HasPrefix(e.Name(), "dl-") {
				continue // a partial download, kept to be resumed (gc removes it)
			}
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// Image is the path of the stored image with root hash h (the first one
// stored with it).
func (s *Store) Image(h string) string { return filepath.Join(s.Root, "images", h+".cimg") }

// ImageOf is the path of version v's image.
func (s *Store) ImageOf(v *Version) string {
	if v.File == "" {
		return s.Image(v.RootHash)
	}
	return filepath.Join(s.Root, "images", v.File)
}

// Volumes is the store's volume directory (the launcher's --volume-dir).
func (s *Store) Volumes() string { return filepath.Join(s.Root, "volumes") }

// lockApp takes the app's lock, and the store's shared: commands on
// different apps do not wait for each other, gc (which takes the store's
// exclusively) waits for all of them. The returned func lets go.
func (s *Store) lockApp(name string) (func(), error) {
	if err := instance.CheckName(name); err != nil {
		return nil, err
	}
	all, err := s.lock(".store.lock", unix.LOCK_SH)
	if err != nil {
		return nil, err
	}
	one, err := s.lock(name+".lock", unix.LOCK_EX)
	if err != nil {
		unix.Close(all)
		return nil, err
	}
	return func() { unix.Close(one); unix.Close(all) }, nil
}

// lock flocks locks/name (how: LOCK_SH or LOCK_EX) and returns its fd.
func (s *Store) lock(name string, how int) (int, error) {
	p := filepath.Join(s.Root, "locks", name)
	fd, err := unix.Open(p, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o600)
	if err == unix.EROFS {
		// A read-only store: nothing can write it, and a reader's lock
		// needs no write access (flock on a read-only fd).
		fd, err = unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
		if err == unix.ENOENT {
			return unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		}
	}
	if err != nil {
		return -1, fmt.Errorf("store lock %s: %w", name, err)
	}
	for {
		if err = unix.Flock(fd, how); err != unix.EINTR {
			break
		}
	}
	if err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("store lock %s: %w", name, err)
	}
	return fd, nil
}

// Get reads app name's state.
func (s *Store) Get(name string) (*App, error) {
	if err := instance.CheckName(name); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(s.Root, "apps", name+".json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, &ErrNotInstalled{Name: name}
	}
	if err != nil {
		return nil, err
	}
	a := new(App)
	if err := json.Unmarshal(b, a); err != nil {
		return nil, fmt.Errorf("app %s: state file %s: %w", name, filepath.Join(s.Root, "apps", name+".json"), err)
	}
	return a, nil
}

// List reads every app's state, by name.
func (s *Store) List() ([]*App, error) {
	entries, err := os.ReadDir(filepath.Join(s.Root, "apps"))
	if err != nil {
		return nil, err
	}
	var out []*App
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || strings.HasPrefix(name, ".") {
			continue
		}
		a, err := s.Get(name)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// commit replaces the app's state file: the commit point.
func (s *Store) commit(a *App) error {
	b, err := json.MarshalIndent(a, "", "  ")
	if err != nil {
		return err
	}
	failpoint("commit-before")
	if err := writeAtomic(filepath.Join(s.Root, "apps"), a.Name+".json", b); err != nil {
		return fmt.Errorf("app %s: write its state: %w", a.Name, err)
	}
	failpoint("commit-after")
	return nil
}

// remove deletes the app's state file (the commit point of remove).
func (s *Store) remove(name string) error {
	dir := filepath.Join(s.Root, "apps")
	if err := os.Remove(filepath.Join(dir, name+".json")); err != nil {
		return err
	}
	return syncDir(dir)
}

// Install stores and admits source as app name's first version.
func (s *Store) Install(name, source string, grants []string, admit Admit) (*App, error) {
	unlock, err := s.lockApp(name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if a, err := s.Get(name); err == nil {
		return nil, fmt.Errorf("app %s is installed already (version %s): cimg-run update %s FILE installs a new version", name, a.Current.Version, name)
	}
	v, m, err := s.store(source, grants, admit, nil)
	if err != nil {
		return nil, err
	}
	a := &App{Name: name, Current: v, Floor: m.Version, Grants: append([]string{}, grants...)}
	if err := s.commit(a); err != nil {
		return nil, err
	}
	return a, nil
}

// Update stores and admits source as app name's trial version; the
// caller starts it and then calls Confirm or Abandon.
func (s *Store) Update(name, source string, grants []string, allowDowngrade bool, admit Admit) (*App, error) {
	unlock, err := s.lockApp(name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	a, err := s.Get(name)
	if err != nil {
		return nil, err
	}
	all := append(append([]string(nil), a.Grants...), grants...)
	// Anti-rollback, before the image is kept.
	floor := func(m *manifest.Manifest) error {
		if CompareVersions(m.Version, a.Floor) < 0 && !allowDowngrade {
			return fmt.Errorf("app %s: version %s is below its floor %s (anti-rollback): refused; --allow-downgrade installs it anyway", name, m.Version, a.Floor)
		}
		return nil
	}
	v, _, err := s.store(source, all, admit, floor)
	if err != nil {
		return nil, err
	}
	if v.RootHash == a.Current.RootHash {
		return nil, fmt.Errorf("app %s: %s is the current version already (root hash %s)", name, source, v.RootHash[:12])
	}
	if a.Trial == nil {
		before := append([]string{}, a.Grants...)
		a.TrialGrantsBefore = &before // what an abandoned trial gives back
	}
	a.Trial, a.TrialAttempts, a.Grants = v, 0, all
	if err := s.commit(a); err != nil {
		return nil, err
	}
	return a, nil
}

// Confirm makes the trial version current (the old one stays as
// previous) and raises the floor to it.
func (s *Store) Confirm(name string) (*App, error) {
	return s.change(name, func(a *App) error {
		if a.Trial == nil {
			return fmt.Errorf("app %s has no version on trial", name)
		}
		retired := a.Previous
		a.Previous, a.Current, a.Trial, a.TrialAttempts, a.TrialGrantsBefore = a.Current, a.Trial, nil, 0, nil
		a.retire(retired)
		if CompareVersions(a.Current.Version, a.Floor) > 0 {
			a.Floor = a.Current.Version
		}
		return nil
	})
}

// Abandon drops the trial version: the current one stays.
func (s *Store) Abandon(name string) (*App, error) {
	return s.change(name, func(a *App) error {
		a.dropTrial()
		return nil
	})
}

// Rollback makes the previous version current (and the current one
// previous).
func (s *Store) Rollback(name string) (*App, error) {
	return s.change(name, func(a *App) error {
		if a.Previous == nil {
			return fmt.Errorf("app %s has no previous version to roll back to", name)
		}
		a.dropTrial()
		a.Previous, a.Current = a.Current, a.Previous
		return nil
	})
}

// TrialStart counts a start of the trial version not yet confirmed; after
// max of them without a Confirm, the trial is abandoned instead (the boot
// counter: a device that lost power, or crashed, during every trial
// start comes back on the old version). It returns the version to start.
func (s *Store) TrialStart(name string, max int) (*App, *Version, error) {
	// Without a trial nothing changes, and nothing is written: an app
	// must start from a full or read-only store.
	if a, err := s.Get(name); err != nil || a.Trial == nil {
		if err != nil {
			return nil, nil, err
		}
		return a, a.Current, nil
	}
	var v *Version
	a, err := s.change(name, func(a *App) error {
		v = a.Current
		if a.Trial == nil {
			return nil
		}
		if a.TrialAttempts >= max {
			a.dropTrial()
			return nil
		}
		a.TrialAttempts++
		v = a.Trial
		return nil
	})
	return a, v, err
}

// change applies f to the app's state under its lock and commits it.
func (s *Store) change(name string, f func(*App) error) (*App, error) {
	unlock, err := s.lockApp(name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	a, err := s.Get(name)
	if err != nil {
		return nil, err
	}
	if err := f(a); err != nil {
		return nil, err
	}
	return a, s.commit(a)
}

// Remove uninstalls the app; with purge its volumes go too. Its images
// stay until gc (another app may share them).
func (s *Store) Remove(name string, purge bool) error {
	unlock, err := s.lockApp(name)
	if err != nil {
		return err
	}
	defer unlock()
	if _, err := s.Get(name); err != nil {
		return err
	}
	if err := s.remove(name); err != nil {
		return fmt.Errorf("remove app %s: %w", name, err)
	}
	if purge {
		if err := os.RemoveAll(filepath.Join(s.Volumes(), name)); err != nil {
			return fmt.Errorf("app %s: remove its volumes: %w", name, err)
		}
	}
	return nil
}

// GC removes images no app names (current, previous or trial) and that
// are not among an app's keep most recent older versions, temp files and
// partial downloads nobody writes; it returns what it removed.
func (s *Store) GC(keep int) ([]string, error) {
	// No install or update between reading the apps and deleting: an
	// image stored but not yet named would go.
	fd, err := s.lock(".store.lock", unix.LOCK_EX)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	s.cleanTmp()
	removed, err := partial.Stale(filepath.Join(s.Root, "tmp"))
	if err != nil {
		return nil, err
	}
	apps, err := s.List()
	if err != nil {
		return nil, err
	}
	used := map[string]bool{}
	for _, a := range apps {
		named := []*Version{a.Current, a.Previous, a.Trial}
		for _, v := range append(named, a.Older[:min(keep, len(a.Older))]...) {
			if v != nil {
				used[filepath.Base(s.ImageOf(v))] = true
			}
		}
	}
	entries, err := os.ReadDir(filepath.Join(s.Root, "images"))
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if used[e.Name()] || !strings.HasSuffix(e.Name(), ".cimg") {
			continue
		}
		p := filepath.Join(s.Root, "images", e.Name())
		failpoint("gc-remove")
		if err := os.Remove(p); err == nil {
			removed = append(removed, p)
		}
	}
	return removed, syncDir(filepath.Join(s.Root, "images"))
}

// store copies source into tmp/, verifies the copy (what is kept is what
// was checked), checks its manifest (check, if set), admits it, and moves
// it to images/<root-hash>.cimg.
func (s *Store) store(source string, grants []string, admit Admit, check func(*manifest.Manifest) error) (*Version, *manifest.Manifest, error) {
	src, err := os.Open(source)
	if err != nil {
		return nil, nil, fmt.Errorf("install %s: %w", source, err)
	}
	defer src.Close()
	tmpName := ".tmp-" + randomHex() + ".cimg"
	tmp := filepath.Join(s.Root, "tmp", tmpName)
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("install %s: %w", source, err)
	}
	keep := false
	defer func() {
		f.Close()
		if !keep {
			os.Remove(tmp)
		}
	}()
	failpoint("store-copy")
	n, err := io.Copy(f, src)
	if err == nil {
		err = f.Sync()
	}
	if err != nil {
		return nil, nil, fmt.Errorf("install %s: copy into the store: %w", source, explainErrno(err))
	}
	failpoint("store-copied")
	img, err := format.Open(f, n)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", source, err)
	}
	if err := img.VerifyPayload(); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", source, err)
	}
	m, err := manifest.Parse(img.Manifest, source+" (embedded manifest)")
	if err != nil {
		return nil, nil, err
	}
	if check != nil {
		if err := check(m); err != nil {
			return nil, nil, err
		}
	}
	signers, err := admit(tmp, grants)
	if err != nil {
		// Named as the operator gave it, not by our temp copy.
		return nil, nil, errors.New(strings.ReplaceAll(err.Error(), tmp, source))
	}
	h := hex.EncodeToString(img.Footer.RootHash[:])
	if err := f.Chmod(0o444); err != nil {
		return nil, nil, err
	}
	file, err := s.place(f, tmp, h, n)
	if err != nil {
		return nil, nil, fmt.Errorf("install %s: %w", source, err)
	}
	keep = true
	if err := syncDir(filepath.Join(s.Root, "images")); err != nil {
		return nil, nil, err
	}
	failpoint("store-stored")
	return &Version{Version: m.Version, RootHash: h, File: file, Size: n, Signers: signers, Installed: time.Now().UTC()}, m, nil
}

// place moves the verified temp file into images/ without ever replacing
// a stored image (RENAME_NOREPLACE): a file with the same bytes is reused
// (the temp file goes); one with the same root hash but other bytes (the
// manifest or signatures differ, the payload not) gets a name of its
// own. It returns the image's name in images/.
func (s *Store) place(f *os.File, tmp, h string, n int64) (string, error) {
	sum := sha256.New()
	if _, err := io.Copy(sum, io.NewSectionReader(f, 0, n)); err != nil {
		return "", err
	}
	names := []string{h + ".cimg", h + "-" + hex.EncodeToString(sum.Sum(nil))[:16] + ".cimg"}
	failpoint("store-rename")
	for _, name := range names {
		dst := filepath.Join(s.Root, "images", name)
		err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, dst, unix.RENAME_NOREPLACE)
		if err == nil {
			return name, nil
		}
		if err != unix.EEXIST {
			return "", err
		}
		if same, err := sameFile(f, n, dst); err != nil {
			return "", err
		} else if same {
			os.Remove(tmp)
			return name, nil
		}
	}
	return "", fmt.Errorf("images %v exist with other content: refused", names)
}

// sameFile reports whether the stored image p has the n bytes of f.
func sameFile(f *os.File, n int64, p string) (bool, error) {
	g, err := os.Open(p)
	if err != nil {
		return false, err
	}
	defer g.Close()
	if st, err := g.Stat(); err != nil || st.Size() != n {
		return false, err
	}
	a, b := make([]byte, 1<<16), make([]byte, 1<<16)
	for off := int64(0); off < n; off += int64(len(a)) {
		k, _ := f.ReadAt(a, off)
		l, _ := g.ReadAt(b, off)
		if k != l || string(a[:k]) != string(b[:l]) {
			return false, nil
		}
	}
	return true, nil
}

// explainErrno turns a full or read-only store into advice.
func explainErrno(err error) error {
	switch {
	case errors.Is(err, syscall.ENOSPC):
		return fmt.Errorf("%w: the store's filesystem is full (cimg-run gc frees unused images)", err)
	case errors.Is(err, syscall.EROFS):
		return fmt.Errorf("%w: the store's filesystem is read-only", err)
	}
	return err
}

// writeAtomic replaces dir/name: temp file, fsync, rename, fsync(dir).
func writeAtomic(dir, name string, data []byte) error {
	f, err := os.CreateTemp(dir, ".tmp-"+name+"-")
	if err != nil {
		return explainErrno(err)
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return explainErrno(err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return explainErrno(err)
	}
	failpoint("write-synced")
	if err := os.Rename(f.Name(), filepath.Join(dir, name)); err != nil {
		f.Close()
		return err
	}
	f.Close()
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func randomHex() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// CompareVersions orders versions as semver does, leniently: build
// metadata (+...) is ignored; the release parts (before the first '-')
// compare as numbers where both are numbers (1.10 > 1.9), as text
// otherwise, a missing part counting as 0 (1.0 = 1.0.0); a pre-release
// (-rc1) comes before its release, and pre-releases compare part by part.
// It returns -1, 0 or 1.
func CompareVersions(a, b string) int {
	a, _, _ = strings.Cut(a, "+")
	b, _, _ = strings.Cut(b, "+")
	ra, pa, hasPa := strings.Cut(a, "-")
	rb, pb, hasPb := strings.Cut(b, "-")
	if c := compareParts(strings.Split(ra, "."), strings.Split(rb, "."), "0"); c != 0 {
		return c
	}
	switch {
	case !hasPa && !hasPb:
		return 0
	case !hasPa:
		return 1
	case !hasPb:
		return -1
	}
	return compareParts(strings.Split(pa, "."), strings.Split(pb, "."), "")
}

// compareParts compares dotted parts, missing ones standing for pad.
func compareParts(pa, pb []string, pad string) int {
	for i := 0; i < len(pa) || i < len(pb); i++ {
		x, y := pad, pad
		if i < len(pa) {
			x = pa[i]
		}
		if i < len(pb) {
			y = pb[i]
		}
		nx, ex := strconv.ParseUint(x, 10, 64)
		ny, ey := strconv.ParseUint(y, 10, 64)
		switch {
		case ex == nil && ey == nil:
			if nx != ny {
				if nx < ny {
					return -1
				}
				return 1
			}
		case x != y:
			// Semver: a numeric identifier sorts before a text one.
			if ex == nil {
				return -1
			}
			if ey == nil {
				return 1
			}
			if x < y {
				return -1
			}
			return 1
		}
	}
	return 0
}

// Reset reinstalls source (a factory image) as app name's only version:
// previous and trial go, the grants stay, the floor does not fall (a
// factory version below it is still the operator's explicit choice). An
// app not installed yet is installed with the given grants.
func (s *Store) Reset(name, source string, grants []string, admit Admit) (*App, error) {
	unlock, err := s.lockApp(name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	a, err := s.Get(name)
	if errors.As(err, new(*ErrNotInstalled)) {
		a, err = &App{Name: name, Grants: grants}, nil
	}
	if err != nil {
		return nil, err
	}
	retired := []*Version{a.Previous, a.Current}
	a.dropTrial() // first: the factory version gets the app's own grants
	v, m, err := s.store(source, a.Grants, admit, nil)
	if err != nil {
		return nil, err
	}
	a.Current, a.Previous = v, nil
	for _, r := range retired {
		a.retire(r)
	}
	if CompareVersions(m.Version, a.Floor) > 0 {
		a.Floor = m.Version
	}
	return a, s.commit(a)
}

// WipeVolumes removes the app's volumes (a factory reset's).
func (s *Store) WipeVolumes(name string) error {
	if err := instance.CheckName(name); err != nil {
		return err
	}
	return os.RemoveAll(filepath.Join(s.Volumes(), name))
}
