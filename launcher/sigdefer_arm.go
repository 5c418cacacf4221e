package launcher

// canDeferSignals: the handlers of sigdefer.go exist for this arch.
const canDeferSignals = true

// handlerAddrs returns the addresses of deferHandler and primeHandler (the
// kernel returns from them through its own sigreturn page: no restorer).
func handlerAddrs() (deferH, primeH uintptr)

// handlerActions are the kernel's struct sigaction for the handlers, in
// 32-bit words (handler, flags, restorer, a 64-bit mask): every signal
// blocked while one runs.
func handlerActions() (deferAct, primeAct [4]uint64) {
	d, p := handlerAddrs()
	return [4]uint64{uint64(d) | handlerFlags<<32, 0xffffffff << 32, 0xffffffff, 0},
		[4]uint64{uint64(p) | handlerFlags<<32, 0xffffffff << 32, 0xffffffff, 0}
}
