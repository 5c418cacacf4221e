#include "textflag.h"

// The handlers of sigdefer.go, entered by the kernel with the C calling
// convention: R0 = the signal, R1 = its siginfo, R2 = the ucontext, LR =
// the kernel's return trampoline. They may clobber every other register:
// rt_sigreturn restores them all. The mask the thread gets back is
// uc->uc_sigmask, at offset 104 (flags, link, a 12-byte stack_t and an
// 84-byte sigcontext before it); its low word holds signals 1 to 32.

// deferHandler: block the signal here, and send it to the process again.
TEXT deferHandler<>(SB),NOSPLIT|NOFRAME,$0
	SUB	$1, R0, R3
	MOVW	$1, R4
	MOVW	R4<<R3, R4
	MOVW	104(R2), R5
	ORR	R4, R5, R5
	MOVW	R5, 104(R2)
	MOVW	R0, R6
	MOVW	$20, R7 // getpid
	SWI	$0
	MOVW	R6, R1
	MOVW	$37, R7 // kill(getpid(), sig)
	SWI	$0
	RET

// primeHandler: block SIGUSR1 and SIGUSR2 here (deferredMask).
TEXT primeHandler<>(SB),NOSPLIT|NOFRAME,$0
	MOVW	104(R2), R5
	ORR	$0xa00, R5, R5
	MOVW	R5, 104(R2)
	RET

// func handlerAddrs() (deferH, primeH uintptr)
TEXT ·handlerAddrs(SB),NOSPLIT,$0-8
	MOVW	$deferHandler<>(SB), R0
	MOVW	R0, deferH+0(FP)
	MOVW	$primeHandler<>(SB), R0
	MOVW	R0, primeH+4(FP)
	RET
