package stage

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func write(t *testing.T, p, s string) {
	t.Helper()
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestMergeClashAndProvenance(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	write(t, filepath.Join(a, "etc/a.conf"), "a")
	write(t, filepath.Join(b, "etc/b.conf"), "b")
	write(t, filepath.Join(b, "etc/a.conf"), "clash")
	s := New(Options{Epoch: 5})
	if err := s.Add(a, "/", "rootfs"); err != nil {
		t.Fatal(err)
	}
	// Directories merge; the file that exists already is an error naming
	// both sources.
	err := s.Add(filepath.Join(b, "etc"), "/etc", "added")
	if err == nil || !strings.Contains(err.Error(), "/etc/a.conf is in the image already") ||
		!strings.Contains(err.Error(), filepath.Join(a, "etc/a.conf")) {
		t.Fatalf("clash: %v", err)
	}
	if !s.Tree().IsDir("/etc") {
		t.Error("/etc is not a directory after the merge")
	}
	recs := map[string]Record{}
	for _, r := range s.Records() {
		recs[r.Path] = r
	}
	if r := recs["/etc/a.conf"]; r.Source != filepath.Join(a, "etc/a.conf") || r.Reason != "rootfs" {
		t.Errorf("provenance of /etc/a.conf: %+v", r)
	}
}

func TestHardlinksAndImagePaths(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "x"), "x")
	os.Link(filepath.Join(dir, "x"), filepath.Join(dir, "y"))
	s := New(Options{})
	if err := s.Add(dir, "/data", "added"); err != nil {
		t.Fatal(err)
	}
	if !s.Tree().Has("/data/x") || !s.Tree().Has("/data/y") || s.Tree().Len() != 3 {
		t.Errorf("tree: %d entries", s.Tree().Len())
	}
	for _, bad := range []string{"relative/path", "/a/../../etc"} {
		if err := s.Add(dir, bad, "added"); err == nil {
			t.Errorf("Add to %q succeeded", bad)
		}
	}
	if err := s.Add(filepath.Join(dir, "nope"), "/n", "added"); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("missing source: %v", err)
	}
}
