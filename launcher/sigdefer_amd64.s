#include "textflag.h"

// The handlers of sigdefer.go, entered by the kernel with the C calling
// convention: DI = the signal, SI = its siginfo, DX = the ucontext. They
// may clobber every register: rt_sigreturn restores them all. The mask
// the thread gets back is uc->uc_sigmask, at offset 296 (flags, link, a
// 24-byte stack_t and a 256-byte sigcontext before it).

// deferHandler: block the signal here, and send it to the process again.
TEXT deferHandler<>(SB),NOSPLIT|NOFRAME,$0
	MOVQ	DI, CX
	DECQ	CX
	MOVQ	$1, AX
	SHLQ	CX, AX
	ORQ	AX, 296(DX)
	MOVQ	DI, R12
	MOVL	$39, AX // getpid
	SYSCALL
	MOVQ	AX, DI
	MOVQ	R12, SI
	MOVL	$62, AX // kill(getpid(), sig)
	SYSCALL
	RET

// primeHandler: block SIGUSR1 and SIGUSR2 here (deferredMask).
TEXT primeHandler<>(SB),NOSPLIT|NOFRAME,$0
	ORQ	$0xa00, 296(DX)
	RET

// restorer is where the handlers return to: rt_sigreturn.
TEXT restorer<>(SB),NOSPLIT|NOFRAME,$0
	MOVQ	$15, AX
	SYSCALL
	INT	$3

// func handlerAddrs() (deferH, primeH, restorer uintptr)
TEXT ·handlerAddrs(SB),NOSPLIT,$0-24
	LEAQ	deferHandler<>(SB), AX
	MOVQ	AX, deferH+0(FP)
	LEAQ	primeHandler<>(SB), AX
	MOVQ	AX, primeH+8(FP)
	LEAQ	restorer<>(SB), AX
	MOVQ	AX, restorer+16(FP)
	RET
