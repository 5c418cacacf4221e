//go:build slow

package squashfs_test

// The slow tier (go test -tags slow; make test runs it): an image larger
// than 4 GiB, so that block lists, fragment entries and file data start
// beyond what 32-bit offsets reach.

import (
	"context"
	"crypto/sha256"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"cimg.dev/cimg/internal/mounttest"
	"cimg.dev/cimg/internal/squashfs"
)

type randFile struct {
	name string
	size int64
	seed byte
}

func (r randFile) open() (io.ReadCloser, error) {
	return io.NopCloser(io.LimitReader(rand.NewChaCha8([32]byte{r.seed}), r.size)), nil
}

func (r randFile) sum() [32]byte {
	rc, _ := r.open()
	h := sha256.New()
	io.Copy(h, rc)
	var s [32]byte
	h.Sum(s[:0])
	return s
}

func TestOver4GiB(t *testing.T) {
	mounttest.RequireRoot(t)
	files := []randFile{
		{"a-big", 4<<30 + 300<<20 + 12345, 1}, // > 4 GiB, incompressible
		{"b-after", 1<<20 + 100, 2},           // data starts beyond 4 GiB
		{"c-small", 100, 3},                   // a fragment beyond 4 GiB
	}
	tr := squashfs.NewTree(squashfs.Entry{Mode: fs.ModeDir | 0o755})
	for _, f := range files {
		if err := tr.Add(squashfs.Entry{Path: f.name, Mode: 0o644, Size: f.size, Open: f.open}); err != nil {
			t.Fatal(err)
		}
	}
	img := filepath.Join(t.TempDir(), "huge.sqfs")
	out, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	// Level 1: this test is about offsets, not ratios.
	st, err := squashfs.Write(context.Background(), out, tr, squashfs.Options{Compression: squashfs.Zstd, Level: 1, MkfsTime: epoch})
	out.Close()
	if err != nil {
		t.Fatal(err)
	}
	if st.Size <= 4<<30 {
		t.Fatalf("image is %d bytes; the test needs more than 4 GiB", st.Size)
	}
	t.Logf("image: %d bytes", st.Size)

	list, err := exec.Command(requireTool(t, "unsquashfs"), "-lln", img).CombinedOutput()
	if err != nil {
		t.Fatalf("unsquashfs -lln: %v\n%s", err, list)
	}
	for _, f := range files {
		if !strings.Contains(string(list), " "+itoa(f.size)+" ") {
			t.Errorf("unsquashfs does not list %s with size %d:\n%s", f.name, f.size, list)
		}
	}
	mnt := mounttest.Mount(t, img)
	for _, f := range files {
		g, err := os.Open(filepath.Join(mnt, f.name))
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		n, err := io.Copy(h, g)
		g.Close()
		var s [32]byte
		h.Sum(s[:0])
		if err != nil || n != f.size || s != f.sum() {
			t.Errorf("%s: kernel read %d bytes (want %d), err %v, content equal %v", f.name, n, f.size, err, s == f.sum())
		}
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
