// Command faultinject runs a command under a seccomp filter that fails one
// kernel call with a given errno: the real kernel's error path, for
// conditions a test machine cannot reach for real (no loop device left, a
// kernel without close_range or clone3). Tests only.
//
// Usage: faultinject FAULT COMMAND [ARGS...]
//
//	loop-enospc         ioctl(LOOP_CTL_GET_FREE) fails with ENOSPC
//	close_range-enosys  close_range fails with ENOSYS (Linux < 5.9)
//	clone3-enosys       clone3 fails with ENOSYS (Linux < 5.3)
package main

import (
	"fmt"
	"os"
	"syscall"

	seccomp "github.com/elastic/go-seccomp-bpf"
	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) < 3 {
		fail(fmt.Errorf("usage: faultinject FAULT COMMAND [ARGS...]"))
	}
	var cond seccomp.NameWithConditions
	var errno syscall.Errno
	switch os.Args[1] {
	case "loop-enospc":
		cond, errno = seccomp.NameWithConditions{Name: "ioctl", Conditions: seccomp.ArgumentConditions{
			{Argument: 1, Operation: seccomp.Equal, Value: unix.LOOP_CTL_GET_FREE}}}, unix.ENOSPC
	case "close_range-enosys":
		cond, errno = seccomp.NameWithConditions{Name: "close_range"}, unix.ENOSYS
	case "clone3-enosys":
		cond, errno = seccomp.NameWithConditions{Name: "clone3"}, unix.ENOSYS
	default:
		fail(fmt.Errorf("unknown fault %q", os.Args[1]))
	}
	p := seccomp.Policy{DefaultAction: seccomp.ActionAllow, Syscalls: []seccomp.SyscallGroup{
		{NamesWithCondtions: []seccomp.NameWithConditions{cond}, Action: seccomp.ActionErrno | seccomp.Action(errno)}}}
	if err := seccomp.LoadFilter(seccomp.Filter{Flag: seccomp.FilterFlagTSync, Policy: p}); err != nil {
		fail(err)
	}
	fail(syscall.Exec(os.Args[2], os.Args[2:], os.Environ()))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "faultinject:", err)
	os.Exit(2)
}
