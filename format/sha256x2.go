package format

import "encoding/binary"

// sha256IV is SHA-256's initial state (FIPS 180-4, 5.3.3).
var sha256IV = [8]uint32{
	0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
	0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
}

// hashBlockPair returns hashBlock(salt, a) and hashBlock(salt, b), for two
// blocks of the same length, computed side by side where the CPU can
// (sha256x2_amd64.go), else one after the other.
func hashBlockPair(salt, a, b []byte) (ha, hb [hashSize]byte) {
	if !haveSHA256x2() || len(a) != len(b) || len(salt) > MaxSaltSize || len(a) < 64 {
		return hashBlock(salt, a), hashBlock(salt, b)
	}
	sa, sb := sha256IV, sha256IV
	// The message is salt || block, in 64-byte chunks: the salt and the
	// block's first x bytes (copied together), the block's whole chunks
	// after them (in place), then its last bytes with SHA-256's padding
	// (copied).
	x := (64 - len(salt)%64) % 64
	if n := len(salt) + x; n > 0 {
		var headA, headB [MaxSaltSize + 64]byte
		copy(headA[copy(headA[:], salt):], a[:x])
		copy(headB[copy(headB[:], salt):], b[:x])
		sha256x2Blocks(&sa, &sb, &headA[0], &headB[0], n/64)
	}
	body := (len(a) - x) / 64 * 64
	if body > 0 {
		sha256x2Blocks(&sa, &sb, &a[x], &b[x], body/64)
	}
	var tailA, tailB [128]byte
	rest := copy(tailA[:], a[x+body:])
	copy(tailB[:], b[x+body:])
	tailA[rest], tailB[rest] = 0x80, 0x80
	n := 64
	if rest+1+8 > 64 {
		n = 128
	}
	bits := uint64(len(salt)+len(a)) * 8
	binary.BigEndian.PutUint64(tailA[n-8:], bits)
	binary.BigEndian.PutUint64(tailB[n-8:], bits)
	sha256x2Blocks(&sa, &sb, &tailA[0], &tailB[0], n/64)
	for i := range sa {
		binary.BigEndian.PutUint32(ha[4*i:], sa[i])
		binary.BigEndian.PutUint32(hb[4*i:], sb[i])
	}
	return ha, hb
}
