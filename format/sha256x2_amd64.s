//go:build amd64 && !purego

#include "textflag.h"

// Two SHA-256 messages hashed side by side with the SHA extensions; why
// two and not one: sha256x2_amd64.go. The algorithm is FIPS 180-4's, in the
// form the SHA extensions take it: the state as two registers (ABEF and
// CDGH), two rounds per SHA256RNDS2 with the message words plus their
// constants in X0, and the message schedule by SHA256MSG1 and SHA256MSG2.
//
// Registers:
//   X0        SHA256RNDS2's implicit operand: 2 message words + constants
//   X1, X2    lane 0's state, ABEF and CDGH
//   X3, X4    lane 1's state
//   X5-X8     lane 0's message schedule: groups of 4 words, in turn
//   X9-X12    lane 1's
//   X13, X14  scratch (X13 holds the byte-swap mask while a block loads)
//   SI, DI    the lanes' next block; CX blocks left; AX the constants
//   R8, R9    the lanes' states in memory
//   0-63(SP)  both lanes' state as the block started, added back after it

// LOAD reads the 4 words at off of each lane's block, big-endian.
#define LOAD(off, m, n) \
	MOVOU off(SI), m; \
	PSHUFB X13, m; \
	MOVOU off(DI), n; \
	PSHUFB X13, n

// ROUNDS4 runs 4 rounds of each lane on its schedule words m and n, with
// the constants at koff(AX). The lanes alternate: each SHA256RNDS2 waits
// for its own lane's previous one, not for the other lane's.
#define ROUNDS4(koff, m, n) \
	MOVOU koff(AX), X13; \
	PADDD m, X13; \
	MOVOU koff(AX), X14; \
	PADDD n, X14; \
	MOVO X13, X0; \
	SHA256RNDS2 X0, X1, X2; \
	MOVO X14, X0; \
	SHA256RNDS2 X0, X3, X4; \
	PSHUFD $0x0e, X13, X0; \
	SHA256RNDS2 X0, X2, X1; \
	PSHUFD $0x0e, X14, X0; \
	SHA256RNDS2 X0, X4, X3

// NEXT completes each lane's next 4 schedule words (next, which already
// holds SHA256MSG1 of the group 4 before it and the one after that) from
// the current group cur and the one before it, prev:
// W[i] = σ1(W[i-2]) + W[i-7] + σ0(W[i-15]) + W[i-16].
#define NEXT(mcur, mprev, mnext, ncur, nprev, nnext) \
	MOVO mcur, X13; \
	PALIGNR $4, mprev, X13; \
	PADDD X13, mnext; \
	SHA256MSG2 mcur, mnext; \
	MOVO ncur, X14; \
	PALIGNR $4, nprev, X14; \
	PADDD X14, nnext; \
	SHA256MSG2 ncur, nnext

// TOREGS turns a state as stored (h0..h7: A B C D, E F G H) at ptr into
// the ABEF and CDGH registers.
#define TOREGS(ptr, abef, cdgh) \
	MOVOU (ptr), abef; \
	MOVOU 16(ptr), cdgh; \
	PSHUFD $0xb1, abef, abef; \
	PSHUFD $0x1b, cdgh, cdgh; \
	MOVO abef, X13; \
	PALIGNR $8, cdgh, abef; \
	PBLENDW $0xf0, X13, cdgh

// TOMEM stores ABEF and CDGH back as h0..h7 at ptr.
#define TOMEM(ptr, abef, cdgh) \
	PSHUFD $0x1b, abef, abef; \
	PSHUFD $0xb1, cdgh, cdgh; \
	MOVO abef, X13; \
	PBLENDW $0xf0, cdgh, abef; \
	PALIGNR $8, X13, cdgh; \
	MOVOU abef, (ptr); \
	MOVOU cdgh, 16(ptr)

// func sha256x2Blocks(s0, s1 *[8]uint32, p0, p1 *byte, n int)
TEXT ·sha256x2Blocks(SB), NOSPLIT, $64-40
	MOVQ s0+0(FP), R8
	MOVQ s1+8(FP), R9
	MOVQ p0+16(FP), SI
	MOVQ p1+24(FP), DI
	MOVQ n+32(FP), CX
	TESTQ CX, CX
	JLE done
	TOREGS(R8, X1, X2)
	TOREGS(R9, X3, X4)
	LEAQ k256<>(SB), AX

block:
	MOVOU X1, 0(SP)
	MOVOU X2, 16(SP)
	MOVOU X3, 32(SP)
	MOVOU X4, 48(SP)
	MOVOU flip<>(SB), X13
	LOAD(0, X5, X9)
	LOAD(16, X6, X10)
	LOAD(32, X7, X11)
	LOAD(48, X8, X12)

	// rounds 0-3
	ROUNDS4(0, X5, X9)
	// rounds 4-7
	ROUNDS4(16, X6, X10)
	SHA256MSG1 X6, X5
	SHA256MSG1 X10, X9
	// rounds 8-11
	ROUNDS4(32, X7, X11)
	SHA256MSG1 X7, X6
	SHA256MSG1 X11, X10
	// rounds 12-15
	ROUNDS4(48, X8, X12)
	NEXT(X8, X7, X5, X12, X11, X9)
	SHA256MSG1 X8, X7
	SHA256MSG1 X12, X11
	// rounds 16-19
	ROUNDS4(64, X5, X9)
	NEXT(X5, X8, X6, X9, X12, X10)
	SHA256MSG1 X5, X8
	SHA256MSG1 X9, X12
	// rounds 20-23
	ROUNDS4(80, X6, X10)
	NEXT(X6, X5, X7, X10, X9, X11)
	SHA256MSG1 X6, X5
	SHA256MSG1 X10, X9
	// rounds 24-27
	ROUNDS4(96, X7, X11)
	NEXT(X7, X6, X8, X11, X10, X12)
	SHA256MSG1 X7, X6
	SHA256MSG1 X11, X10
	// rounds 28-31
	ROUNDS4(112, X8, X12)
	NEXT(X8, X7, X5, X12, X11, X9)
	SHA256MSG1 X8, X7
	SHA256MSG1 X12, X11
	// rounds 32-35
	ROUNDS4(128, X5, X9)
	NEXT(X5, X8, X6, X9, X12, X10)
	SHA256MSG1 X5, X8
	SHA256MSG1 X9, X12
	// rounds 36-39
	ROUNDS4(144, X6, X10)
	NEXT(X6, X5, X7, X10, X9, X11)
	SHA256MSG1 X6, X5
	SHA256MSG1 X10, X9
	// rounds 40-43
	ROUNDS4(160, X7, X11)
	NEXT(X7, X6, X8, X11, X10, X12)
	SHA256MSG1 X7, X6
	SHA256MSG1 X11, X10
	// rounds 44-47
	ROUNDS4(176, X8, X12)
	NEXT(X8, X7, X5, X12, X11, X9)
	SHA256MSG1 X8, X7
	SHA256MSG1 X12, X11
	// rounds 48-51
	ROUNDS4(192, X5, X9)
	NEXT(X5, X8, X6, X9, X12, X10)
	SHA256MSG1 X5, X8
	SHA256MSG1 X9, X12
	// rounds 52-55
	ROUNDS4(208, X6, X10)
	NEXT(X6, X5, X7, X10, X9, X11)
	// rounds 56-59
	ROUNDS4(224, X7, X11)
	NEXT(X7, X6, X8, X11, X10, X12)
	// rounds 60-63
	ROUNDS4(240, X8, X12)

	MOVOU 0(SP), X13
	PADDD X13, X1
	MOVOU 16(SP), X13
	PADDD X13, X2
	MOVOU 32(SP), X13
	PADDD X13, X3
	MOVOU 48(SP), X13
	PADDD X13, X4
	ADDQ $64, SI
	ADDQ $64, DI
	DECQ CX
	JNZ block

	TOMEM(R8, X1, X2)
	TOMEM(R9, X3, X4)

done:
	RET

// func cpuid(leaf, sub uint32) (a, b, c, d uint32)
TEXT ·cpuid(SB), NOSPLIT, $0-24
	MOVL leaf+0(FP), AX
	MOVL sub+4(FP), CX
	CPUID
	MOVL AX, a+8(FP)
	MOVL BX, b+12(FP)
	MOVL CX, c+16(FP)
	MOVL DX, d+20(FP)
	RET

// flip turns each little-endian 32-bit word of a register around.
DATA flip<>+0(SB)/8, $0x0405060700010203
DATA flip<>+8(SB)/8, $0x0c0d0e0f08090a0b
GLOBL flip<>(SB), RODATA|NOPTR, $16

// k256: SHA-256's 64 round constants (FIPS 180-4, 4.2.2), 4 to a group.
DATA k256<>+0(SB)/4, $0x428a2f98
DATA k256<>+4(SB)/4, $0x71374491
DATA k256<>+8(SB)/4, $0xb5c0fbcf
DATA k256<>+12(SB)/4, $0xe9b5dba5
DATA k256<>+16(SB)/4, $0x3956c25b
DATA k256<>+20(SB)/4, $0x59f111f1
DATA k256<>+24(SB)/4, $0x923f82a4
DATA k256<>+28(SB)/4, $0xab1c5ed5
DATA k256<>+32(SB)/4, $0xd807aa98
DATA k256<>+36(SB)/4, $0x12835b01
DATA k256<>+40(SB)/4, $0x243185be
DATA k256<>+44(SB)/4, $0x550c7dc3
DATA k256<>+48(SB)/4, $0x72be5d74
DATA k256<>+52(SB)/4, $0x80deb1fe
DATA k256<>+56(SB)/4, $0x9bdc06a7
DATA k256<>+60(SB)/4, $0xc19bf174
DATA k256<>+64(SB)/4, $0xe49b69c1
DATA k256<>+68(SB)/4, $0xefbe4786
DATA k256<>+72(SB)/4, $0x0fc19dc6
DATA k256<>+76(SB)/4, $0x240ca1cc
DATA k256<>+80(SB)/4, $0x2de92c6f
DATA k256<>+84(SB)/4, $0x4a7484aa
DATA k256<>+88(SB)/4, $0x5cb0a9dc
DATA k256<>+92(SB)/4, $0x76f988da
DATA k256<>+96(SB)/4, $0x983e5152
DATA k256<>+100(SB)/4, $0xa831c66d
DATA k256<>+104(SB)/4, $0xb00327c8
DATA k256<>+108(SB)/4, $0xbf597fc7
DATA k256<>+112(SB)/4, $0xc6e00bf3
DATA k256<>+116(SB)/4, $0xd5a79147
DATA k256<>+120(SB)/4, $0x06ca6351
DATA k256<>+124(SB)/4, $0x14292967
DATA k256<>+128(SB)/4, $0x27b70a85
DATA k256<>+132(SB)/4, $0x2e1b2138
DATA k256<>+136(SB)/4, $0x4d2c6dfc
DATA k256<>+140(SB)/4, $0x53380d13
DATA k256<>+144(SB)/4, $0x650a7354
DATA k256<>+148(SB)/4, $0x766a0abb
DATA k256<>+152(SB)/4, $0x81c2c92e
DATA k256<>+156(SB)/4, $0x92722c85
DATA k256<>+160(SB)/4, $0xa2bfe8a1
DATA k256<>+164(SB)/4, $0xa81a664b
DATA k256<>+168(SB)/4, $0xc24b8b70
DATA k256<>+172(SB)/4, $0xc76c51a3
DATA k256<>+176(SB)/4, $0xd192e819
DATA k256<>+180(SB)/4, $0xd6990624
DATA k256<>+184(SB)/4, $0xf40e3585
DATA k256<>+188(SB)/4, $0x106aa070
DATA k256<>+192(SB)/4, $0x19a4c116
DATA k256<>+196(SB)/4, $0x1e376c08
DATA k256<>+200(SB)/4, $0x2748774c
DATA k256<>+204(SB)/4, $0x34b0bcb5
DATA k256<>+208(SB)/4, $0x391c0cb3
DATA k256<>+212(SB)/4, $0x4ed8aa4a
DATA k256<>+216(SB)/4, $0x5b9cca4f
DATA k256<>+220(SB)/4, $0x682e6ff3
DATA k256<>+224(SB)/4, $0x748f82ee
DATA k256<>+228(SB)/4, $0x78a5636f
DATA k256<>+232(SB)/4, $0x84c87814
DATA k256<>+236(SB)/4, $0x8cc70208
DATA k256<>+240(SB)/4, $0x90befffa
DATA k256<>+244(SB)/4, $0xa4506ceb
DATA k256<>+248(SB)/4, $0xbef9a3f7
DATA k256<>+252(SB)/4, $0xc67178f2
GLOBL k256<>(SB), RODATA|NOPTR, $256
