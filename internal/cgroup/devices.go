package cgroup

// The device allow-list. The app's /dev is a fresh tmpfs with a handful
// of nodes, but an app that keeps CAP_MKNOD could make a node for a host
// disk anywhere it can write; the cgroup refuses to create (mknod) or
// open any device node but these. Defence in depth, as runc and crun do.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// device is one allowed character device; minor -1 is any minor. Every
// entry allows read, write and mknod ("rwm"); block devices are never
// allowed.
type device struct {
	major, minor int32
	name         string
}

var allowedDevices = []device{
	{1, 3, "null"}, {1, 5, "zero"}, {1, 7, "full"}, {1, 8, "random"}, {1, 9, "urandom"},
	{5, 0, "tty"}, {5, 2, "ptmx"}, {136, -1, "pts/*"},
}

// devicesList is the allow-list as v1 writes it to devices.allow and
// reads it back from devices.list, one entry a line.
func devicesList() []string {
	var l []string
	for _, d := range allowedDevices {
		minor := "*"
		if d.minor >= 0 {
			minor = fmt.Sprint(d.minor)
		}
		l = append(l, fmt.Sprintf("c %d:%s rwm", d.major, minor))
	}
	return l
}

// devicesV1 denies every device to the v1 devices cgroup dir, then allows
// the list. ("a" in devices.deny clears the exceptions inherited from the
// parent; it must come first and only works while dir has no children.)
func devicesV1(dir *os.File) error {
	if err := writeAt(dir, "devices.deny", "a"); err != nil {
		return err
	}
	// One open for the list: each write(2) is one rule.
	allow := filepath.Join(dir.Name(), "devices.allow")
	fd, err := unix.Openat(int(dir.Fd()), "devices.allow", unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("cgroup %s: %w", allow, err)
	}
	defer unix.Close(fd)
	for _, e := range devicesList() {
		if err := writeRetry(fd, e); err != nil {
			return fmt.Errorf("cgroup %s: write %q: %w", allow, e, err)
		}
	}
	return nil
}

// v1DevicesWarning says why a v1 host's app has no device allow-list.
// Not mounting the devices controller is the host's choice, as for pids
// or memory: the launch goes on with a warning (the app's /dev and /tmp
// are nodev, so a node it makes there still cannot be opened).
func v1DevicesWarning() string {
	known, _ := os.ReadFile("/proc/cgroups")
	for _, l := range strings.Split(string(known), "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[0] == "devices" {
			return "the cgroup v1 devices controller is not mounted at " + filepath.Join(Root, "devices") +
				": the app's cgroup has no device allow-list (mount it to get one)"
		}
	}
	return "the kernel has no devices cgroup controller (CONFIG_CGROUP_DEVICE): the app's cgroup has no device allow-list"
}

// The v2 filter is a BPF_PROG_TYPE_CGROUP_DEVICE program, assembled here
// by hand (a dozen instructions per run of the table below) and loaded
// with raw bpf(2) calls: a BPF library would add far more to cimg-run's
// size and start-up than this whole file, for one fixed program.

// bpfInsn is struct bpf_insn.
type bpfInsn struct {
	code uint8
	regs uint8 // dst_reg:4 and src_reg:4, a C bit-field: see insn
	off  int16
	imm  int32
}

var bigEndian = func() bool { x := uint16(1); return *(*byte)(unsafe.Pointer(&x)) == 0 }()

func insn(code uint8, dst, src uint8, off int16, imm int32) bpfInsn {
	regs := dst | src<<4 // bit-fields fill a byte from its low bits on little-endian ABIs,
	if bigEndian {
		regs = dst<<4 | src // from its high bits on big-endian ones
	}
	return bpfInsn{code: code, regs: regs, off: off, imm: imm}
}

// devRule is one device rule as v1's devices.allow and devices.deny and
// OCI configs have them: type 'a' (every device), 'c' or 'b'; major and
// minor, -1 for any; access a set of the BPF_DEVCG_ACC_* bits (mknod,
// read, write).
type devRule struct {
	allow        bool
	typ          byte
	major, minor int32
	access       uint32
}

const accAll = unix.BPF_DEVCG_ACC_MKNOD | unix.BPF_DEVCG_ACC_READ | unix.BPF_DEVCG_ACC_WRITE

// allowListRules is allowedDevices as rules, every access allowed.
func allowListRules() []devRule {
	var r []devRule
	for _, d := range allowedDevices {
		r = append(r, devRule{allow: true, typ: 'c', major: d.major, minor: d.minor, access: accAll})
	}
	return r
}

// devicesProgram decides as v1's devices controller would after the
// rules were written in order: the last rule that matches a request
// decides, so they are tried from the last. An allow rule matches when it
// allows every access asked for, a deny rule when it denies any. When
// none matches the answer is def (1: allow, 0: deny). The context is
// struct bpf_cgroup_dev_ctx: access_type (device type in the low 16
// bits, access above), major, minor, all u32.
func devicesProgram(rules []devRule, def int32) []bpfInsn {
	const (
		ldxw  = unix.BPF_LDX | unix.BPF_MEM | unix.BPF_W
		and   = unix.BPF_ALU64 | unix.BPF_AND | unix.BPF_K
		rsh   = unix.BPF_ALU64 | unix.BPF_RSH | unix.BPF_K
		movX  = unix.BPF_ALU64 | unix.BPF_MOV | unix.BPF_X
		mov   = unix.BPF_ALU64 | unix.BPF_MOV | unix.BPF_K
		jne   = unix.BPF_JMP | unix.BPF_JNE | unix.BPF_K
		jeq   = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		exit  = unix.BPF_JMP | unix.BPF_EXIT
		ctx   = 1
		typ   = 2
		major = 3
		minor = 4
		acc   = 5
		tmp   = 6
	)
	p := []bpfInsn{
		insn(ldxw, typ, ctx, 0, 0),
		insn(movX, acc, typ, 0, 0),
		insn(rsh, acc, 0, 0, 16),
		insn(and, typ, 0, 0, 0xffff),
		insn(ldxw, major, ctx, 4, 0),
		insn(ldxw, minor, ctx, 8, 0),
	}
	for i := len(rules) - 1; i >= 0; i-- {
		r := rules[i]
		// Each test jumps past the rest of its block when it fails.
		var block []bpfInsn
		switch r.typ {
		case 'c':
			block = append(block, insn(jne, typ, 0, 0, unix.BPF_DEVCG_DEV_CHAR))
		case 'b':
			block = append(block, insn(jne, typ, 0, 0, unix.BPF_DEVCG_DEV_BLOCK))
		}
		if r.major >= 0 {
			block = append(block, insn(jne, major, 0, 0, r.major))
		}
		if r.minor >= 0 {
			block = append(block, insn(jne, minor, 0, 0, r.minor))
		}
		switch {
		case r.allow && r.access&accAll != accAll: // asks for nothing it does not allow
			block = append(block, insn(movX, tmp, acc, 0, 0), insn(and, tmp, 0, 0, int32(accAll&^r.access)), insn(jne, tmp, 0, 0, 0))
		case !r.allow && r.access&accAll != accAll: // asks for something it denies
			block = append(block, insn(movX, tmp, acc, 0, 0), insn(and, tmp, 0, 0, int32(r.access&accAll)), insn(jeq, tmp, 0, 0, 0))
		}
		for j := range block {
			if block[j].code&0x07 == unix.BPF_JMP {
				block[j].off = int16(len(block) + 2 - (j + 1))
			}
		}
		verdict := int32(0)
		if r.allow {
			verdict = 1
		}
		p = append(append(p, block...), insn(mov, 0, 0, 0, verdict), insn(exit, 0, 0, 0, 0))
		if len(block) == 0 {
			return p // matches every request: what follows could not run, and the verifier refuses unreachable code
		}
	}
	return append(p, insn(mov, 0, 0, 0, def), insn(exit, 0, 0, 0, 0))
}

// bpfProgLoadAttr is the head of union bpf_attr for BPF_PROG_LOAD, up to
// prog_flags: the kernel takes a shorter attr and zeroes the rest.
type bpfProgLoadAttr struct {
	progType, insnCnt  uint32
	insns, license     uint64
	logLevel, logSize  uint32
	logBuf             uint64
	kernVersion, flags uint32
}

// bpfAttachAttr is union bpf_attr for BPF_PROG_ATTACH, up to attach_flags.
type bpfAttachAttr struct {
	targetFD, progFD, attachType, flags uint32
}

// bpf is bpf(2). The verifier stops with EAGAIN when a signal is pending, and a Go
// process gets signals at any time (SIGURG preempts goroutines): the call
// is retried as one interrupted by a signal would be, for up to a second
// so that a signal storm cannot spin it for ever.
func bpf(cmd int, attr unsafe.Pointer, size uintptr) (uintptr, error) {
	var deadline time.Time
	for {
		r, _, e := unix.Syscall(unix.SYS_BPF, uintptr(cmd), uintptr(attr), size)
		switch {
		case e == 0:
			return r, nil
		case e != unix.EINTR && e != unix.EAGAIN:
			return r, e
		case deadline.IsZero():
			deadline = time.Now().Add(time.Second)
		case time.Now().After(deadline):
			return r, e
		}
	}
}

// errNoDeviceBPF means the kernel cannot filter devices on cgroup v2.
var errNoDeviceBPF = errors.New("the kernel has no BPF device filter for cgroup v2 (CONFIG_BPF_SYSCALL and CONFIG_CGROUP_BPF, Linux 4.15+)")

// loadDeviceProgram loads a devicesProgram and returns its fd. It fails
// with errNoDeviceBPF where the kernel lacks the feature, and with the
// verifier's log where the kernel refuses the program itself.
func loadDeviceProgram(prog []bpfInsn) (int, error) {
	// The license matters only to programs that call GPL-only helpers
	// (this one calls no helper at all), but the kernel reads the string
	// and fails with EFAULT on a NULL pointer: an empty one will do.
	license := []byte{0}
	attr := bpfProgLoadAttr{
		progType: unix.BPF_PROG_TYPE_CGROUP_DEVICE,
		insnCnt:  uint32(len(prog)),
		insns:    uint64(uintptr(unsafe.Pointer(&prog[0]))),
		license:  uint64(uintptr(unsafe.Pointer(&license[0]))),
	}
	fd, err := bpf(unix.BPF_PROG_LOAD, unsafe.Pointer(&attr), unsafe.Sizeof(attr))
	if err == unix.EINVAL {
		// An unknown program type (no CONFIG_CGROUP_BPF) fails before the
		// verifier, with an empty log; a refused program leaves a log.
		log := make([]byte, 64<<10)
		attr.logLevel, attr.logSize, attr.logBuf = 1, uint32(len(log)), uint64(uintptr(unsafe.Pointer(&log[0])))
		if fd, err = bpf(unix.BPF_PROG_LOAD, unsafe.Pointer(&attr), unsafe.Sizeof(attr)); err == unix.EINVAL {
			if n := strings.IndexByte(string(log), 0); n > 0 {
				err = fmt.Errorf("bpf(BPF_PROG_LOAD) of the device filter: %w: %s", err, strings.TrimSpace(string(log[:n])))
			} else {
				err = errNoDeviceBPF
			}
		}
		runtime.KeepAlive(log)
	}
	runtime.KeepAlive(prog)
	runtime.KeepAlive(license)
	switch {
	case err == nil:
		return int(fd), nil
	case err == unix.ENOSYS:
		return -1, errNoDeviceBPF
	case err == unix.EPERM:
		return -1, fmt.Errorf("bpf(BPF_PROG_LOAD) of the device filter: %w (needs CAP_SYS_ADMIN; a locked-down kernel, or RLIMIT_MEMLOCK before Linux 5.11, can also refuse it)", err)
	case errors.Is(err, errNoDeviceBPF):
		return -1, err
	}
	if _, ok := err.(unix.Errno); ok {
		err = fmt.Errorf("bpf(BPF_PROG_LOAD) of the device filter: %w", err)
	}
	return -1, err
}

// devicesV2 attaches the device filter to the v2 cgroup directory dirFD.
// BPF_F_ALLOW_MULTI: a program attached later, by anyone, to this cgroup
// or below runs besides this one (a device must pass all of them) rather
// than replacing it. The attachment holds the program: its fd is closed.
func devicesV2(dirFD int, prog []bpfInsn) error {
	fd, err := loadDeviceProgram(prog)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	attr := bpfAttachAttr{targetFD: uint32(dirFD), progFD: uint32(fd), attachType: unix.BPF_CGROUP_DEVICE, flags: unix.BPF_F_ALLOW_MULTI}
	if _, err := bpf(unix.BPF_PROG_ATTACH, unsafe.Pointer(&attr), unsafe.Sizeof(attr)); err != nil {
		return fmt.Errorf("bpf(BPF_PROG_ATTACH) of the device filter to the app's cgroup: %w", err)
	}
	return nil
}

// applyDevices puts the allow-list on the cgroup New made. Where the
// kernel lacks the feature altogether (no devices controller on v1, no
// cgroup BPF on v2) the app runs without one and cg.Warning says so: its
// /dev and /tmp are nodev mounts, which still keep it from opening a node
// it makes there. Any other failure fails the launch (closed).
func (cg *Cgroup) applyDevices() error {
	if cg.V2 {
		d, ok := cg.held[""]
		if !ok {
			return errors.New("device filter: the cgroup is not open")
		}
		err := devicesV2(int(d.Fd()), devicesProgram(allowListRules(), 0))
		if errors.Is(err, errNoDeviceBPF) {
			cg.Warning = err.Error() + ": the app's cgroup has no device allow-list"
			return nil
		}
		return err
	}
	dir, ok := cg.held["devices"]
	if !ok {
		cg.Warning = v1DevicesWarning()
		return nil
	}
	if err := devicesV1(dir); err != nil {
		return fmt.Errorf("%w (the devices controller, CONFIG_CGROUP_DEVICE, is mounted but refused the allow-list)", err)
	}
	return nil
}

// DeviceFilterSupport reports whether app cgroups get a device allow-list
// on this host, and how (for cimg-run doctor).
func DeviceFilterSupport() (bool, string) {
	if IsV2() {
		fd, err := loadDeviceProgram(devicesProgram(allowListRules(), 0))
		if err != nil {
			return false, err.Error()
		}
		unix.Close(fd)
		return true, "cgroup v2 BPF device filter (CONFIG_CGROUP_BPF): only /dev's standard nodes can be made or opened"
	}
	if _, err := os.Stat(filepath.Join(Root, "devices", "cgroup.procs")); err != nil {
		return false, v1DevicesWarning()
	}
	return true, "cgroup v1 devices controller (CONFIG_CGROUP_DEVICE): only /dev's standard nodes can be made or opened"
}
