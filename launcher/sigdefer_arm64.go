package launcher

// canDeferSignals: the handlers of sigdefer.go exist for this arch.
const canDeferSignals = true

// handlerAddrs returns the addresses of deferHandler and primeHandler (the
// kernel returns from them through the vDSO's trampoline: no restorer).
func handlerAddrs() (deferH, primeH uintptr)

// deferAction and primeAction are the kernel's struct sigaction for the
// handlers: every signal blocked while one runs.
func deferAction() [4]uint64 {
	h, _ := handlerAddrs()
	return [4]uint64{uint64(h), handlerFlags, 0, ^uint64(0)}
}

func primeAction() [4]uint64 {
	_, h := handlerAddrs()
	return [4]uint64{uint64(h), handlerFlags, 0, ^uint64(0)}
}
