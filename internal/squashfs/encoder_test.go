package squashfs_test

// Encoder tests: levels and xz BCJ filters give images the kernel and
// unsquashfs read back, the filters really apply, and the options are
// checked.

import (
	"encoding/binary"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"cimg.dev/cimg/internal/mounttest"
	"cimg.dev/cimg/internal/squashfs"
)

// writeCode writes n bytes that look like one arch's machine code to the
// filter: calls (x86 E8, ARM BL, Thumb BL pairs, ARM64 BL) from all over
// the file to a few targets, between random filler. Their relative
// offsets all differ; the absolute targets the filter makes of them
// repeat, so the filtered file compresses better.
func writeCode(t *testing.T, path string, bcj squashfs.BCJ, n int, seed uint64) {
	r := rand.New(rand.NewPCG(seed, 7))
	targets := []uint32{0x1000, 0x2400, 0x8000, 0x10000}
	buf := make([]byte, 0, n+16)
	for len(buf) < n {
		filler := 4 * (1 + r.IntN(3))
		for i := 0; i < filler; i++ {
			buf = append(buf, byte(r.IntN(8))) // low entropy, no false calls
		}
		pos := uint32(len(buf))
		tgt := targets[r.IntN(len(targets))]
		le := binary.LittleEndian
		switch bcj {
		case squashfs.BCJX86:
			buf = append(buf, 0xE8)
			buf = le.AppendUint32(buf, tgt-(pos+5))
		case squashfs.BCJARM:
			off := (tgt - (pos + 8)) >> 2
			buf = append(buf, byte(off), byte(off>>8), byte(off>>16), 0xEB)
		case squashfs.BCJARMThumb:
			off := (tgt - (pos + 4)) >> 1
			buf = append(buf, byte(off>>11), 0xF0|byte(off>>19)&7, byte(off), 0xF8|byte(off>>8)&7)
		case squashfs.BCJARM64:
			off := (tgt - pos) >> 2
			buf = le.AppendUint32(buf, 0x94000000|off&0x03FFFFFF)
		}
	}
	mustWrite(t, path, string(buf[:n]), 0o755)
}

// addHardlinks adds hard/one with two more names, which checkKernel
// expects of every tree.
func addHardlinks(t *testing.T, src string) {
	mustWrite(t, filepath.Join(src, "hard/one"), "linked", 0o644)
	for _, n := range []string{"two", "three"} {
		if err := os.Link(filepath.Join(src, "hard/one"), filepath.Join(src, "hard", n)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestXZBCJ: an image of code written with the arch's filter is smaller
// than without it (the filter was applied and kept), carries the xz
// options naming it, and reads back right through unsquashfs (liblzma)
// and the kernel (lib/xz).
func TestXZBCJ(t *testing.T) {
	mounttest.RequireRoot(t)
	requireTool(t, "unsquashfs")
	for _, bcj := range []squashfs.BCJ{squashfs.BCJX86, squashfs.BCJARM, squashfs.BCJARMThumb, squashfs.BCJARM64} {
		t.Run(bcj.String(), func(t *testing.T) {
			src := t.TempDir()
			writeCode(t, filepath.Join(src, "bin/prog"), bcj, 600<<10, 1)
			writeCode(t, filepath.Join(src, "lib/small"), bcj, 5000, 2) // a fragment
			writeCompressible(t, filepath.Join(src, "share/text"), 300<<10, 3)
			addHardlinks(t, src)
			want := scanTree(t, src, true)
			plain := filepath.Join(t.TempDir(), "plain.sqfs")
			img := filepath.Join(t.TempDir(), "bcj.sqfs")
			p := buildImage(t, src, plain, squashfs.Options{Compression: squashfs.XZ}, true)
			f := buildImage(t, src, img, squashfs.Options{Compression: squashfs.XZ, BCJ: bcj}, true)
			t.Logf("without the filter %d bytes, with %d", p.BytesUsed, f.BytesUsed)
			if f.BytesUsed >= p.BytesUsed*95/100 {
				t.Errorf("with the %v filter the image is %d bytes, without %d: the filter did not apply", bcj, f.BytesUsed, p.BytesUsed)
			}
			b, err := os.ReadFile(img)
			if err != nil {
				t.Fatal(err)
			}
			// Compressor options after the 96-byte superblock: an
			// uncompressed 8-byte metadata block, dictionary and flags.
			if flags := binary.LittleEndian.Uint16(b[24:]); flags&0x400 == 0 {
				t.Errorf("superblock flags %#x: no compressor options", flags)
			}
			if hdr, dict, fl := binary.LittleEndian.Uint16(b[96:]), binary.LittleEndian.Uint32(b[98:]), binary.LittleEndian.Uint32(b[102:]); hdr != 0x8008 || dict != 128<<10 || fl != 1<<(bcj-1) {
				t.Errorf("xz options: header %#x, dictionary %d, flags %#x; want 0x8008, %d, %#x", hdr, dict, fl, 128<<10, 1<<(bcj-1))
			}
			t.Run("unsquashfs", func(t *testing.T) { checkUnsquashfs(t, img, want) })
			t.Run("kernel", func(t *testing.T) { checkKernel(t, img, want) })
		})
	}
}

// TestLevels: a level changes the encoding (a higher level, a smaller
// image) and images at the extremes read back through the kernel.
func TestLevels(t *testing.T) {
	mounttest.RequireRoot(t)
	requireTool(t, "unsquashfs")
	src := t.TempDir()
	writeCompressible(t, filepath.Join(src, "text"), 2<<20, 1)
	writeCode(t, filepath.Join(src, "code"), squashfs.BCJX86, 1<<20, 2)
	addHardlinks(t, src)
	want := scanTree(t, src, true)
	for _, tc := range []struct {
		comp     squashfs.Compression
		low, top int
	}{
		{squashfs.Zstd, 1, 19},
		{squashfs.Gzip, 1, 9},
	} {
		t.Run(tc.comp.String(), func(t *testing.T) {
			lo := buildImage(t, src, filepath.Join(t.TempDir(), "lo"), squashfs.Options{Compression: tc.comp, Level: tc.low}, true)
			img := filepath.Join(t.TempDir(), "hi")
			hi := buildImage(t, src, img, squashfs.Options{Compression: tc.comp, Level: tc.top}, true)
			t.Logf("level %d: %d bytes, level %d: %d bytes", tc.low, lo.BytesUsed, tc.top, hi.BytesUsed)
			if hi.BytesUsed >= lo.BytesUsed {
				t.Errorf("level %d gives %d bytes, level %d %d: the level is ignored", tc.top, hi.BytesUsed, tc.low, lo.BytesUsed)
			}
			t.Run("unsquashfs", func(t *testing.T) { checkUnsquashfs(t, img, want) })
			t.Run("kernel", func(t *testing.T) { checkKernel(t, img, want) })
		})
	}
}

func TestParseCompressionLevel(t *testing.T) {
	for _, tc := range []struct {
		in    string
		comp  squashfs.Compression
		level int
		bad   bool
	}{
		{in: "zstd", comp: squashfs.Zstd},
		{in: "zstd:19", comp: squashfs.Zstd, level: 19},
		{in: "xz:9", comp: squashfs.XZ, level: 9},
		{in: "gzip:6", comp: squashfs.Gzip, level: 6},
		{in: "lz4:12", comp: squashfs.LZ4, level: 12},
		{in: "zstd:23", bad: true},
		{in: "xz:10", bad: true},
		{in: "zstd:high", bad: true},
		{in: "brotli:3", bad: true},
	} {
		c, l, err := squashfs.ParseCompressionLevel(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("%q: got %v level %d, want an error", tc.in, c, l)
			}
			continue
		}
		if err != nil || c != tc.comp || l != tc.level {
			t.Errorf("%q: got %v level %d (%v), want %v level %d", tc.in, c, l, err, tc.comp, tc.level)
		}
	}
}

func TestBCJOptions(t *testing.T) {
	for arch, want := range map[string]squashfs.BCJ{"amd64": squashfs.BCJX86, "arm64": squashfs.BCJARM64, "arm": squashfs.BCJARMThumb, "riscv64": squashfs.BCJNone} {
		if got := squashfs.BCJForArch(arch); got != want {
			t.Errorf("BCJForArch(%s) = %v, want %v", arch, got, want)
		}
	}
	for _, n := range []string{"none", "x86", "arm", "armthumb", "arm64"} {
		b, err := squashfs.ParseBCJ(n)
		if err != nil || b.String() != n {
			t.Errorf("ParseBCJ(%s) = %v, %v", n, b, err)
		}
	}
	if _, err := squashfs.ParseBCJ("sparc"); err == nil {
		t.Error("ParseBCJ(sparc): no error")
	}
	if err := squashfs.CheckOptions(squashfs.Options{Compression: squashfs.Zstd, BCJ: squashfs.BCJX86}); err == nil {
		t.Error("zstd with a BCJ filter accepted")
	}
	if err := squashfs.CheckOptions(squashfs.Options{Compression: squashfs.XZ, BlockSize: 1 << 20, BCJ: squashfs.BCJX86}); err != nil {
		t.Errorf("xz, 1 MiB blocks, x86 filter: %v", err)
	}
	d := squashfs.EncoderDescription(squashfs.Options{Compression: squashfs.XZ, BCJ: squashfs.BCJARM})
	if !strings.Contains(d, "BCJ arm") {
		t.Errorf("description %q does not name the filter", d)
	}
}
