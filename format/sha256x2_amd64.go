//go:build amd64 && !purego

package format

import "sync"

// Why two messages at a time. The verity tree is one SHA-256 per 4 KiB
// block of the payload: 13 % of an lz4 cimg-build's CPU (perf record over
// 10 builds of bench-build's tree) and most of a first launch's
// verification. A SHA-256 is a chain of SHA256RNDS2 instructions, each
// waiting for the one before it, so one message at a time is bound by
// that instruction's latency, not its throughput: on this machine (AMD
// EPYC, Zen 3) a chain of them takes 1.25 ns each and two independent
// chains 0.62 ns each, and crypto/sha256, which hashes one message at a
// time, gives 1.5 GB/s on 4 KiB blocks. hashData has thousands of
// independent blocks, so it hands them here two by two
// (BenchmarkHashBlocks measures both ways).

// sha256x2Blocks runs SHA-256's compression function over n 64-byte
// chunks of two messages, p0 with the state s0 and p1 with s1
// (sha256x2_amd64.s).
//
//go:noescape
func sha256x2Blocks(s0, s1 *[8]uint32, p0, p1 *byte, n int)

func cpuid(leaf, sub uint32) (a, b, c, d uint32)

// haveSHA256x2 says whether this CPU has what sha256x2Blocks uses: the SHA
// extensions (CPUID.(EAX=7,ECX=0):EBX bit 29), SSSE3 (PSHUFB, PALIGNR:
// CPUID.1:ECX bit 9) and SSE4.1 (PBLENDW: bit 19). Asked once, when first
// needed: CPUID exits to the hypervisor in a VM, and most cimg-run
// commands hash nothing.
var haveSHA256x2 = sync.OnceValue(func() bool {
	if maxLeaf, _, _, _ := cpuid(0, 0); maxLeaf < 7 {
		return false
	}
	_, _, c1, _ := cpuid(1, 0)
	_, b7, _, _ := cpuid(7, 0)
	return c1&(1<<9) != 0 && c1&(1<<19) != 0 && b7&(1<<29) != 0
})
