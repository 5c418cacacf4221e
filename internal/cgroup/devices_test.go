package cgroup

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"cimg.dev/cimg/manifest"
)

// TestMain turns the test binary into the device probe when
// CIMG_DEVICE_PROBE names a directory: it waits for a line on stdin (its
// cgroup is set by then), makes a block node for loop0 and a character
// node for null there, opens /dev/null and /dev/kmsg (1:11, not on the
// list), and prints what each returned.
func TestMain(m *testing.M) {
	if dir := os.Getenv("CIMG_DEVICE_PROBE"); dir != "" {
		bufio.NewReader(os.Stdin).ReadString('\n')
		res := func(err error) string {
			if err != nil {
				return err.Error()
			}
			return "ok"
		}
		open := func(p string, flag int) error {
			fd, err := unix.Open(p, flag|unix.O_CLOEXEC, 0)
			if err == nil {
				unix.Close(fd)
			}
			return err
		}
		fmt.Printf("blk=%s chr=%s null=%s kmsg=%s\n",
			res(unix.Mknod(filepath.Join(dir, "blk"), unix.S_IFBLK|0o600, int(unix.Mkdev(7, 0)))),
			res(unix.Mknod(filepath.Join(dir, "chr"), unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3)))),
			res(open("/dev/null", unix.O_RDWR)), res(open("/dev/kmsg", unix.O_RDONLY)))
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runDeviceProbe runs the probe; join, if set, puts it in a cgroup
// between its start and its checks.
func runDeviceProbe(t *testing.T, attr *syscall.SysProcAttr, join func(pid int)) string {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "CIMG_DEVICE_PROBE="+t.TempDir())
	cmd.SysProcAttr = attr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if join != nil {
		join(cmd.Process.Pid)
	}
	in.Write([]byte("go\n"))
	in.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("device probe: %v\n%s", err, out.String())
	}
	return strings.TrimSpace(out.String())
}

const (
	unfiltered = "blk=ok chr=ok null=ok kmsg=ok"
	filtered   = "blk=operation not permitted chr=ok null=ok kmsg=operation not permitted"
)

// TestDeviceBPFProgramFilters attaches the v2 program to a cgroup of a
// cgroup2 hierarchy — on a hybrid host the unified one, which holds no
// controller but runs device programs all the same — and checks what a
// process in it may make and open; the same probe outside shows every
// step is allowed without the filter.
func TestDeviceBPFProgramFilters(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (to create cgroups and load BPF programs)")
	}
	v2root := Root
	if !IsV2() {
		v2root = filepath.Join(Root, "unified")
		var st unix.Statfs_t
		if unix.Statfs(v2root, &st) != nil || st.Type != unix.CGROUP2_SUPER_MAGIC {
			t.Skip("no cgroup2 hierarchy here")
		}
	}
	if got := runDeviceProbe(t, nil, nil); got != unfiltered {
		t.Fatalf("without a filter: %q, want %q", got, unfiltered)
	}
	dir := filepath.Join(v2root, fmt.Sprintf("cimg-devtest-%d", os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(dir)
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := devicesV2(int(d.Fd()), devicesProgram(allowListRules(), 0)); err != nil {
		t.Fatal(err)
	}
	got := runDeviceProbe(t, &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(d.Fd())}, nil)
	if got != filtered {
		t.Errorf("in the filtered cgroup: %q, want %q", got, filtered)
	}
	if ok, detail := DeviceFilterSupport(); !ok {
		t.Errorf("DeviceFilterSupport: %v %s", ok, detail)
	}
}

// TestDeviceV1CgroupFilters runs the probe in a cgroup made by New on
// this host's v1 hierarchies.
func TestDeviceV1CgroupFilters(t *testing.T) {
	requireV1(t, "devices")
	cg, err := New(testID("devprobe"), manifest.Limits{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cg.Remove()
	got := runDeviceProbe(t, nil, func(pid int) {
		if err := cg.Join(pid); err != nil {
			t.Error(err)
		}
	})
	if got != filtered {
		t.Errorf("in the v1 devices cgroup: %q, want %q", got, filtered)
	}
	if ok, detail := DeviceFilterSupport(); !ok {
		t.Errorf("DeviceFilterSupport: %v %s", ok, detail)
	}
}

// TestDeviceProgramJumps: every conditional jump of the program lands
// inside it, and the program ends in exit.
func TestDeviceProgramJumps(t *testing.T) {
	rules := append(allowListRules(), devRule{allow: false, typ: 'b', major: 7, minor: -1, access: unix.BPF_DEVCG_ACC_MKNOD},
		devRule{allow: true, typ: 'a', major: -1, minor: -1, access: unix.BPF_DEVCG_ACC_READ})
	p := devicesProgram(rules, 1)
	for i, in := range p {
		if in.code&0x07 == unix.BPF_JMP && in.code != unix.BPF_JMP|unix.BPF_EXIT {
			if to := i + 1 + int(in.off); to <= i || to >= len(p) {
				t.Errorf("insn %d jumps to %d (program of %d)", i, to, len(p))
			}
		}
	}
	if last := p[len(p)-1]; last.code != unix.BPF_JMP|unix.BPF_EXIT {
		t.Errorf("last instruction %#x, want exit", last.code)
	}
}

// TestDeviceProgramLoadsUnderSignals: the verifier gives up with EAGAIN
// when a signal is pending, and a Go process is sent signals all the time
// (SIGURG preempts goroutines; a power-cut test in the VM saw a launch
// fail with "bpf(BPF_PROG_LOAD) of the device filter: resource
// temporarily unavailable"). Loading must retry, as a system call
// interrupted by a signal is retried.
func TestDeviceProgramLoadsUnderSignals(t *testing.T) {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
				unix.Kill(os.Getpid(), unix.SIGURG) // the runtime takes it as a preemption request
				time.Sleep(20 * time.Microsecond)
			}
		}
	}()
	defer func() { close(stop); <-done }()
	for i := range 2000 {
		fd, err := loadDeviceProgram(devicesProgram(allowListRules(), 0))
		if err != nil {
			t.Fatalf("load %d of 2000, with signals arriving: %v", i+1, err)
		}
		unix.Close(fd)
	}
}
