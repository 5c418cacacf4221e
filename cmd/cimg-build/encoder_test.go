package main

// The encoders of the cimg-build that make builds (CGO_ENABLED=1 and the
// cimg_clibs tag: the C encoders libzstd, liblzma, libdeflate and liblz4)
// against the pure-Go fallback (CGO_ENABLED=0, which the other tests
// here run): reproducible, named in the provenance, and as small as
// mksquashfs's image of the same files.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"cimg.dev/cimg/internal/mounttest"
)

// buildCgo compiles this command with cgo and the pinned C libraries, as
// the Makefile does.
func buildCgo(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Fatal("gcc is needed to build cimg-build with cgo (apt-get install gcc)")
	}
	for _, lib := range []string{"liblzma.a", "libdeflate.a", "liblz4.a"} {
		if _, err := os.Stat(filepath.Join("..", "..", ".clibs", "lib", lib)); err != nil {
			t.Fatalf("%v: the pinned C encoders are not built; run scripts/clibs.sh (make test does)", err)
		}
	}
	out := filepath.Join(t.TempDir(), "cimg-build-cgo")
	cmd := exec.Command("go", "build", "-tags", "cimg_clibs", "-o", out, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1", "CGO_CFLAGS=-O3")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build with cgo: %v\n%s", err, b)
	}
	return out
}

// dataFiles is how many text-like files encoderTree writes under data/.
const dataFiles = 40

// encoderTree is the hello binary and text-like data.
func encoderTree(t *testing.T) string {
	root := filepath.Join(t.TempDir(), "root")
	os.MkdirAll(filepath.Join(root, "data"), 0o755)
	copyFile(t, helloBin, filepath.Join(root, "app"))
	rng := rand.New(rand.NewPCG(3, 4))
	words := strings.Fields("the launcher mounts the image and runs the app in its own namespaces with a seccomp filter")
	for i := 0; i < dataFiles; i++ {
		var b bytes.Buffer
		for n := rng.IntN(400000); b.Len() < n; {
			fmt.Fprintf(&b, "%s %d ", words[rng.IntN(len(words))], rng.IntN(1000))
		}
		os.WriteFile(filepath.Join(root, "data", fmt.Sprint(i)), b.Bytes(), 0o644)
	}
	return root
}

func provenanceEncoder(t *testing.T, img string) string {
	t.Helper()
	b, err := exec.Command("unsquashfs", "-cat", img, ".cimg/provenance.json").Output()
	if err != nil {
		t.Fatalf("unsquashfs -cat %s: %v", img, err)
	}
	var recs []struct {
		Path    string `json:"path"`
		Encoder string `json:"encoder"`
	}
	if err := json.Unmarshal(b, &recs); err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.Encoder != "" {
			return r.Encoder
		}
	}
	t.Fatalf("%s: no encoder in the provenance", img)
	return ""
}

func squashfsSize(t *testing.T, bin, img string) int64 {
	t.Helper()
	out, err := exec.Command(bin, "inspect", "--json", img).Output()
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Sections []struct {
			Name string
			Size int64
		}
	}
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatal(err)
	}
	for _, s := range v.Sections {
		if s.Name == "squashfs" {
			return s.Size
		}
	}
	t.Fatalf("%s: no squashfs section", img)
	return 0
}

// TestCgoEncoders: the cgo build writes the same bytes whatever
// GOMAXPROCS (zstd, zstd:19 with 1 MiB blocks, xz with the x86 filter,
// gzip, lz4 HC), names the C library of each compressor in the provenance, and
// its image is at most 1.02× mksquashfs's of the same files with the
// same compressor, level, block size and filter, and the kernel reads
// it back (the pure-Go encoders
// are 3-20 % larger); the pure-Go build names its encoder and its image
// unpacks to the same files.
func TestCgoEncoders(t *testing.T) {
	for _, tool := range []string{"unsquashfs", "mksquashfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed (apt-get install squashfs-tools)", tool)
		}
	}
	cgoBin := buildCgo(t)
	root := encoderTree(t)
	dir := t.TempDir()
	build := func(bin, name, procs string, args ...string) string {
		img := filepath.Join(dir, name)
		cmd := exec.Command(bin, append([]string{"-q", "--rootfs", root, "--entrypoint", "/app", "-o", img}, args...)...)
		cmd.Env = append(os.Environ(), "GOMAXPROCS="+procs, "SOURCE_DATE_EPOCH=1600000000")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v\n%s", bin, args, err, b)
		}
		return img
	}
	for _, args := range [][]string{
		{"--compression", "zstd"},
		{"--compression", "zstd:19", "--block-size", "1M"},
		{"--compression", "xz", "--xz-bcj", "x86"},
		{"--compression", "gzip"},
		{"--compression", "lz4:12"},
	} {
		a, _ := os.ReadFile(build(cgoBin, "a.cimg", "1", args...))
		b, _ := os.ReadFile(build(cgoBin, "b.cimg", "4", args...))
		if !bytes.Equal(a, b) {
			t.Errorf("cgo build, %v: images differ across GOMAXPROCS", args)
		}
	}

	tree := filepath.Join(dir, "tree")
	for i, c := range []struct {
		args    []string // cimg-build's
		ref     []string // mksquashfs's for the same encoding
		library string   // in the provenance
	}{
		{[]string{"--compression", "zstd"}, []string{"-comp", "zstd", "-Xcompression-level", "15"}, "libzstd 1.5.7"},
		{[]string{"--compression", "xz", "--xz-bcj", "x86"}, []string{"-comp", "xz", "-Xbcj", "x86"}, "liblzma 5.4.1"},
		{[]string{"--compression", "gzip"}, []string{"-comp", "gzip", "-Xcompression-level", "9"}, "libdeflate 1.14"},
		{[]string{"--compression", "lz4:12"}, []string{"-comp", "lz4", "-Xhc"}, "liblz4 1.9.4"},
	} {
		img := build(cgoBin, fmt.Sprintf("cgo%d.cimg", i), "2", append(c.args, "--block-size", "128K")...)
		if enc := provenanceEncoder(t, img); !strings.Contains(enc, c.library) || !strings.Contains(enc, "cgo") {
			t.Errorf("cgo build, %v: provenance encoder %q, want %s via cgo", c.args, enc, c.library)
		}
		if i == 0 {
			if b, err := exec.Command("unsquashfs", "-q", "-d", tree, img).CombinedOutput(); err != nil {
				t.Fatalf("unsquashfs: %v\n%s", err, b)
			}
		}
		// The device's decoder is the kernel's, not unsquashfs's.
		mnt := mounttest.Mount(t, img)
		sameData(t, root, mnt, fmt.Sprintf("cgo build, %v, read by the kernel", c.args))
		ref := filepath.Join(dir, fmt.Sprintf("ref%d.sqfs", i))
		args := append([]string{tree, ref}, c.ref...)
		args = append(args, "-b", "131072", "-noappend", "-all-root", "-no-xattrs", "-quiet", "-no-progress")
		if b, err := exec.Command("mksquashfs", args...).CombinedOutput(); err != nil {
			t.Fatalf("mksquashfs: %v\n%s", err, b)
		}
		fi, err := os.Stat(ref)
		if err != nil {
			t.Fatal(err)
		}
		ours := squashfsSize(t, cgoBin, img)
		t.Logf("%v: cimg-build %d bytes, mksquashfs %v %d (%.3f×)", c.args, ours, c.ref, fi.Size(), float64(ours)/float64(fi.Size()))
		if ours*100 > fi.Size()*102 {
			t.Errorf("%v: cimg-build's squashfs is %d bytes, mksquashfs's %d: over 1.02×", c.args, ours, fi.Size())
		}
	}

	pure := build(cimgBuild, "pure.cimg", "2")
	t.Logf("the pure-Go build's squashfs: %d bytes", squashfsSize(t, cgoBin, pure))
	if enc := provenanceEncoder(t, pure); !strings.Contains(enc, "pure Go") {
		t.Errorf("CGO_ENABLED=0 build: provenance encoder %q, want the pure-Go one", enc)
	}
	ptree := filepath.Join(dir, "ptree")
	if b, err := exec.Command("unsquashfs", "-q", "-d", ptree, pure).CombinedOutput(); err != nil {
		t.Fatalf("unsquashfs of the pure-Go image: %v\n%s", err, b)
	}
	sameData(t, root, ptree, "pure-Go image")
}

// sameData fails the test for each of encoderTree's data files that dir
// does not hold as root does.
func sameData(t *testing.T, root, dir, what string) {
	t.Helper()
	for i := 0; i < dataFiles; i++ {
		p := filepath.Join("data", strconv.Itoa(i))
		x, _ := os.ReadFile(filepath.Join(root, p))
		y, err := os.ReadFile(filepath.Join(dir, p))
		if err != nil || !bytes.Equal(x, y) {
			t.Errorf("%s: %s differs from the source (%v)", what, p, err)
		}
	}
}
