//go:build cgo && cimg_clibs

package squashfs

import (
	"bytes"
	"compress/zlib"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/pierrec/lz4/v4"
)

// codeBlock is 128 KiB of this test binary's own machine code: what the
// BCJ filter is for.
func codeBlock(t *testing.T) []byte {
	t.Helper()
	exe, err := os.ReadFile("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	if len(exe) < 1<<20+128<<10 {
		t.Fatalf("test binary is only %d bytes", len(exe))
	}
	return exe[1<<20 : 1<<20+128<<10]
}

// TestXZLiblzmaGolden pins the bytes of the C xz encoder (same
// cimg-build source, same bytes on every host: it fails on any liblzma
// but the pinned 5.4.1, or on the pure-Go encoder), checks that xz(1)
// decodes them, and that the x86 filter is kept only where it helps.
func TestXZLiblzmaGolden(t *testing.T) {
	if _, err := exec.LookPath("xz"); err != nil {
		t.Fatal("xz(1) is needed to decode (apt-get install xz-utils)")
	}
	want := map[int]string{
		0: "423209fddf6b1b7ec059342e447255848cc48ca8c43cbd7bae54a0d2717d7df2",
		1: "0463d2c166b65be92432fc398086a1b6bd7e6e6e06fde1ff3183914744ef6917",
	}
	for level, sum := range want {
		e, err := newXZEncoder(level, 128<<10, BCJNone)
		if err != nil {
			t.Fatal(err)
		}
		in := goldenBlock()
		xzDecodes(t, encodeGolden(t, fmt.Sprintf("xz level %d", level), e, in, sum), in)
	}

	code := codeBlock(t)
	plain, _ := newXZEncoder(0, 128<<10, BCJNone)
	x86, _ := newXZEncoder(0, 128<<10, BCJX86)
	a, err := plain.encode(make([]byte, 0, outCap(128<<10)), code)
	if err != nil || a == nil {
		t.Fatal(err)
	}
	b, err := x86.encode(make([]byte, 0, outCap(128<<10)), code)
	if err != nil || b == nil {
		t.Fatal(err)
	}
	t.Logf("128 KiB of x86 code: %d bytes plain, %d with the x86 filter", len(a), len(b))
	if len(b) >= len(a) {
		t.Errorf("the x86 filter did not help on x86 code: %d bytes against %d", len(b), len(a))
	}
	xzDecodes(t, b, code)
	// On text the filter does not help, and the plain stream is kept.
	c, _ := x86.encode(make([]byte, 0, outCap(128<<10)), goldenBlock())
	if d, _ := plain.encode(make([]byte, 0, outCap(128<<10)), goldenBlock()); !bytes.Equal(c, d) {
		t.Errorf("with the x86 filter, text came out as %d bytes, not the plain stream's %d", len(c), len(d))
	}
	if d := xzDescription(0, 128<<10, BCJX86); !strings.Contains(d, "liblzma 5.4.1") || !strings.Contains(d, "preset 6") {
		t.Errorf("description %q", d)
	}
}

func xzDecodes(t *testing.T, stream, want []byte) {
	t.Helper()
	cmd := exec.Command("xz", "-dc")
	cmd.Stdin = bytes.NewReader(stream)
	got, err := cmd.Output()
	if err != nil {
		t.Fatalf("xz -dc: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("xz -dc gave %d bytes, not the %d compressed", len(got), len(want))
	}
}

// TestGzipLibdeflateGolden pins the bytes of the C deflate encoder
// (libdeflate), as TestXZLiblzmaGolden does liblzma's, and decodes them
// with a zlib reader, as the kernel does.
func TestGzipLibdeflateGolden(t *testing.T) {
	want := map[int]string{
		9: "c3a3bdcc2db918fa45f66a45326d17fee665a511f6322ce84eadf493825fe14c",
		1: "c169c4cdc2e749d9414ed77e5392eca1a89b553422b62997aea10073c6ccbc77",
	}
	for level, sum := range want {
		e, err := newGzipEncoder(level)
		if err != nil {
			t.Fatal(err)
		}
		in := goldenBlock()
		for range 2 { // the second block reuses the compressor
			out := encodeGolden(t, fmt.Sprintf("gzip level %d", level), e, in, sum)
			r, err := zlib.NewReader(bytes.NewReader(out))
			if err != nil {
				t.Fatal(err)
			}
			if dec, err := io.ReadAll(r); err != nil || !bytes.Equal(dec, in) {
				t.Errorf("level %d: decoded %d bytes (%v), want the %d compressed", level, len(dec), err, len(in))
			}
		}
	}
	// A block that does not shrink is stored: nil.
	random := make([]byte, 128<<10)
	for i := range random {
		random[i] = byte(i*2654435761>>13) ^ byte(i>>7*40503)
	}
	e, _ := newGzipEncoder(9)
	if out, err := e.encode(make([]byte, 0, 64<<10), random); err != nil || out != nil {
		t.Errorf("an incompressible block in a small buffer: %d bytes, %v; want nil, nil", len(out), err)
	}
	// Nor one that does not shrink in a buffer with room for the stored
	// stream, which is larger than the block.
	noise := make([]byte, 128<<10)
	rand.NewChaCha8([32]byte{1}).Read(noise)
	if out, err := e.encode(make([]byte, 0, outCap(len(noise))), noise); err != nil || out != nil {
		t.Errorf("an incompressible block in a large buffer: %d bytes, %v; want nil, nil", len(out), err)
	}
	if d := gzipDescription(9); !strings.Contains(d, "libdeflate 1.14") {
		t.Errorf("description %q", d)
	}
}

// TestLZ4Liblz4Golden pins the bytes of the C lz4 encoder, fast and HC,
// and decodes them with the pure-Go decoder.
func TestLZ4Liblz4Golden(t *testing.T) {
	want := map[int]string{
		0:  "7754ae2af6df0aa082ebf724f5a2b56e70900a1ea1a3103ac6e035819f123b00",
		12: "ef467ddb5a3d3abb6d30952624e1cc64a086a41f4e3fa8a51a1804f14f710733",
	}
	for level, sum := range want {
		in := goldenBlock()
		out := encodeGolden(t, fmt.Sprintf("lz4 level %d", level), newLZ4Encoder(level), in, sum)
		dec := make([]byte, len(in))
		if n, err := lz4.UncompressBlock(out, dec); err != nil || !bytes.Equal(dec[:n], in) {
			t.Errorf("level %d: decoded %d bytes (%v), want the %d compressed", level, n, err, len(in))
		}
	}
	if d := lz4Description(12); !strings.Contains(d, "liblz4 1.9.4") {
		t.Errorf("description %q", d)
	}
}
