package launcher

// canDeferSignals: the handlers of sigdefer.go exist for this arch.
const canDeferSignals = true

// handlerAddrs returns the addresses of deferHandler and primeHandler (the
// kernel returns from them through its own sigreturn page: no restorer).
func handlerAddrs() (deferH, primeH uintptr)

// deferAction and primeAction are the kernel's struct sigaction for the
// handlers, in 32-bit words (handler, flags, restorer, a 64-bit mask):
// every signal blocked while one runs.
func deferAction() [4]uint64 {
	h, _ := handlerAddrs()
	return [4]uint64{uint64(h) | handlerFlags<<32, 0xffffffff << 32, 0xffffffff, 0}
}

func primeAction() [4]uint64 {
	_, h := handlerAddrs()
	return [4]uint64{uint64(h) | handlerFlags<<32, 0xffffffff << 32, 0xffffffff, 0}
}
