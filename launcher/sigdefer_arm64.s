#include "textflag.h"

// The handlers of sigdefer.go, entered by the kernel with the C calling
// convention: R0 = the signal, R1 = its siginfo, R2 = the ucontext, LR =
// the kernel's return trampoline. They may clobber every other register:
// rt_sigreturn restores them all. The mask the thread gets back is
// uc->uc_sigmask, at offset 40 (flags, link and a 24-byte stack_t before
// it).

// deferHandler: block the signal here, and send it to the process again.
TEXT deferHandler<>(SB),NOSPLIT|NOFRAME,$0
	SUB	$1, R0, R3
	MOVD	$1, R4
	LSL	R3, R4, R4
	MOVD	40(R2), R5
	ORR	R4, R5, R5
	MOVD	R5, 40(R2)
	MOVD	R0, R9
	MOVD	$172, R8 // getpid
	SVC
	MOVD	R9, R1
	MOVD	$129, R8 // kill(getpid(), sig)
	SVC
	RET

// primeHandler: block SIGUSR1 and SIGUSR2 here (deferredMask).
TEXT primeHandler<>(SB),NOSPLIT|NOFRAME,$0
	MOVD	40(R2), R5
	ORR	$0xa00, R5, R5
	MOVD	R5, 40(R2)
	RET

// func handlerAddrs() (deferH, primeH uintptr)
TEXT ·handlerAddrs(SB),NOSPLIT,$0-16
	MOVD	$deferHandler<>(SB), R0
	MOVD	R0, deferH+0(FP)
	MOVD	$primeHandler<>(SB), R0
	MOVD	R0, primeH+8(FP)
	RET
