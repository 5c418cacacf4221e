package partial

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// TestStale: gc removes partials nobody writes and sidecars whose
// partial is gone, never one a download holds (its flock).
func TestStale(t *testing.T) {
	dir := t.TempDir()
	idle, busy, orphan := Base(dir, "http://a/idle"), Base(dir, "http://a/busy"), Base(dir, "http://a/orphan")
	for _, b := range []string{idle, busy} {
		os.WriteFile(b+".part", []byte("x"), 0o600)
		os.WriteFile(b+".json", []byte("{}"), 0o600)
	}
	os.WriteFile(orphan+".json", []byte("{}"), 0o600)
	f, err := os.OpenFile(busy+".part", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	removed, err := Stale(dir)
	if err != nil || !slices.Equal(removed, []string{idle + ".part"}) {
		t.Errorf("Stale removed %v (%v), want only the idle partial", removed, err)
	}
	left, _ := filepath.Glob(filepath.Join(dir, "*"))
	if want := []string{busy + ".json", busy + ".part"}; !slices.Equal(left, want) {
		t.Errorf("left %v, want the busy download's files only", left)
	}
	Discard(dir, "http://a/busy")
	if left, _ := filepath.Glob(filepath.Join(dir, "*")); len(left) != 0 {
		t.Errorf("left after Discard: %v", left)
	}
}
