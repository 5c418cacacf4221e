package build

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"cimg.dev/cimg/format"
	"cimg.dev/cimg/manifest"
)

// testRootfs makes a small rootfs whose /bin/app is a copy of the test
// binary itself (an ELF of the host's arch).
func testRootfs(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	self, err := os.ReadFile("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	for p, content := range map[string][]byte{
		"bin/app":         self,
		"etc/app.conf":    []byte("key = value\n"),
		"usr/share/a.txt": bytes.Repeat([]byte("text "), 100000),
	} {
		os.MkdirAll(filepath.Join(dir, filepath.Dir(p)), 0o755)
		if err := os.WriteFile(filepath.Join(dir, p), content, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.Symlink("app", filepath.Join(dir, "bin/app-link"))
	return dir
}

func hostArch() string { return manifest.CanonicalArch(runtime.GOARCH) }

func TestReproducibleAcrossCores(t *testing.T) {
	root := testRootfs(t)
	out := t.TempDir()
	var sums [][32]byte
	for i, procs := range []int{1, runtime.NumCPU(), 1} {
		prev := runtime.GOMAXPROCS(procs)
		res, err := Build(context.Background(), Spec{
			Rootfs: root, Entrypoint: "/bin/app-link", Epoch: 1234567890,
			Output: filepath.Join(out, "app"+string(rune('0'+i))+".cimg"),
		})
		runtime.GOMAXPROCS(prev)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(res.Output)
		sums = append(sums, sha256.Sum256(b))
		if res.Manifest.Arch != hostArch() {
			t.Errorf("arch %q detected through the entrypoint symlink, want %q", res.Manifest.Arch, hostArch())
		}
	}
	if sums[0] != sums[1] || sums[1] != sums[2] {
		t.Fatalf("builds differ: %x", sums)
	}
}

func TestOutputIsCompleteAndVerifies(t *testing.T) {
	root := testRootfs(t)
	out := filepath.Join(t.TempDir(), "app.cimg")
	res, err := Build(context.Background(), Spec{Rootfs: root, Entrypoint: "/bin/app", Output: out})
	if err != nil {
		t.Fatal(err)
	}
	f, _ := os.Open(out)
	defer f.Close()
	fi, _ := f.Stat()
	if fi.Size() != res.Size {
		t.Fatalf("file is %d bytes, result says %d", fi.Size(), res.Size)
	}
	img, err := format.Open(f, fi.Size())
	if err != nil {
		t.Fatal(err)
	}
	if err := img.VerifyPayload(); err != nil {
		t.Fatal(err)
	}
	m, err := manifest.Parse(img.Manifest, "embedded")
	if err != nil {
		t.Fatal(err)
	}
	if m.Name != "app" || m.App.Command[0] != "/bin/app" || m.Build != nil {
		t.Errorf("embedded manifest: %+v", m)
	}
}

// TestFailureLeavesNothing: a failing or cancelled build neither creates
// the output nor leaves a temporary file, and an existing output survives.
func TestFailureLeavesNothing(t *testing.T) {
	root := testRootfs(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "app.cimg")
	os.WriteFile(out, []byte("previous image"), 0o644)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Build(ctx, Spec{Rootfs: root, Entrypoint: "/bin/app", Output: out})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled build: %v", err)
	}
	_, err = Build(context.Background(), Spec{Rootfs: root, Entrypoint: "/bin/missing", Output: out})
	if err == nil || !strings.Contains(err.Error(), "/bin/missing is not in the image") {
		t.Errorf("missing entrypoint: %v", err)
	}
	_, err = Build(context.Background(), Spec{Rootfs: root, Entrypoint: "/bin/app", Compression: "brotli", Output: out})
	if err == nil || !strings.Contains(err.Error(), "brotli") {
		t.Errorf("bad compression: %v", err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("directory holds %d entries after failed builds, want only the old output", len(ents))
	}
	if b, _ := os.ReadFile(out); string(b) != "previous image" {
		t.Errorf("old output changed: %q", b)
	}
}

func TestArchMismatch(t *testing.T) {
	root := testRootfs(t)
	m := manifest.Default()
	m.Arch = "riscv64"
	_, err := Build(context.Background(), Spec{Manifest: &m, Binary: filepath.Join(root, "bin/app"), Output: filepath.Join(t.TempDir(), "x.cimg")})
	if err == nil || !strings.Contains(err.Error(), "riscv64") || !strings.Contains(err.Error(), hostArch()) {
		t.Errorf("got %v", err)
	}
}

func TestSignAndResign(t *testing.T) {
	root := testRootfs(t)
	out := filepath.Join(t.TempDir(), "app.cimg")
	if _, err := Build(context.Background(), Spec{Rootfs: root, Entrypoint: "/bin/app", Output: out}); err != nil {
		t.Fatal(err)
	}
	k1 := testKey(1)
	if err := Sign(out, out, []ed25519Key{k1}); err != nil {
		t.Fatal(err)
	}
	f, _ := os.Open(out)
	defer f.Close()
	fi, _ := f.Stat()
	img, err := format.Open(f, fi.Size())
	if err != nil {
		t.Fatal(err)
	}
	if err := img.Verify([]ed25519Pub{pub(k1)}); err != nil {
		t.Fatal(err)
	}
}
