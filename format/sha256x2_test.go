package format

import (
	"bytes"
	"crypto/sha256"
	"math/rand/v2"
	"runtime"
	"testing"
)

// TestHashBlockPairMatchesSHA256 checks the two-lane SHA-256 against
// crypto/sha256 on every salt length the format allows, each block length
// that moves the padding across a chunk boundary, and random contents,
// including two lanes that differ in one bit.
func TestHashBlockPairMatchesSHA256(t *testing.T) {
	if runtime.GOARCH == "amd64" && !haveSHA256x2() {
		t.Logf("this CPU lacks the SHA extensions: checking the fallback only")
	}
	rng := rand.New(rand.NewPCG(1, 2))
	fill := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	want := func(salt, block []byte) [hashSize]byte {
		return sha256.Sum256(append(append([]byte{}, salt...), block...))
	}
	lengths := []int{64, 65, 119, 120, 127, 128, 183, 184, 1000, BlockSize - 1, BlockSize, BlockSize + 55, BlockSize + 56}
	for saltLen := 0; saltLen <= MaxSaltSize; saltLen++ {
		for _, n := range lengths {
			salt, a, b := fill(saltLen), fill(n), fill(n)
			ha, hb := hashBlockPair(salt, a, b)
			if ha != want(salt, a) || hb != want(salt, b) {
				t.Fatalf("salt %d bytes, blocks %d bytes: got %x %x, want %x %x", saltLen, n, ha, hb, want(salt, a), want(salt, b))
			}
			// Lanes that differ in one bit must not bleed into each other.
			c := bytes.Clone(a)
			c[rng.IntN(n)] ^= 1 << rng.IntN(8)
			ha, hc := hashBlockPair(salt, a, c)
			if ha != want(salt, a) || hc != want(salt, c) {
				t.Fatalf("salt %d bytes, blocks %d bytes, one bit apart: got %x %x", saltLen, n, ha, hc)
			}
		}
	}
}

// BenchmarkHashBlocks compares hashing 4 KiB blocks one at a time
// (hashBlock, crypto/sha256) with two at a time (hashBlockPair).
func BenchmarkHashBlocks(b *testing.B) {
	salt := make([]byte, 32)
	blocks := make([]byte, 2*BlockSize)
	b.Run("one", func(b *testing.B) {
		b.SetBytes(2 * BlockSize)
		for b.Loop() {
			hashBlock(salt, blocks[:BlockSize])
			hashBlock(salt, blocks[BlockSize:])
		}
	})
	b.Run("pair", func(b *testing.B) {
		b.SetBytes(2 * BlockSize)
		for b.Loop() {
			hashBlockPair(salt, blocks[:BlockSize], blocks[BlockSize:])
		}
	})
}
