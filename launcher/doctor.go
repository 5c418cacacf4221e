package launcher

import (
	"bufio"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"cimg.dev/cimg/internal/cgroup"
)

// Check is one kernel feature cimg uses, as found on this machine.
type Check struct {
	Feature  string
	OK       bool
	Required bool // false: optional, cimg works without it (with less)
	Detail   string
}

// Doctor inspects the running kernel for what cimg-run needs.
func Doctor() []Check {
	var cs []Check
	add := func(feature string, ok, required bool, detail string) {
		cs = append(cs, Check{feature, ok, required, detail})
	}
	var u unix.Utsname
	unix.Uname(&u)
	release := unix.ByteSliceToString(u.Release[:])
	add("kernel", true, true, release+" "+unix.ByteSliceToString(u.Machine[:]))
	add("running as root", os.Geteuid() == 0, true, "cimg-run mounts, and creates namespaces and cgroups")

	fsys, _ := os.ReadFile("/proc/filesystems")
	has := func(name string) bool { return strings.Contains(string(fsys), "\t"+name+"\n") }
	_, err := os.Stat("/dev/loop-control")
	add("loop devices", err == nil, true, "/dev/loop-control (CONFIG_BLK_DEV_LOOP)")
	add("LOOP_CONFIGURE", kernelAtLeast(release, 5, 8), false, "one-ioctl attach (5.8+); older kernels use LOOP_SET_FD + LOOP_SET_STATUS64")
	add("squashfs", has("squashfs"), true, "CONFIG_SQUASHFS (or modprobe squashfs)")
	cfg := kernelConfig(release)
	for _, c := range []struct{ name, opt string }{{"zstd", "CONFIG_SQUASHFS_ZSTD"}, {"xz", "CONFIG_SQUASHFS_XZ"}, {"lz4", "CONFIG_SQUASHFS_LZ4"}, {"gzip", "CONFIG_SQUASHFS_ZLIB"}} {
		v, known := cfg[c.opt]
		detail := c.opt
		if !known && cfg != nil {
			detail += " not set"
		} else if cfg == nil {
			detail += ": unknown (no /proc/config.gz or /boot/config-" + release + ")"
		}
		add("squashfs "+c.name, v == "y" || cfg == nil, c.name == "zstd", detail)
	}
	add(xzBCJCheck(cfg, release, unix.ByteSliceToString(u.Machine[:])))
	for _, ns := range []string{"mnt", "pid", "uts", "ipc", "net", "cgroup"} {
		_, err := os.Stat("/proc/self/ns/" + ns)
		add(ns+" namespace", err == nil, true, "/proc/self/ns/"+ns)
	}
	mode, ctrls := cgroup.Mode()
	add("cgroups", mode != "none", true, mode+": "+strings.Join(ctrls, " "))
	for _, c := range []string{"memory", "pids", "cpu", "cpuset"} {
		add("cgroup "+c, slices.Contains(ctrls, c), c == "memory" || c == "pids", "limits in the manifest need it")
	}
	add("seccomp filters", seccompFilters(), true, "CONFIG_SECCOMP_FILTER")
	_, err = os.Stat("/dev/mapper/control")
	add("device-mapper", err == nil, false, "dm-verity checks blocks in the kernel; without it cimg-run verifies in user space")
	add("overlayfs", has("overlay"), false, "writable overlays on the image (mounts of type overlay)")
	add("pidfd_open", pidfdOpen(), false, "signals relayed by pidfd and a slim waiter (5.3+); without it the full launcher stays resident")
	add("clone3", syscallExists(unix.SYS_CLONE3), false, "cgroup v2: cloned straight into the cgroup (5.7+); older kernels join through cgroup.procs")
	add("close_range", syscallExists(unix.SYS_CLOSE_RANGE), false, "one call closes inherited fds (5.9+); older kernels close them one by one")
	ok, detail := cgroup.DeviceFilterSupport()
	add("device cgroup", ok, false, detail)
	add("openat2", syscallExists(unix.SYS_OPENAT2), false, "mount targets resolved below the root in one call (5.6+); older kernels walk them one component at a time")
	add("mount_setattr", syscallExists(unix.SYS_MOUNT_SETATTR), false, "read-only binds read-only all the way down in one call (5.12+); older kernels remount each submount")
	_, err = os.Stat("/proc/self/ns/user")
	add("user namespace", err == nil, false, "namespaces.user = true in a manifest needs it (CONFIG_USER_NS)")
	return cs
}

// xzBCJCheck: which xz BCJ filters (cimg-build --xz-bcj) the kernel's
// xz decoder, and so squashfs, undoes; OK when this machine's own is one.
// x86, arm and armthumb came with lib/xz in 2.6.38, arm64 in 6.11.
func xzBCJCheck(cfg map[string]string, release, machine string) (string, bool, bool, string) {
	own := map[string]string{"x86_64": "x86", "i686": "x86", "aarch64": "arm64", "armv7l": "armthumb", "armv6l": "armthumb"}[machine]
	var have []string
	for _, f := range []struct{ name, opt string }{{"x86", "CONFIG_XZ_DEC_X86"}, {"arm", "CONFIG_XZ_DEC_ARM"}, {"armthumb", "CONFIG_XZ_DEC_ARMTHUMB"}, {"arm64", "CONFIG_XZ_DEC_ARM64"}} {
		if cfg != nil && cfg[f.opt] == "y" || cfg == nil && (f.name != "arm64" || kernelAtLeast(release, 6, 11)) {
			have = append(have, f.name)
		}
	}
	detail := "xz images with --xz-bcj " + strings.Join(have, ", ") + " (CONFIG_XZ_DEC_*; arm64 needs 6.11+)"
	if len(have) == 0 {
		detail = "no xz BCJ filter: build xz images with --xz-bcj none (CONFIG_XZ_DEC_X86, _ARM, _ARMTHUMB, _ARM64)"
	}
	if cfg == nil {
		detail += ", guessed from the version: no kernel config"
	}
	return "squashfs xz BCJ", own == "" || slices.Contains(have, own), false, detail
}

func pidfdOpen() bool {
	fd, err := unix.PidfdOpen(os.Getpid(), 0)
	if err == nil {
		unix.Close(fd)
	}
	return err == nil
}

// syscallExists calls nr with arguments every kernel that has it rejects
// (clone3 with a zero size, close_range with first > last), so nothing
// happens either way; only ENOSYS means it is missing.
func syscallExists(nr uintptr) bool {
	_, _, errno := unix.Syscall(nr, 1, 0, 0)
	return errno != unix.ENOSYS
}

func kernelAtLeast(release string, major, minor int) bool {
	var a, b int
	fmt.Sscanf(release, "%d.%d", &a, &b)
	return a > major || (a == major && b >= minor)
}

// kernelConfig reads the running kernel's config, or nil.
func kernelConfig(release string) map[string]string {
	var r io.Reader
	if f, err := os.Open("/proc/config.gz"); err == nil {
		defer f.Close()
		if z, err := gzip.NewReader(f); err == nil {
			r = z
		}
	} else if f, err := os.Open("/boot/config-" + release); err == nil {
		defer f.Close()
		r = f
	}
	if r == nil {
		return nil
	}
	cfg := map[string]string{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok && strings.HasPrefix(k, "CONFIG_") {
			cfg[k] = v
		}
	}
	return cfg
}

// seccompFilters reports whether the kernel takes seccomp filters: it
// answers SECCOMP_GET_ACTION_AVAIL (Linux 4.14) only with filter support.
func seccompFilters() bool {
	action := uint32(unix.SECCOMP_RET_ERRNO)
	_, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_GET_ACTION_AVAIL, 0, uintptr(unsafe.Pointer(&action)))
	return errno == 0
}
