//go:build !amd64 && !arm64 && !arm

package launcher

// canDeferSignals: the handlers of sigdefer.go do not exist for this
// arch, so there is no slim waiter either: a SIGUSR1 or SIGUSR2 could be
// lost in its exec.
const canDeferSignals = false

func handlerActions() (deferAct, primeAct [4]uint64) { panic("signal deferral: not on this arch") }
