//go:build cgo

package squashfs

import (
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// goldenBlock is 128 KiB of words: compressible, like text.
func goldenBlock() []byte {
	r := rand.New(rand.NewPCG(15, 15))
	words := strings.Fields("squashfs block zstd level kernel image cimg launch device mount the of a and to")
	var b []byte
	for len(b) < 128<<10 {
		b = append(b, words[r.IntN(len(words))]...)
		b = append(b, ' ')
	}
	return b[:128<<10]
}

// encodeGolden compresses in with e, checks the SHA-256 of the result
// against want and returns it.
func encodeGolden(t *testing.T, what string, e encoder, in []byte, want string) []byte {
	t.Helper()
	out, err := e.encode(make([]byte, 0, outCap(128<<10)), in)
	if err != nil || out == nil {
		t.Fatalf("%s: %v", what, err)
	}
	got := fmt.Sprintf("%x", sha256.Sum256(out))
	t.Logf("%s: %d bytes, sha256 %s", what, len(out), got)
	if got != want {
		t.Errorf("%s: sha256 %s, want %s", what, got, want)
	}
	return out
}

// TestZstdCgoGolden pins the bytes of the C encoder: same cimg-build
// source, same bytes on every host. It fails if the encoder is not the
// bundled libzstd 1.5.7 (a host libzstd of another version through the
// module's external_libzstd tag, or the pure-Go encoder).
func TestZstdCgoGolden(t *testing.T) {
	want := map[int]string{
		15: "f8a1eb1b1e3582996425a7929250d4363558416bbf28f0677e2cd6a218d1e3ef",
		19: "7e34a3e3ebc3ca113ce8a8473d4b975ab808dc98146259ae37cb743c208e3016",
	}
	for level, sum := range want {
		e, err := newZstdEncoder(level)
		if err != nil {
			t.Fatal(err)
		}
		encodeGolden(t, fmt.Sprintf("zstd level %d", level), e, goldenBlock(), sum)
	}
	if d := zstdDescription(0); !strings.Contains(d, "libzstd 1.5.7") || !strings.Contains(d, "level 15") {
		t.Errorf("description %q", d)
	}
}
