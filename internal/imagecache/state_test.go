package imagecache

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"cimg.dev/cimg/internal/mounttest"
)

// TestStateDirRefused: a state directory (or its images directory) that
// is a symlink, writable by others or not root's is refused by
// CheckStateDir, Mount, Verify and GC, with the path, what is wrong and
// the fix.
func TestStateDirRefused(t *testing.T) {
	mounttest.RequireRoot(t)
	_, f, img := testImage(t, []byte("refused"))
	for _, c := range []struct {
		name  string
		setup func(state string) (bad string)
		want  []string
	}{
		{"symlink", func(state string) string {
			real := state + ".real"
			os.Mkdir(real, 0o700)
			os.Symlink(real, state)
			return state
		}, []string{"is a symlink", "remove the symlink"}},
		{"mode 0777", func(state string) string {
			os.Mkdir(state, 0o700)
			os.Chmod(state, 0o777)
			return state
		}, []string{"writable by group or others (mode 0777)", "chmod 0700 " + "STATE"}},
		{"owned by uid 1000", func(state string) string {
			os.Mkdir(state, 0o700)
			os.Chown(state, 1000, 1000)
			return state
		}, []string{"owned by uid 1000, not root", "chown root:root " + "STATE"}},
		{"images group-writable", func(state string) string {
			os.MkdirAll(filepath.Join(state, "images"), 0o700)
			os.Chmod(filepath.Join(state, "images"), 0o770)
			return filepath.Join(state, "images")
		}, []string{"writable by group or others (mode 0770)", "chmod 0700 " + "STATE"}},
		{"images a symlink", func(state string) string {
			os.Mkdir(state, 0o700)
			os.Mkdir(filepath.Join(state, "elsewhere"), 0o700)
			os.Symlink("elsewhere", filepath.Join(state, "images"))
			return filepath.Join(state, "images")
		}, []string{"is a symlink", "remove the symlink"}},
		{"verified a symlink", func(state string) string {
			os.MkdirAll(filepath.Join(state, "images"), 0o700)
			os.Symlink("/tmp", filepath.Join(state, "verified"))
			return filepath.Join(state, "verified")
		}, []string{"is a symlink", "remove the symlink"}},
		{"a file", func(state string) string {
			os.WriteFile(state, nil, 0o600)
			return state
		}, []string{"is not a directory", "remove it"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			state := filepath.Join(t.TempDir(), "state")
			bad := c.setup(state)
			check := func(what string, err error) {
				t.Helper()
				if !errors.Is(err, ErrUnsafeStateDir) {
					t.Fatalf("%s: %v, want it refused", what, err)
				}
				msg := err.Error()
				for _, w := range append(c.want, bad) {
					if w = strings.ReplaceAll(w, "STATE", bad); !strings.Contains(msg, w) {
						t.Errorf("%s: %q does not say %q", what, msg, w)
					}
				}
			}
			check("CheckStateDir", CheckStateDir(state))
			l, err := Mount(state, f, img, false)
			if err == nil {
				l.Release()
				GC(state)
			}
			check("Mount", err)
			check("Verify", Verify(state, f, img, false))
			if !strings.HasSuffix(bad, "verified") { // GC uses no marks
				_, err = GC(state)
				check("GC", err)
			}
		})
	}
}

// TestStateDirCreated: what is missing is created 0700, verification
// marks 0600, and GC of a state directory never made is a no-op.
func TestStateDirCreated(t *testing.T) {
	mounttest.RequireRoot(t)
	_, f, img := testImage(t, []byte("created"))
	state := filepath.Join(t.TempDir(), "a", "state")
	if done, err := GC(state); err != nil || len(done) > 0 {
		t.Fatalf("GC of a missing state dir: %v, %v", done, err)
	}
	if _, err := os.Stat(state); !os.IsNotExist(err) {
		t.Errorf("GC created %s", state)
	}
	old := unix.Umask(0)
	err := Verify(state, f, img, false)
	unix.Umask(old)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{state, filepath.Join(state, "images"), filepath.Join(state, "verified")} {
		if fi, err := os.Lstat(d); err != nil || fi.Mode() != os.ModeDir|0o700 {
			t.Errorf("%s: %v %v, want a directory, mode 0700", d, fi.Mode(), err)
		}
	}
	marks, _ := filepath.Glob(filepath.Join(state, "verified", "*"))
	if len(marks) != 1 {
		t.Fatalf("marks %q, want one", marks)
	}
	if fi, _ := os.Lstat(marks[0]); fi.Mode() != 0o600 {
		t.Errorf("mark %s is %v, want 0600", marks[0], fi.Mode())
	}
}
