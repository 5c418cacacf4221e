package launcher

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"cimg.dev/cimg/internal/cgroup"
)

// OCIExecOptions are cimg-oci exec's: a process to start beside a
// container's own.
type OCIExecOptions struct {
	Pid     int                 // the container's process
	Spec    *specs.Spec         // the container's config: namespaces, user namespace
	Seccomp *unix.SockFprog     // its linux.seccomp, compiled by the caller (internal/ociseccomp)
	Process *specs.Process      // what to run (--process, or the config's with exec's argv)
	Argv0   string              // argv[0], when not Process.Args[0] (the path run)
	Stdio   [3]*os.File         // the process's stdin, stdout, stderr; nil: this process's
	Cgroup  map[string]string   // the container's cgroup directories (v1: controller → dir)
	Detach  bool                // return once it runs (conmon reaps it)
	Console *os.File            // connected --console-socket, when Process.Terminal
	Started func(pid int) error // called once the process runs (the --pid-file); an error kills it
}

// OCIExec starts o.Process in the container as cimg-run's exec does
// (join.go): forked by a locked thread in the container's pid namespace,
// joining its other namespaces in the raw child, in its cgroup before it
// runs anything, under the process's own capabilities, rlimits, ids and
// no_new_privs, and the container's seccomp profile. It returns the new
// process's pid, and with !Detach its exit status (128+N for signal N).
// The calling goroutine stays locked to that thread, whose children go
// into the container's pid namespace: a caller that forks anything else
// afterwards calls it from a goroutine that ends (and takes the thread
// with it) once the process has.
func OCIExec(o OCIExecOptions) (pid, status int, err error) {
	if os.Geteuid() != 0 {
		return 0, 0, errors.New("cimg-oci must run as root")
	}
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return 0, 0, err
	}
	if err := cloexecAll(); err != nil {
		return 0, 0, err
	}
	procDir, err := unix.Open("/proc/"+strconv.Itoa(o.Pid), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, 0, fmt.Errorf("the container's process: %w", err)
	}
	defer unix.Close(procDir)
	pidfd, err := unix.PidfdOpen(o.Pid, 0)
	if err != nil {
		return 0, 0, fmt.Errorf("the container's process: %w", err)
	}
	defer unix.Close(pidfd)
	rootfs := fmt.Sprintf("/proc/%d/root", o.Pid)
	p := &Plan{}
	x := &ociExtra{filter: o.Seccomp}
	if o.Process == nil || len(o.Process.Args) == 0 {
		return 0, 0, errors.New("exec: no command")
	}
	if o.Process.Cwd == "" {
		o.Process.Cwd = "/"
	}
	if err := ociProcess(p, x, o.Process, o.Spec, rootfs); err != nil {
		return 0, 0, err
	}
	userNS, cgroupNS := false, false
	for _, ns := range o.Spec.Linux.Namespaces {
		userNS = userNS || ns.Type == specs.UserNamespace
		cgroupNS = cgroupNS || ns.Type == specs.CgroupNamespace
	}
	names := []string{"mnt", "net", "ipc", "uts"}
	if cgroupNS {
		names = append(names, "cgroup")
	}
	if userNS {
		names = append(names, "user") // last: the others belong to the host's
	}
	var ns []int
	defer func() { closeFDs(ns) }()
	for _, n := range names {
		fd, err := unix.Openat(procDir, "ns/"+n, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return 0, 0, fmt.Errorf("the container's %s namespace: %w", n, err)
		}
		ns = append(ns, fd)
	}
	pidNS, err := unix.Openat(procDir, "ns/pid", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, 0, fmt.Errorf("the container's pid namespace: %w", err)
	}
	defer unix.Close(pidNS)
	// The process enters the container's cgroup itself, first thing.
	entry, err := cgroup.OpenEntry(o.Cgroup)
	if err != nil {
		return 0, 0, fmt.Errorf("the container's cgroup: %w", err)
	}
	defer closeFDs(entry)
	// The pid read through /proc must still be the container's process.
	if err := unix.PidfdSendSignal(pidfd, 0, nil, 0); err != nil {
		return 0, 0, fmt.Errorf("the container's process ended: %w", err)
	}
	p.Proc = nil
	fp, err := newForkPlan(p)
	if err != nil {
		return 0, 0, err
	}
	fp.filter = x.filter
	ociCaps(fp, x.caps)
	if o.Argv0 != "" {
		if fp.argv[0], err = syscall.BytePtrFromString(o.Argv0); err != nil {
			return 0, 0, err
		}
	}
	for i, f := range o.Stdio {
		if f != nil {
			fp.stdio[i] = int(f.Fd())
		}
	}
	fp.join = ns
	fp.cgroupEntry = entry
	fp.noPdeathsig = o.Detach
	if fp.chdir, err = syscall.BytePtrFromString(p.Workdir); err != nil {
		return 0, 0, err
	}
	sync, errp := [2]int{-1, -1}, [2]int{-1, -1}
	defer func() { closeFDs(sync[:]); closeFDs(errp[:]) }()
	if err := unix.Pipe2(sync[:], unix.O_CLOEXEC); err != nil {
		return 0, 0, err
	}
	if err := unix.Pipe2(errp[:], unix.O_CLOEXEC); err != nil {
		return 0, 0, err
	}
	fp.syncR, fp.syncW, fp.errR, fp.errW = sync[0], sync[1], errp[0], errp[1]
	if o.Process.Terminal {
		if o.Console == nil {
			return 0, 0, errors.New("process.terminal: needs --console-socket")
		}
		root, err := unix.Openat(procDir, "root", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return 0, 0, err
		}
		ptm, pts, err := openPTY(root, p, o.Process.ConsoleSize)
		unix.Close(root)
		if err != nil {
			return 0, 0, fmt.Errorf("process.terminal: %w", err)
		}
		defer unix.Close(pts)
		err = sendFD(o.Console, ptm)
		unix.Close(ptm)
		if err != nil {
			return 0, 0, fmt.Errorf("--console-socket: %w", err)
		}
		fp.stdio = [3]int{pts, pts, pts}
		fp.tty = true
	}
	// Never unlocked: its pid namespace for children is the container's.
	runtime.LockOSThread()
	if err := unix.Setns(pidNS, unix.CLONE_NEWPID); err != nil {
		return 0, 0, fmt.Errorf("join the container's pid namespace: %w", err)
	}
	syscall.ForkLock.Lock()
	cpid, errno := forkChild(fp)
	syscall.ForkLock.Unlock()
	if errno != 0 {
		return 0, 0, fmt.Errorf("fork into the container: %w", errno)
	}
	pid = int(cpid)
	closeFDs([]int{sync[0], errp[1]})
	sync[0], errp[1] = -1, -1
	fail := func(err error) (int, int, error) {
		unix.Kill(pid, unix.SIGKILL)
		unix.Wait4(pid, nil, 0, nil)
		return 0, 0, err
	}
	if _, err := unix.Write(sync[1], []byte{1}); err != nil {
		return fail(err)
	}
	var report childError
	buf := make([]byte, 8)
	if n, _ := readFull(errp[0], buf); n == 8 {
		report.step = uint32(buf[0]) | uint32(buf[1])<<8 | uint32(buf[2])<<16 | uint32(buf[3])<<24
		report.errno = uint32(buf[4]) | uint32(buf[5])<<8 | uint32(buf[6])<<16 | uint32(buf[7])<<24
		if report.step == stepExec && unix.Errno(report.errno) == unix.ENOENT {
			return fail(fmt.Errorf("exec %s: no such file in the container", strings.Join(o.Process.Args, " ")))
		}
		return fail(fmt.Errorf("exec into the container, %w", report))
	}
	if o.Process.OOMScoreAdj != nil {
		os.WriteFile("/proc/"+strconv.Itoa(pid)+"/oom_score_adj", []byte(strconv.Itoa(*o.Process.OOMScoreAdj)), 0)
	}
	if o.Started != nil {
		if err := o.Started(pid); err != nil {
			return fail(err)
		}
	}
	if o.Detach {
		return pid, 0, nil
	}
	// In the foreground: the caller's signals go to the process.
	return pid, WaitRelay(pid, RelaySignals()), nil
}
