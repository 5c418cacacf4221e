package launcher

// canDeferSignals: the handlers of sigdefer.go exist for this arch.
const canDeferSignals = true

// handlerAddrs returns the addresses of deferHandler, of primeHandler and
// of the return trampoline the x86-64 kernel requires (SA_RESTORER).
func handlerAddrs() (deferH, primeH, restorer uintptr)

// handlerActions are the kernel's struct sigaction for the handlers:
// every signal blocked while one runs.
func handlerActions() (deferAct, primeAct [4]uint64) {
	const saRestorer = 0x04000000
	d, p, r := handlerAddrs()
	return [4]uint64{uint64(d), handlerFlags | saRestorer, uint64(r), ^uint64(0)},
		[4]uint64{uint64(p), handlerFlags | saRestorer, uint64(r), ^uint64(0)}
}
