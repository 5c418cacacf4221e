//go:build !amd64

package launcher

func vforkSyscall(trap, a1, a2 uintptr) (r1, errno uintptr) { panic("vfork: not on this arch") }

const canVfork = false
