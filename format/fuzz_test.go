package format

import (
	"bytes"
	"crypto/ed25519"
	"testing"
)

// countingReader fails any read outside the data, so the fuzzer also
// catches reads beyond the file size.
type countingReader struct {
	b   []byte
	max int64
}

func (c *countingReader) ReadAt(p []byte, off int64) (int, error) {
	if int64(len(p)) > c.max {
		panic("read larger than the file")
	}
	return bytes.NewReader(c.b).ReadAt(p, off)
}

// FuzzOpen feeds arbitrary bytes (seeded with real images, signed and
// unsigned) to the reader and verifier: no panic, no read or allocation
// beyond the file size, and a clean error for anything that is not a
// valid image.
func FuzzOpen(f *testing.F) {
	k := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, 32))
	f.Add(buildImage(f, 1, "name = \"a\"\n"))
	f.Add(buildImage(f, 3, "name = \"b\"\n", k))
	f.Add([]byte{})
	f.Add(make([]byte, FooterSize))
	keys := []ed25519.PublicKey{k.Public().(ed25519.PublicKey)}
	f.Fuzz(func(t *testing.T, b []byte) {
		r := &countingReader{b: b, max: int64(len(b))}
		img, err := Open(r, int64(len(b)))
		if err != nil {
			if _, ok := err.(*SectionError); !ok {
				t.Fatalf("error is not a *SectionError: %T %v", err, err)
			}
			return
		}
		if int64(len(img.Manifest)) > int64(len(b)) {
			t.Fatal("manifest larger than the file")
		}
		_ = img.Verify(keys)
	})
}

// FuzzParseFooter checks the footer parser alone, with arbitrary claimed
// file sizes.
func FuzzParseFooter(f *testing.F) {
	img := buildImage(f, 2, "m")
	f.Add(img[len(img)-FooterSize:], int64(len(img)))
	f.Fuzz(func(t *testing.T, b []byte, size int64) {
		ft, err := ParseFooter(b, size)
		if err != nil {
			return
		}
		end := ft.SigOffset + ft.SigSize
		if end != size-FooterSize || ft.PayloadSize <= 0 || ft.ManifestSize > MaxManifestSize {
			t.Fatalf("accepted an inconsistent footer: %+v for size %d", ft, size)
		}
	})
}
