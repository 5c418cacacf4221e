package launcher

import (
	"fmt"
	"runtime"

	seccomp "github.com/elastic/go-seccomp-bpf"
	"github.com/elastic/go-seccomp-bpf/arch"
	"golang.org/x/sys/unix"
)

// defaultDeny is the default profile: a deny-list in the spirit of
// Docker's default (which allows a list instead). These calls change the
// kernel or the system rather than the app's own world — modules, kexec,
// mounts and namespaces, keyrings, time, swap, tracing other processes,
// BPF and perf, io_uring — and fail with EPERM. Calls unknown on the
// running arch are left out.
var defaultDeny = []string{
	"acct", "add_key", "bpf", "clock_adjtime", "clock_settime", "create_module", "delete_module",
	"fanotify_init", "finit_module", "fsconfig", "fsmount", "fsopen", "fspick", "get_kernel_syms",
	"init_module", "io_uring_enter", "io_uring_register", "io_uring_setup", "ioperm", "iopl", "kcmp",
	"kexec_file_load", "kexec_load", "keyctl", "lookup_dcookie", "mount", "mount_setattr", "move_mount",
	"name_to_handle_at", "nfsservctl", "open_by_handle_at", "open_tree", "perf_event_open", "pivot_root",
	"process_vm_readv", "process_vm_writev", "ptrace", "query_module", "quotactl", "quotactl_fd",
	"reboot", "request_key", "setns", "settimeofday", "stime", "swapoff", "swapon", "_sysctl", "sysfs",
	"syslog", "umount", "umount2", "unshare", "uselib", "userfaultfd", "ustat", "vm86", "vm86old",
}

// cloneNewFlags are clone's namespace flags: creating namespaces is
// refused like unshare is.
const cloneNewFlags = unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC | unix.CLONE_NEWUSER |
	unix.CLONE_NEWPID | unix.CLONE_NEWNET | unix.CLONE_NEWCGROUP

func defaultPolicy() (*seccomp.Policy, error) {
	info, err := arch.GetInfo("")
	if err != nil {
		return nil, fmt.Errorf("seccomp: %w", err)
	}
	var names []string
	for _, n := range defaultDeny {
		if _, ok := info.SyscallNames[n]; ok {
			names = append(names, n)
		}
	}
	groups := []seccomp.SyscallGroup{
		{Names: names, Action: seccomp.ActionErrno},
		{NamesWithCondtions: []seccomp.NameWithConditions{{Name: "clone", Conditions: seccomp.ArgumentConditions{
			{Argument: 0, Operation: seccomp.BitsSet, Value: cloneNewFlags}}}}, Action: seccomp.ActionErrno},
	}
	if _, ok := info.SyscallNames["clone3"]; ok {
		// clone3's flags sit in a struct seccomp cannot read: ENOSYS makes
		// libc fall back to clone, whose flags it can.
		groups = append(groups, seccomp.SyscallGroup{Names: []string{"clone3"}, Action: seccomp.ActionErrno | seccomp.Action(unix.ENOSYS)})
	}
	p := &seccomp.Policy{DefaultAction: seccomp.ActionAllow, Syscalls: groups}
	return p, p.Validate()
}

// loadSeccomp installs the profile on every thread (we exec from one,
// but TSYNC leaves no thread unfiltered in between).
func loadSeccomp(profile string) error {
	if profile != "default" {
		return nil
	}
	p, err := defaultPolicy()
	if err != nil {
		return err
	}
	if err := seccomp.LoadFilter(seccomp.Filter{Flag: seccomp.FilterFlagTSync, Policy: *p}); err != nil {
		return fmt.Errorf("load seccomp filter (%s): %w", runtime.GOARCH, err)
	}
	return nil
}
