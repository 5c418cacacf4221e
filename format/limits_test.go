package format

import (
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// zeroTail stands for a file of size bytes that is all zeros except for
// tail, stored from offset tailAt: a payload (and here signatures) of any
// size with no memory behind it, as a sparse file would be. Writes before
// tailAt are refused: the zeros are fixed.
type zeroTail struct {
	size   int64
	tailAt int64
	tail   []byte
}

func (z *zeroTail) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > z.size {
		return 0, errors.New("read past the end")
	}
	clear(p)
	if end := off + int64(len(p)); end > z.tailAt {
		from := max(off, z.tailAt)
		copy(p[from-off:], z.tail[from-z.tailAt:min(end-z.tailAt, int64(len(z.tail)))])
	}
	return len(p), nil
}

func (z *zeroTail) WriteAt(p []byte, off int64) (int, error) {
	if off < z.tailAt {
		return 0, errors.New("write into the zero part")
	}
	if end := off + int64(len(p)) - z.tailAt; end > int64(len(z.tail)) {
		z.tail = append(z.tail, make([]byte, end-int64(len(z.tail)))...)
	}
	copy(z.tail[off-z.tailAt:], p)
	z.size = max(z.size, off+int64(len(p)))
	return len(p), nil
}

// allocated returns the bytes fn allocated on the heap.
func allocated(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// hugeSigsImage writes a sparse file whose footer (checksum and all
// valid) gives the signatures section sigSize bytes of zeros, and makes
// the file that long: the file-size check alone cannot catch it.
func hugeSigsImage(t *testing.T, sigSize int64) string {
	t.Helper()
	const manifest = "name = \"big\"\n"
	payload := make([]byte, BlockSize)
	ft := &Footer{PayloadSize: BlockSize, TreeOffset: BlockSize, Salt: []byte("salt")}
	ft.RootHash = hashBlock(ft.Salt, payload)
	ft.ManifestOffset, ft.ManifestSize = BlockSize, int64(len(manifest))
	ft.ManifestHash = sha256.Sum256([]byte(manifest))
	ft.SigOffset, ft.SigSize = ft.ManifestOffset+ft.ManifestSize, sigSize
	p := filepath.Join(t.TempDir(), "huge.cimg")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, w := range []struct {
		b   []byte
		off int64
	}{{payload, 0}, {[]byte(manifest), ft.ManifestOffset}, {ft.Marshal(), ft.SigOffset + sigSize}} {
		if _, err := f.WriteAt(w.b, w.off); err != nil {
			t.Skipf("cannot write a sparse %d-byte file here: %v", ft.SigOffset+sigSize+FooterSize, err)
		}
	}
	return p
}

// TestHugeSignaturesSection: a footer claiming a 2 GiB or a 64 GiB
// signatures section, in a (sparse) file that long, is refused before
// anything of that size is allocated or read. Before the cap, Open
// allocated the whole section (4 GB of RSS for 2 GiB, a Go out-of-memory
// crash for 64 GiB), with or without trusted keys.
func TestHugeSignaturesSection(t *testing.T) {
	for _, size := range []int64{2 << 30, 64 << 30} {
		p := hugeSigsImage(t, size)
		var err error
		start := time.Now()
		alloc := allocated(func() {
			var img *Image
			var f *os.File
			if img, f, err = OpenFile(p); err == nil {
				f.Close()
				_, err = img.VerifySignatures(nil)
			}
		})
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("%d-byte signatures: Open took %v", size, took)
		}
		if alloc > 16<<20 {
			t.Fatalf("%d-byte signatures: Open allocated %d bytes (%v)", size, alloc, err)
		}
		var se *SectionError
		var ze *SizeError
		if !errors.As(err, &se) || se.Section != "signatures" || !errors.As(err, &ze) || !errors.Is(err, ErrCorrupt) ||
			ze.Size != uint64(size) || ze.Cap != MaxSigSize || ze.FileLimit {
			t.Fatalf("%d-byte signatures: got %v, want a signatures SizeError", size, err)
		}
		for _, want := range []string{"sig_size", itoa(size), "65536-byte cap", "rebuild"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not say %q", err, want)
			}
		}
	}
}

// TestSectionCaps: every section size is checked against its cap and
// against the room left in the file, and the error names the field, the
// claimed size and the cap.
func TestSectionCaps(t *testing.T) {
	b := buildImage(t, 2, "m")
	ft, err := ParseFooter(b[len(b)-FooterSize:], int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		mutate  func(f *Footer)
		section string
		size    uint64
		cap     uint64
		file    bool
	}{
		{"manifest over the cap", func(f *Footer) { f.ManifestSize = 2 << 20 }, "manifest", 2 << 20, MaxManifestSize, false},
		{"signatures over the cap", func(f *Footer) { f.SigSize = MaxSigSize + 1 }, "signatures", MaxSigSize + 1, MaxSigSize, false},
		{"manifest past the file", func(f *Footer) { f.ManifestSize = 5000 }, "manifest", 5000, 1, true},
		{"payload past the file", func(f *Footer) { f.PayloadSize = 1 << 40 }, "payload", 1 << 40, uint64(len(b) - FooterSize), true},
		{"payload negative", func(f *Footer) { f.PayloadSize = -4096 }, "payload", 1<<64 - 4096, uint64(len(b) - FooterSize), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := *ft
			tc.mutate(&f)
			_, err := ParseFooter(f.Marshal(), int64(len(b)))
			var se *SectionError
			var ze *SizeError
			if !errors.As(err, &se) || se.Section != tc.section || !errors.As(err, &ze) || !errors.Is(err, ErrCorrupt) ||
				ze.Size != tc.size || ze.Cap != tc.cap || ze.FileLimit != tc.file {
				t.Fatalf("got %#v (%v), want a %s SizeError of %d over %d", ze, err, tc.section, tc.size, tc.cap)
			}
		})
	}
}

// TestVerifyPayloadMemory: checking a 512 MiB payload allocates a read
// buffer per core and little else. Before streaming, VerifyPayload held
// the data hashes, every level, the joined tree and the stored tree: four
// copies of the 4 MiB tree.
func TestVerifyPayloadMemory(t *testing.T) {
	const payload = 512 << 20
	z := &zeroTail{size: payload, tailAt: payload}
	ft, _, err := Finish(z, payload, FinishOptions{Manifest: []byte("name = \"z\"\n")})
	if err != nil {
		t.Fatal(err)
	}
	img, err := Open(z, z.size)
	if err != nil {
		t.Fatal(err)
	}
	alloc := allocated(func() { err = img.VerifyPayload() })
	if err != nil {
		t.Fatal(err)
	}
	limit := uint64(runtime.GOMAXPROCS(0))*(1<<20+8<<10) + 256<<10
	t.Logf("VerifyPayload of %d MiB (tree %d KiB) allocated %d KiB, limit %d KiB", payload>>20, ft.TreeSize>>10, alloc>>10, limit>>10)
	if alloc > limit || alloc >= uint64(ft.TreeSize) {
		t.Fatalf("VerifyPayload allocated %d bytes for a %d-byte tree, want ≤ %d", alloc, ft.TreeSize, limit)
	}
	// And a changed tree block, deep in level 0, is still caught.
	z.tail[ft.TreeSize-BlockSize+7] ^= 1
	if err := img.VerifyPayload(); !errors.Is(err, ErrIntegrity) || !strings.Contains(err.Error(), "verity") {
		t.Fatalf("changed tree: %v", err)
	}
}
