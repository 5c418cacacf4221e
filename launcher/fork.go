package launcher

import (
	"fmt"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The app's process is forked from the thread enterRoot prepared, and the
// child runs nothing but raw system calls from there to execve, the way
// package syscall's own ForkExec child does: no allocation, no stack
// growth, no runtime. That is what spares a second Go runtime start (a
// re-executed cimg-run child cost more than the rest of the launch put
// together). Everything the child needs is built beforehand, in forkPlan.
//
// The runtime's fork hooks, exported to package syscall for this purpose:
// block signals and forbid stack growth around the fork, and reset the
// child's signal handlers.

//go:linkname runtimeBeforeFork syscall.runtime_BeforeFork
func runtimeBeforeFork()

//go:linkname runtimeAfterFork syscall.runtime_AfterFork
func runtimeAfterFork()

//go:linkname runtimeAfterForkInChild syscall.runtime_AfterForkInChild
func runtimeAfterForkInChild()

// forkPlan is the child's program, every pointer in it made before fork.
type forkPlan struct {
	cloneFlags uintptr    // namespaces for clone(2)
	clone3     *cloneArgs // set on cgroup v2: clone3 straight into the cgroup

	syncR, syncW int // the parent writes one byte once the child is in its cgroup
	errR, errW   int // the child writes a childError here; execve closes it

	procMounts []rawMount // /proc, then its read-only and masked paths
	// earlyProc, when set, is /proc's mount(2) call, made by the child
	// first thing (its target a /proc/self/fd/N path of the new root's
	// /proc directory): it reports stepProc done and waits, while the
	// parent goes on with the mounts listed after /proc. procMounts then
	// holds the rest, and chdir is set: the child was forked before the
	// launch thread changed directory, and it enters rootFD (the new
	// root's directory) with fchdir and chroot once released.
	earlyProc *rawMount
	rootFD    int

	// vfork: the child shares this address space and the forking thread
	// waits until it execs (CLONE_VM|CLONE_VFORK): no copy of the page
	// tables, no copy-on-write faults on either side, nothing to tear down
	// at its execve. There is no sync step: only for a child whose parent
	// has nothing to do before its execve (exec into an instance; a launch
	// without id maps to write, a systemd main pid or a hold: start.go).
	vfork bool
	// cgroupEntry: the child enters its cgroup itself, first thing,
	// writing "0" to each (cgroup.EntryFile: on v1 a move of its one
	// thread, which waits for no RCU grace period as a move of a process
	// by pid does), unless clone3 placed it.
	cgroupEntry []int
	noPdeathsig bool // the app outlives the launcher (handed to systemd, or cimg-oci's create)
	noCgroupNS  bool // stay in the launcher's cgroup namespace (an OCI config without one)
	// fifoPath, when set, names (/proc/self/fd/N) an O_PATH fd of
	// cimg-oci's exec fifo: the child reports stepFifo, then blocks
	// opening it for writing until `start` opens it for reading, and only
	// then goes on to drop privileges and execve.
	fifoPath *byte

	// exec into a running instance (join.go) instead of a launch:
	join  []int   // namespace fds to setns, in order; then no cgroup namespace of its own
	chdir *byte   // the working directory, once in the instance's mount namespace
	stdio [3]int  // fds to become 0, 1, 2 (-1: inherited); with a terminal, the pty
	tty   bool    // a new session with stdio[0] as its controlling terminal
	paths []*byte // more candidates for execve's path after path (a command found by $PATH)

	rlimits    []rlimitCall
	filter     *unix.SockFprog // nil: no seccomp
	noNewPrivs bool
	userNS     bool      // a user namespace, mapped by the parent at stepIDMap
	drop       []uintptr // capabilities to drop from the bounding set
	keep       []uintptr // capabilities kept: raised in the ambient set
	groups     []uint32
	uid, gid   uintptr
	capHdr     unix.CapUserHeader
	capData    [2]unix.CapUserData

	path *byte   // execve's path
	argv []*byte // nil-terminated
	envv []*byte // nil-terminated
}

// rawMount is one mount(2) call of the child; optional ones may find no
// target (ENOENT: a /proc file this kernel does not have).
type rawMount struct {
	src, dst, fstype, data *byte
	flags                  uintptr
	optional               bool
	alt                    bool // only if the one before failed with ENOTDIR (MountSpec.Alt)
}

type rlimitCall struct {
	resource uintptr
	lim      unix.Rlimit
}

// cloneArgs is struct clone_args of clone3(2), up to the cgroup field.
type cloneArgs struct {
	flags, pidfd, childTID, parentTID, exitSignal, stack, stackSize, tls, setTID, setTIDSize, cgroup uint64
}

// The steps of the child, in order; a failure reports which.
const (
	stepPdeathsig = iota + 1
	stepCgroup
	stepSync
	stepCgroupNS
	stepJoin
	stepChdir
	stepTTY
	stepProc
	stepCloseFDs
	stepRlimit
	stepUserNS
	stepIDMap
	stepFifo
	stepSeccomp
	stepBounding
	stepKeepCaps
	stepSetgroups
	stepSetgid
	stepSetuid
	stepRearm
	stepCapset
	stepAmbient
	stepNoNewPrivs
	stepExec
)

var stepNames = map[uint32]string{
	stepPdeathsig: "set the parent-death signal", stepCgroup: "join the cgroup", stepSync: "wait to be released",
	stepCgroupNS: "unshare the cgroup namespace", stepJoin: "join the instance's namespaces", stepChdir: "chdir to the working directory",
	stepTTY: "take the terminal", stepProc: "mount /proc", stepCloseFDs: "close inherited fds",
	stepRlimit: "setrlimit", stepUserNS: "unshare the user namespace", stepIDMap: "wait for the id maps", stepFifo: "wait for start on the exec fifo", stepSeccomp: "load the seccomp filter", stepBounding: "drop capabilities from the bounding set",
	stepKeepCaps: "PR_SET_KEEPCAPS", stepSetgroups: "setgroups", stepSetgid: "setgid", stepSetuid: "setuid", stepRearm: "re-arm the parent-death signal",
	stepCapset: "capset", stepAmbient: "set ambient capabilities", stepNoNewPrivs: "set no_new_privs", stepExec: "execve",
}

// childError is what a failed child writes to the error pipe.
type childError struct{ step, errno uint32 }

func (e childError) Error() string {
	return fmt.Sprintf("%s: %v", stepNames[e.step], syscall.Errno(e.errno))
}

// release lets the child past its sync read (syncW is the parent's end
// of that pipe). A vfork child has no sync read: by the time its parent
// runs again it has exec'd or failed.
func (p *forkPlan) release(syncW int) error {
	if p.vfork && canVfork {
		return nil
	}
	if _, err := unix.Write(syncW, []byte{1}); err != nil {
		return fmt.Errorf("release the child: %w", err)
	}
	return nil
}

// forkChild forks the app's process from the calling thread, which must
// be locked and prepared by enterRoot. It returns the child's pid in the
// parent; the child never returns.
//
//go:norace
//go:noinline
func forkChild(p *forkPlan) (pid uintptr, err1 syscall.Errno) {
	// Every variable the child uses is declared here, before the fork:
	// nothing may be allocated after it.
	var (
		step   uint32
		i      int
		notDir bool
		n      uintptr
		buf    [1]byte
		poll   unix.PollFd
		noWait unix.Timespec
		report childError
		self   = [1]byte{'0'}
		dot    = [2]byte{'.', 0}
	)
	runtimeBeforeFork()
	if p.vfork && canVfork {
		if p.clone3 != nil {
			// Called from here, not through a helper: the child's calls
			// below overwrite every frame under this one.
			p.clone3.flags |= unix.CLONE_VM | unix.CLONE_VFORK
			pid, n = vforkSyscall(unix.SYS_CLONE3, uintptr(unsafe.Pointer(p.clone3)), unsafe.Sizeof(*p.clone3))
		} else {
			pid, n = vforkSyscall(unix.SYS_CLONE, p.cloneFlags|unix.CLONE_VM|unix.CLONE_VFORK|uintptr(unix.SIGCHLD), 0)
		}
		err1 = syscall.Errno(n)
	} else if p.clone3 != nil {
		pid, _, err1 = syscall.RawSyscall(unix.SYS_CLONE3, uintptr(unsafe.Pointer(p.clone3)), unsafe.Sizeof(*p.clone3), 0)
	} else {
		// No stack and no tid pointers: the argument order, which differs
		// between arches after the flags, does not matter.
		pid, _, err1 = syscall.RawSyscall6(unix.SYS_CLONE, p.cloneFlags|uintptr(unix.SIGCHLD), 0, 0, 0, 0, 0)
	}
	if err1 != 0 || pid != 0 {
		runtimeAfterFork()
		return pid, err1
	}

	// The child: PID 1 of the new pid namespace, single-threaded, with a
	// private copy of the parent's memory, or (vfork) the parent's own,
	// while the forking thread waits for our execve or exit.
	runtimeAfterForkInChild()

	// Die with the launcher thread; the sync read below catches a launcher
	// that died before this line.
	step = stepPdeathsig
	if !p.noPdeathsig {
		if _, _, err1 = syscall.RawSyscall6(unix.SYS_PRCTL, unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0, 0); err1 != 0 {
			goto fail
		}
	}
	// Into the app's cgroup before anything else.
	step = stepCgroup
	for i = 0; p.clone3 == nil && i < len(p.cgroupEntry); i++ {
		if _, _, err1 = syscall.RawSyscall(unix.SYS_WRITE, uintptr(p.cgroupEntry[i]), uintptr(unsafe.Pointer(&self[0])), 1); err1 != 0 {
			goto fail
		}
	}
	if p.earlyProc != nil {
		step = stepProc
		if _, _, err1 = syscall.RawSyscall6(unix.SYS_MOUNT, uintptr(unsafe.Pointer(p.earlyProc.src)), uintptr(unsafe.Pointer(p.earlyProc.dst)),
			uintptr(unsafe.Pointer(p.earlyProc.fstype)), p.earlyProc.flags, uintptr(unsafe.Pointer(p.earlyProc.data)), 0); err1 != 0 {
			goto fail
		}
		report.step, report.errno = stepProc, 0
		if _, _, err1 = syscall.RawSyscall(unix.SYS_WRITE, uintptr(p.errW), uintptr(unsafe.Pointer(&report)), unsafe.Sizeof(report)); err1 != 0 {
			goto fail
		}
	}
	// Wait until the parent releases us (it may have id maps to write,
	// a standby start an old version to stop); EOF means the parent is
	// gone. A vfork child does not: its parent is waiting for its execve.
	step = stepSync
	syscall.RawSyscall(unix.SYS_CLOSE, uintptr(p.syncW), 0, 0)
	syscall.RawSyscall(unix.SYS_CLOSE, uintptr(p.errR), 0, 0)
	if !p.vfork || !canVfork {
		n, _, err1 = syscall.RawSyscall(unix.SYS_READ, uintptr(p.syncR), uintptr(unsafe.Pointer(&buf[0])), 1)
		if err1 != 0 || n != 1 {
			goto exit
		}
	}
	// Forked before the root switch (earlyProc): into the new root, by
	// its fd. pivot_root moved us already; chroot, where it stood in for
	// it, did not.
	if p.earlyProc != nil {
		step = stepChdir
		if _, _, err1 = syscall.RawSyscall(unix.SYS_FCHDIR, uintptr(p.rootFD), 0, 0); err1 != 0 {
			goto fail
		}
		if _, _, err1 = syscall.RawSyscall(unix.SYS_CHROOT, uintptr(unsafe.Pointer(&dot[0])), 0, 0); err1 != 0 {
			goto fail
		}
	}
	// The cgroup namespace now that we are in our cgroup: the app sees its
	// own cgroup as /. A process exec'd into a running instance joins the
	// instance's namespaces instead (the user namespace last: the others
	// belong to the host's, where only the host's root may join them).
	if len(p.join) == 0 && !p.noCgroupNS {
		step = stepCgroupNS
		if _, _, err1 = syscall.RawSyscall(unix.SYS_UNSHARE, unix.CLONE_NEWCGROUP, 0, 0); err1 != 0 {
			goto fail
		}
	}
	step = stepJoin
	for i = 0; i < len(p.join); i++ {
		if _, _, err1 = syscall.RawSyscall(unix.SYS_SETNS, uintptr(p.join[i]), 0, 0); err1 != 0 {
			goto fail
		}
	}
	if p.chdir != nil {
		step = stepChdir
		if _, _, err1 = syscall.RawSyscall(unix.SYS_CHDIR, uintptr(unsafe.Pointer(p.chdir)), 0, 0); err1 != 0 {
			goto fail
		}
	}
	step = stepTTY
	for i = 0; i < 3; i++ {
		if p.stdio[i] >= 0 {
			if _, _, err1 = syscall.RawSyscall(unix.SYS_DUP3, uintptr(p.stdio[i]), uintptr(i), 0); err1 != 0 {
				goto fail
			}
		}
	}
	if p.tty {
		if _, _, err1 = syscall.RawSyscall(unix.SYS_SETSID, 0, 0, 0); err1 != 0 {
			goto fail
		}
		if _, _, err1 = syscall.RawSyscall(unix.SYS_IOCTL, 0, unix.TIOCSCTTY, 0); err1 != 0 {
			goto fail
		}
	}
	// /proc of our pid namespace (only a process inside it can mount
	// that), with what reaches the host kernel read-only or masked.
	step = stepProc
	notDir = false
	for i = 0; i < len(p.procMounts); i++ {
		if p.procMounts[i].alt && !notDir {
			continue
		}
		_, _, err1 = syscall.RawSyscall6(unix.SYS_MOUNT, uintptr(unsafe.Pointer(p.procMounts[i].src)), uintptr(unsafe.Pointer(p.procMounts[i].dst)),
			uintptr(unsafe.Pointer(p.procMounts[i].fstype)), p.procMounts[i].flags, uintptr(unsafe.Pointer(p.procMounts[i].data)), 0)
		// A failure the next mount is the alternative for is not one yet.
		notDir = err1 == unix.ENOTDIR && i+1 < len(p.procMounts) && p.procMounts[i+1].alt
		if err1 != 0 && !notDir && !(err1 == unix.ENOENT && p.procMounts[i].optional) {
			goto fail
		}
	}
	// Every inherited fd above stderr closes at exec (the error pipe
	// still works until then). Without close_range (ENOSYS, Linux < 5.9)
	// the parent's cloexecAll has done it already.
	step = stepCloseFDs
	if _, _, err1 = syscall.RawSyscall(unix.SYS_CLOSE_RANGE, 3, ^uintptr(0), unix.CLOSE_RANGE_CLOEXEC); err1 != 0 && err1 != unix.ENOSYS {
		goto fail
	}
	step = stepRlimit
	for i = 0; i < len(p.rlimits); i++ {
		if _, _, err1 = syscall.RawSyscall6(unix.SYS_PRLIMIT64, 0, p.rlimits[i].resource, uintptr(unsafe.Pointer(&p.rlimits[i].lim)), 0, 0, 0); err1 != 0 {
			goto fail
		}
	}
	// A user namespace last among the namespaces: every mount above was
	// made with the host's privileges, and belongs to the host's user
	// namespace, which the app's root has no power over. The parent writes
	// the id maps; until then we are nobody.
	if p.userNS {
		step = stepUserNS
		if _, _, err1 = syscall.RawSyscall(unix.SYS_UNSHARE, unix.CLONE_NEWUSER, 0, 0); err1 != 0 {
			goto fail
		}
		step = stepIDMap
		report.step, report.errno = stepIDMap, 0
		if _, _, err1 = syscall.RawSyscall(unix.SYS_WRITE, uintptr(p.errW), uintptr(unsafe.Pointer(&report)), unsafe.Sizeof(report)); err1 != 0 {
			goto fail
		}
		n, _, err1 = syscall.RawSyscall(unix.SYS_READ, uintptr(p.syncR), uintptr(unsafe.Pointer(&buf[0])), 1)
		if err1 != 0 || n != 1 {
			goto exit
		}
	}
	// cimg-oci's create ends here: the parent hears we are ready, and
	// returns; the open below blocks until `start` opens the fifo's other
	// end. Reopened through /proc (ours now), as the fd is only a path.
	if p.fifoPath != nil {
		step = stepFifo
		report.step, report.errno = stepFifo, 0
		if _, _, err1 = syscall.RawSyscall(unix.SYS_WRITE, uintptr(p.errW), uintptr(unsafe.Pointer(&report)), unsafe.Sizeof(report)); err1 != 0 {
			goto fail
		}
		if n, _, err1 = syscall.RawSyscall6(unix.SYS_OPENAT, ^uintptr(-unix.AT_FDCWD-1) /* AT_FDCWD */, uintptr(unsafe.Pointer(p.fifoPath)), unix.O_WRONLY|unix.O_CLOEXEC, 0, 0, 0); err1 != 0 {
			goto fail
		}
		buf[0] = 0
		if _, _, err1 = syscall.RawSyscall(unix.SYS_WRITE, n, uintptr(unsafe.Pointer(&buf[0])), 1); err1 != 0 {
			goto fail
		}
		syscall.RawSyscall(unix.SYS_CLOSE, n, 0, 0)
	}
	// Without no_new_privs, installing a filter needs CAP_SYS_ADMIN, which
	// is about to go: then the filter goes in now (it lets through every
	// call made from here to execve). With it, as late as possible.
	step = stepSeccomp
	if p.filter != nil && !p.noNewPrivs {
		if _, _, err1 = syscall.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, uintptr(unsafe.Pointer(p.filter))); err1 != 0 {
			goto fail
		}
	}
	// Privileges: the bounding set (needs CAP_SETPCAP, still held), the
	// identity, the capability sets, ambient.
	step = stepBounding
	for i = 0; i < len(p.drop); i++ {
		// EINVAL: a capability this kernel does not have.
		if _, _, err1 = syscall.RawSyscall6(unix.SYS_PRCTL, unix.PR_CAPBSET_DROP, p.drop[i], 0, 0, 0, 0); err1 != 0 && err1 != unix.EINVAL {
			goto fail
		}
	}
	// Keep permitted caps across setuid to a non-root user; capset then
	// trims them to the keep-list.
	step = stepKeepCaps
	if _, _, err1 = syscall.RawSyscall6(unix.SYS_PRCTL, unix.PR_SET_KEEPCAPS, 1, 0, 0, 0, 0); err1 != 0 {
		goto fail
	}
	step = stepSetgroups
	n = 0
	if len(p.groups) > 0 {
		n = uintptr(unsafe.Pointer(&p.groups[0]))
	}
	if _, _, err1 = syscall.RawSyscall(sysSetgroups, uintptr(len(p.groups)), n, 0); err1 != 0 {
		goto fail
	}
	step = stepSetgid
	if _, _, err1 = syscall.RawSyscall(sysSetresgid, p.gid, p.gid, p.gid); err1 != 0 {
		goto fail
	}
	step = stepSetuid
	if _, _, err1 = syscall.RawSyscall(sysSetresuid, p.uid, p.uid, p.uid); err1 != 0 {
		goto fail
	}
	// The kernel clears the parent-death signal when the ids change: arm
	// it again, then make sure the launcher did not die in between (its
	// end of the sync pipe would have closed).
	step = stepRearm
	if !p.noPdeathsig {
		if _, _, err1 = syscall.RawSyscall6(unix.SYS_PRCTL, unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0, 0); err1 != 0 {
			goto fail
		}
	}
	poll.Fd, poll.Events = int32(p.syncR), unix.POLLIN
	if !p.noPdeathsig {
		if n, _, err1 = syscall.RawSyscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&poll)), 1, uintptr(unsafe.Pointer(&noWait)), 0, 0, 0); err1 == 0 && n == 1 && poll.Revents&unix.POLLHUP != 0 {
			goto exit
		}
	}
	step = stepCapset
	if _, _, err1 = syscall.RawSyscall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&p.capHdr)), uintptr(unsafe.Pointer(&p.capData[0])), 0); err1 != 0 {
		goto fail
	}
	// Ambient caps survive exec of a non-setuid program by a non-root
	// user; without them a kept capability would vanish at execve.
	step = stepAmbient
	if _, _, err1 = syscall.RawSyscall6(unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0, 0); err1 != 0 {
		goto fail
	}
	for i = 0; i < len(p.keep); i++ {
		if _, _, err1 = syscall.RawSyscall6(unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_RAISE, p.keep[i], 0, 0, 0); err1 != 0 {
			goto fail
		}
	}
	if p.noNewPrivs {
		step = stepNoNewPrivs
		if _, _, err1 = syscall.RawSyscall6(unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0, 0); err1 != 0 {
			goto fail
		}
		// Seccomp last: nothing after it but execve.
		step = stepSeccomp
		if p.filter != nil {
			if _, _, err1 = syscall.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, uintptr(unsafe.Pointer(p.filter))); err1 != 0 {
				goto fail
			}
		}
	}
	// Last: execve. On success the error pipe closes (close-on-exec),
	// which tells the parent setup succeeded.
	step = stepExec
	_, _, err1 = syscall.RawSyscall(unix.SYS_EXECVE, uintptr(unsafe.Pointer(p.path)),
		uintptr(unsafe.Pointer(&p.argv[0])), uintptr(unsafe.Pointer(&p.envv[0])))
	// A command found by $PATH: the next candidate, as execvp does, while
	// the last one was not there.
	for i = 0; i < len(p.paths) && (err1 == unix.ENOENT || err1 == unix.ENOTDIR); i++ {
		_, _, err1 = syscall.RawSyscall(unix.SYS_EXECVE, uintptr(unsafe.Pointer(p.paths[i])),
			uintptr(unsafe.Pointer(&p.argv[0])), uintptr(unsafe.Pointer(&p.envv[0])))
	}

fail:
	report.step, report.errno = step, uint32(err1)
	syscall.RawSyscall(unix.SYS_WRITE, uintptr(p.errW), uintptr(unsafe.Pointer(&report)), unsafe.Sizeof(report))
exit:
	for {
		syscall.RawSyscall(unix.SYS_EXIT_GROUP, 1, 0, 0)
	}
}
