package launcher

// canDeferSignals: the handlers of sigdefer.go exist for this arch.
const canDeferSignals = true

// handlerAddrs returns the addresses of deferHandler, of primeHandler and
// of the return trampoline the x86-64 kernel requires (SA_RESTORER).
func handlerAddrs() (deferH, primeH, restorer uintptr)

// deferAction and primeAction are the kernel's struct sigaction for the
// handlers: every signal blocked while one runs.
func deferAction() [4]uint64 {
	h, _, r := handlerAddrs()
	return [4]uint64{uint64(h), handlerFlags | saRestorer, uint64(r), ^uint64(0)}
}

func primeAction() [4]uint64 {
	_, h, r := handlerAddrs()
	return [4]uint64{uint64(h), handlerFlags | saRestorer, uint64(r), ^uint64(0)}
}

const saRestorer = 0x04000000
