package launcher

// vforkSyscall is clone(2) or clone3(2) with CLONE_VM|CLONE_VFORK in its
// flags (vfork_amd64.s); forkChild's child then never returns to Go.
//
//go:noescape
func vforkSyscall(trap, a1, a2 uintptr) (r1, errno uintptr)

// canVfork: the assembly above exists for this arch only; elsewhere the
// exec child is forked (a copy of the address space).
const canVfork = true
