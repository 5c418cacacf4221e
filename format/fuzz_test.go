package format

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// The fuzz targets keep every input small and every exec cheap: a
// multi-KiB input makes go's minimizer (which re-runs the target for each
// byte it tries to drop, for up to a minute per new input) stall fuzzing,
// which is what made FuzzOpen run 98 execs a minute. So an input is only
// the image's tail — manifest, signatures, footer — and the payload (zero
// blocks) and its hash tree are synthesized from a few fixed shapes built
// once. Setting fix recomputes the footer's checksum, so that mutations
// reach the checks behind it instead of all failing there.

// fuzzSalt is the salt of every seed image: the synthesized trees are
// built with it.
var fuzzSalt = []byte("cimg fuzz salt")

// fuzzShapes are the payload sizes, in zero blocks, an input can pick:
// no tree, one level, and two levels.
var fuzzShapes = []int64{1, 3, 129}

// fuzzKey signs the seed images; FuzzOpen trusts it.
var fuzzKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, ed25519.SeedSize))

// fuzzImage is a file of payload zero bytes, then tree, then tail.
// Reads outside it panic: every offset must be checked before it is used.
type fuzzImage struct {
	payload    int64
	tree, tail []byte
}

func (f *fuzzImage) size() int64 { return f.payload + int64(len(f.tree)+len(f.tail)) }

func (f *fuzzImage) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > f.size() {
		panic(fmt.Sprintf("read of %d bytes at %d outside the %d-byte file", len(p), off, f.size()))
	}
	clear(p)
	for _, part := range []struct {
		at int64
		b  []byte
	}{{f.payload, f.tree}, {f.payload + int64(len(f.tree)), f.tail}} {
		if lo, hi := max(off, part.at), min(off+int64(len(p)), part.at+int64(len(part.b))); lo < hi {
			copy(p[lo-off:hi-off], part.b[lo-part.at:hi-part.at])
		}
	}
	return len(p), nil
}

func (f *fuzzImage) WriteAt(p []byte, off int64) (int, error) {
	z := &zeroTail{size: f.payload, tailAt: f.payload, tail: append(f.tree, f.tail...)}
	n, err := z.WriteAt(p, off)
	f.tree, f.tail = z.tail, nil
	return n, err
}

// fuzzTrees builds the hash tree of each shape's zero payload once.
func fuzzTrees(t testing.TB) [][]byte {
	var trees [][]byte
	for _, blocks := range fuzzShapes {
		tree, _, err := BuildVerityTree(&fuzzImage{payload: blocks * BlockSize}, blocks*BlockSize, fuzzSalt)
		if err != nil {
			t.Fatal(err)
		}
		trees = append(trees, tree)
	}
	return trees
}

// fixChecksum rewrites the checksum of the footer at the end of b.
func fixChecksum(b []byte) {
	if len(b) >= FooterSize {
		ft := b[len(b)-FooterSize:]
		sum := sha256.Sum256(ft[:checksumAt])
		copy(ft[checksumAt:], sum[:])
	}
}

// FuzzOpen feeds image tails to Open and Verify: no panic, no read outside
// the file, every error a *SectionError of one of the package's kinds,
// sections within their caps, and whatever opens re-encodes to the same
// bytes. Only the seeds' own footers can pass the trusted key's check.
func FuzzOpen(f *testing.F) {
	trees := fuzzTrees(f)
	fuzzSeedImages(f) // fills fuzzSigned
	trusted := []ed25519.PublicKey{fuzzKey.Public().(ed25519.PublicKey)}
	f.Fuzz(func(t *testing.T, tail []byte, shape uint8, fix bool) {
		s := int(shape) % len(fuzzShapes)
		img := &fuzzImage{payload: fuzzShapes[s] * BlockSize, tree: trees[s], tail: bytes.Clone(tail)}
		if fix {
			fixChecksum(img.tail)
		}
		file := img.tail[max(0, len(img.tail)-FooterSize):]
		opened, err := Open(img, img.size())
		if err != nil {
			checkErr(t, err)
			return
		}
		ft := opened.Footer
		if !bytes.Equal(ft.Marshal(), file) {
			t.Fatalf("footer does not re-encode to its bytes: %+v", ft)
		}
		if len(opened.Manifest) > MaxManifestSize || int64(len(opened.Manifest)) != ft.ManifestSize {
			t.Fatalf("manifest of %d bytes, footer says %d", len(opened.Manifest), ft.ManifestSize)
		}
		sigs := make([]byte, ft.SigSize)
		img.ReadAt(sigs, ft.SigOffset)
		if ft.SigSize > MaxSigSize || !bytes.Equal(marshalSigs(opened.Signatures), sigs) {
			t.Fatalf("signatures section of %d bytes does not re-encode to itself", ft.SigSize)
		}
		err = opened.Verify(trusted)
		if err != nil {
			checkErr(t, err)
			return
		}
		if !fuzzSigned[string(ft.signedBytes())] {
			t.Fatalf("a footer the key never signed verified: %x", file)
		}
	})
}

// fuzzSigned holds the signed bytes of the seed images' footers, filled
// by fuzzSeedImages: the only footers the fuzz key signed.
var fuzzSigned = map[string]bool{}

func checkErr(t *testing.T, err error) {
	t.Helper()
	var se *SectionError
	if !errors.As(err, &se) {
		t.Fatalf("error is not a *SectionError: %T %v", err, err)
	}
	if !errors.Is(err, ErrNotImage) && !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrIntegrity) && !errors.Is(err, ErrSignature) {
		t.Fatalf("error is of no known kind: %v", err)
	}
}

// FuzzParseFooter checks the footer parser alone, with arbitrary claimed
// file sizes: what it accepts tiles the file, keeps the caps and encodes
// back to the same bytes.
func FuzzParseFooter(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte, size int64, fix bool) {
		b = bytes.Clone(b)
		if fix {
			fixChecksum(b)
		}
		ft, err := ParseFooter(b, size)
		if err != nil {
			checkErr(t, err)
			return
		}
		if ft.SigOffset+ft.SigSize != size-FooterSize || ft.PayloadSize <= 0 || ft.ManifestSize > MaxManifestSize ||
			ft.SigSize > MaxSigSize || ft.TreeSize != VerityTreeSize(ft.DataBlocks()) || !bytes.Equal(ft.Marshal(), b) {
			t.Fatalf("accepted an inconsistent footer: %+v for size %d", ft, size)
		}
	})
}

// fuzzSeedImages returns the tails of the seed images, one per shape,
// unsigned, signed by the fuzz key, and signed by it and another key.
func fuzzSeedImages(t testing.TB) (tails [][]byte, shapes []uint8) {
	other := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
	for s, blocks := range fuzzShapes {
		for _, signers := range [][]ed25519.PrivateKey{nil, {fuzzKey}, {fuzzKey, other}} {
			img := &fuzzImage{payload: blocks * BlockSize}
			ft, _, err := Finish(img, blocks*BlockSize, FinishOptions{Manifest: []byte("name = \"f\"\n"), Salt: fuzzSalt, Signers: signers})
			if err != nil {
				t.Fatal(err)
			}
			fuzzSigned[string(ft.signedBytes())] = true
			tails = append(tails, img.tree[ft.ManifestOffset-ft.TreeOffset:])
			shapes = append(shapes, uint8(s))
		}
	}
	return tails, shapes
}

// TestWriteFuzzSeeds regenerates testdata/fuzz/FuzzOpen and
// FuzzParseFooter from the seed images (CIMG_WRITE_SEEDS=1 go test -run
// TestWriteFuzzSeeds ./format); it does nothing otherwise.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("CIMG_WRITE_SEEDS") == "" {
		t.Skip("set CIMG_WRITE_SEEDS=1 to rewrite the seed corpora")
	}
	tails, shapes := fuzzSeedImages(t)
	for i, tail := range tails {
		writeSeed(t, "FuzzOpen", fmt.Sprintf("image-%d", i), fmt.Sprintf("[]byte(%q)", tail), fmt.Sprintf("byte(%q)", shapes[i]), "bool(false)")
		footer := tail[len(tail)-FooterSize:]
		size := fuzzShapes[shapes[i]]*BlockSize + VerityTreeSize(fuzzShapes[shapes[i]]) + int64(len(tail))
		writeSeed(t, "FuzzParseFooter", fmt.Sprintf("footer-%d", i), fmt.Sprintf("[]byte(%q)", footer), "int64("+strconv.FormatInt(size, 10)+")", "bool(false)")
	}
}

func writeSeed(t *testing.T, target, name string, values ...string) {
	dir := filepath.Join("testdata", "fuzz", target)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b := []byte("go test fuzz v1\n")
	for _, v := range values {
		b = append(append(b, v...), '\n')
	}
	if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
		t.Fatal(err)
	}
}
