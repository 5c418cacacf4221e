//go:build arm || 386

package launcher

import "golang.org/x/sys/unix"

// The 32-bit arches' id calls with 32-bit ids (the plain ones take 16).
const (
	sysSetgroups = unix.SYS_SETGROUPS32
	sysSetresgid = unix.SYS_SETRESGID32
	sysSetresuid = unix.SYS_SETRESUID32
)
