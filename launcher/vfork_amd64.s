#include "textflag.h"

// func vforkSyscall(trap, a1, a2 uintptr) (r1, errno uintptr)
//
// A clone that shares this address space and suspends this thread until
// the child execs or exits (CLONE_VM|CLONE_VFORK). The child runs first,
// on this very stack, and its later calls overwrite the stack below the
// caller's frame: the return address therefore waits in a register (R12,
// which the kernel keeps per task), not on the stack, across the call.
TEXT ·vforkSyscall(SB),NOSPLIT|NOFRAME,$0-40
	MOVQ	trap+0(FP), AX
	MOVQ	a1+8(FP), DI
	MOVQ	a2+16(FP), SI
	XORQ	DX, DX
	XORQ	R10, R10
	XORQ	R8, R8
	XORQ	R9, R9
	POPQ	R12
	SYSCALL
	PUSHQ	R12
	CMPQ	AX, $0xfffffffffffff001
	JLS	done
	NEGQ	AX
	MOVQ	$-1, r1+24(FP)
	MOVQ	AX, errno+32(FP)
	RET
done:
	MOVQ	AX, r1+24(FP)
	MOVQ	$0, errno+32(FP)
	RET
