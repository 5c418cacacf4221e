package launcher

import (
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

// seccompProgram is the BPF program the child installs for a profile; nil
// for "unconfined". The default profile is compiled ahead of time
// (internal/seccompgen, one table per arch in zseccomp_*.go).
func seccompProgram(profile string) (*unix.SockFprog, error) {
	if profile != "default" {
		return nil, nil
	}
	if len(defaultFilter) == 0 {
		return nil, fmt.Errorf("this cimg-run has no default seccomp profile for %s (set security.seccomp = \"unconfined\", or add the arch to make seccomp)", runtime.GOARCH)
	}
	return &unix.SockFprog{Len: uint16(len(defaultFilter)), Filter: &defaultFilter[0]}, nil
}
