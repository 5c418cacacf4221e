package loop

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cimg.dev/cimg/internal/mounttest"
)

// TestAttachReadOnlyAutoclear attaches part of a real file and checks what
// the kernel says about the device, then that closing it frees it.
func TestAttachReadOnlyAutoclear(t *testing.T) {
	mounttest.RequireRoot(t)
	p := filepath.Join(t.TempDir(), "backing")
	if err := os.WriteFile(p, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d, err := Attach(f.Fd(), 0, 256<<10)
	if err != nil {
		t.Fatal(err)
	}
	sys := "/sys/block/" + filepath.Base(d.Path)
	read := func(name string) string {
		b, _ := os.ReadFile(sys + "/" + name)
		return strings.TrimSpace(string(b))
	}
	for name, want := range map[string]string{"ro": "1", "loop/autoclear": "1", "loop/sizelimit": "262144", "size": "512"} {
		if got := read(name); got != want {
			t.Errorf("%s/%s = %q, want %q", sys, name, got, want)
		}
	}
	if got := read("loop/backing_file"); got != p {
		t.Errorf("backing file %q, want %q", got, p)
	}
	d.Close()
	// Nothing holds the device now: autoclear detaches it.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if read("loop/backing_file") == "" {
			return
		}
	}
	t.Errorf("%s still attached after the last close", d.Path)
}
