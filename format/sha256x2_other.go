//go:build !amd64 || purego

package format

// Elsewhere blocks are hashed one at a time by crypto/sha256 (which uses
// arm64's SHA-2 instructions where it can).

func haveSHA256x2() bool { return false }

func sha256x2Blocks(s0, s1 *[8]uint32, p0, p1 *byte, n int) {
	panic("format: sha256x2Blocks on a CPU without it")
}
