package format

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// memFile is an in-memory File.
type memFile struct{ b []byte }

func (m *memFile) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(m.b)) {
		return 0, errors.New("EOF")
	}
	n := copy(p, m.b[off:])
	if n < len(p) {
		return n, errors.New("short read")
	}
	return n, nil
}

func (m *memFile) WriteAt(p []byte, off int64) (int, error) {
	if end := off + int64(len(p)); end > int64(len(m.b)) {
		m.b = append(m.b, make([]byte, end-int64(len(m.b)))...)
	}
	return copy(m.b[off:], p), nil
}

func testKey(t testing.TB, seed byte) ed25519.PrivateKey {
	t.Helper()
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
}

// buildImage makes an image with a random payload of the given blocks.
func buildImage(t testing.TB, blocks int, manifest string, signers ...ed25519.PrivateKey) []byte {
	t.Helper()
	rng := rand.New(rand.NewPCG(uint64(blocks), 7))
	m := &memFile{b: make([]byte, blocks*BlockSize)}
	for i := range m.b {
		m.b[i] = byte(rng.Uint32())
	}
	_, size, err := Finish(m, int64(blocks*BlockSize), FinishOptions{Manifest: []byte(manifest), Signers: signers})
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(m.b)) != size {
		t.Fatalf("file is %d bytes, Finish says %d", len(m.b), size)
	}
	return m.b
}

func verify(b []byte, keys []ed25519.PublicKey) error {
	img, err := Open(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		return err
	}
	return img.Verify(keys)
}

func TestRoundTrip(t *testing.T) {
	k := testKey(t, 1)
	b := buildImage(t, 9, "name = \"x\"\n", k)
	img, err := Open(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	if string(img.Manifest) != "name = \"x\"\n" {
		t.Errorf("manifest %q", img.Manifest)
	}
	ids, err := img.VerifySignatures([]ed25519.PublicKey{k.Public().(ed25519.PublicKey)})
	if err != nil || len(ids) != 1 || ids[0] != KeyIDOf(k.Public().(ed25519.PublicKey)) {
		t.Fatalf("signatures: %v %v", ids, err)
	}
	if err := img.VerifyPayload(); err != nil {
		t.Fatal(err)
	}
	other := testKey(t, 2).Public().(ed25519.PublicKey)
	if _, err := img.VerifySignatures([]ed25519.PublicKey{other}); !errors.Is(err, ErrSignature) || !strings.Contains(err.Error(), "untrusted keys") {
		t.Errorf("untrusted key: %v", err)
	}
	unsigned := buildImage(t, 9, "")
	img, _ = Open(bytes.NewReader(unsigned), int64(len(unsigned)))
	if _, err := img.VerifySignatures([]ed25519.PublicKey{other}); !errors.Is(err, ErrSignature) || !strings.Contains(err.Error(), "unsigned") {
		t.Errorf("unsigned: %v", err)
	}
}

func TestResignKeepsOtherSignatures(t *testing.T) {
	k1, k2 := testKey(t, 1), testKey(t, 2)
	b := buildImage(t, 3, "", k1)
	img, err := Open(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	m := &memFile{b: bytes.Clone(b)}
	size, err := Resign(m, img, []ed25519.PrivateKey{k2})
	if err != nil {
		t.Fatal(err)
	}
	m.b = m.b[:size]
	for _, k := range []ed25519.PrivateKey{k1, k2} {
		if err := verify(m.b, []ed25519.PublicKey{k.Public().(ed25519.PublicKey)}); err != nil {
			t.Errorf("after resign, key %x: %v", k.Public(), err)
		}
	}
}

// TestTamper flips every bit of every byte and truncates at every length:
// each change must be rejected by full verification with the signing key.
func TestTamper(t *testing.T) {
	k := testKey(t, 3)
	keys := []ed25519.PublicKey{k.Public().(ed25519.PublicKey)}
	for _, tc := range []struct {
		name   string
		blocks int
		keys   []ed25519.PublicKey
		signer []ed25519.PrivateKey
	}{
		{"signed", 8, keys, []ed25519.PrivateKey{k}},
		{"unsigned", 1, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			orig := buildImage(t, tc.blocks, "name = \"tamper\"\ncmd = [\"/bin/app\"]\n", tc.signer...)
			if len(orig) > 64<<10 {
				t.Fatalf("image is %d bytes, the test wants ≤ 64 KiB", len(orig))
			}
			if err := verify(orig, tc.keys); err != nil {
				t.Fatalf("pristine image: %v", err)
			}
			var wg sync.WaitGroup
			var mu sync.Mutex
			var fails []string
			workers := runtime.GOMAXPROCS(0)
			for w := 0; w < workers; w++ {
				wg.Add(1)
				go func(w int) {
					defer wg.Done()
					b := bytes.Clone(orig)
					for i := w; i < len(b); i += workers {
						for bit := 0; bit < 8; bit++ {
							b[i] ^= 1 << bit
							err := verify(b, tc.keys)
							b[i] ^= 1 << bit
							if err == nil {
								mu.Lock()
								fails = append(fails, hex.EncodeToString([]byte{byte(i >> 8), byte(i)})+"/"+string('0'+rune(bit)))
								mu.Unlock()
							}
						}
					}
				}(w)
			}
			wg.Wait()
			if len(fails) > 0 {
				t.Fatalf("%d bit flips accepted, first at offset/bit %v", len(fails), fails[:min(5, len(fails))])
			}
			for n := 0; n < len(orig); n++ {
				if err := verify(orig[:n], tc.keys); err == nil {
					t.Fatalf("truncation to %d bytes accepted", n)
				}
			}
		})
	}
}

func TestParseFooterErrorsNameSection(t *testing.T) {
	b := buildImage(t, 2, "m")
	for _, tc := range []struct {
		name    string
		mutate  func([]byte) []byte
		section string
		kind    error
	}{
		{"short", func(b []byte) []byte { return b[:100] }, "footer", ErrNotImage},
		{"magic", func(b []byte) []byte { b[len(b)-FooterSize] ^= 1; return b }, "footer", ErrNotImage},
		{"checksum", func(b []byte) []byte { b[len(b)-1] ^= 1; return b }, "footer", ErrCorrupt},
		{"truncated", func(b []byte) []byte { return append(b[:4096], b[len(b)-FooterSize:]...) }, "payload", ErrCorrupt},
		{"manifest", func(b []byte) []byte { b[len(b)-FooterSize-1] ^= 1; return b }, "manifest", ErrIntegrity},
		{"payload", func(b []byte) []byte { b[10] ^= 1; return b }, "payload", ErrIntegrity},
		{"tree", func(b []byte) []byte { b[2*BlockSize+5] ^= 1; return b }, "verity", ErrIntegrity},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := verify(tc.mutate(bytes.Clone(b)), nil)
			var se *SectionError
			if !errors.As(err, &se) || se.Section != tc.section || !errors.Is(err, tc.kind) {
				t.Fatalf("got %v, want a %s error in section %s", err, tc.kind, tc.section)
			}
		})
	}
}

// TestVeritysetupAgrees checks our hash tree and root hash with the
// reference tool, cryptsetup's veritysetup, for tree shapes of zero, one,
// two and three levels.
func TestVeritysetupAgrees(t *testing.T) {
	bin, err := exec.LookPath("veritysetup")
	if err != nil {
		t.Fatal("veritysetup not found: install cryptsetup-bin (make test does)")
	}
	for _, blocks := range []int{1, 2, 128, 129, 128*128 + 1} {
		b := buildImage(t, blocks, "name = \"v\"\n")
		img, err := Open(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			t.Fatal(err)
		}
		f := img.Footer
		path := filepath.Join(t.TempDir(), "img.cimg")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		args := []string{"verify", "--no-superblock", "--format=1", "--hash=sha256",
			"--data-block-size=4096", "--hash-block-size=4096",
			"--data-blocks=" + itoa(f.DataBlocks()), "--hash-offset=" + itoa(f.TreeOffset),
			"--salt=" + hex.EncodeToString(f.Salt), path, path, hex.EncodeToString(f.RootHash[:])}
		if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
			t.Fatalf("%d blocks: veritysetup %s: %v\n%s", blocks, strings.Join(args, " "), err, out)
		}
		// And it must notice a changed data block.
		b[BlockSize*(blocks-1)+1] ^= 0x80
		os.WriteFile(path, b, 0o600)
		if out, err := exec.Command(bin, args...).CombinedOutput(); err == nil {
			t.Fatalf("%d blocks: veritysetup accepted a changed block\n%s", blocks, out)
		}
	}
}

func itoa(v int64) string { return strconv.FormatInt(v, 10) }
