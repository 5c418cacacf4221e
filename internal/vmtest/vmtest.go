// Package vmtest boots Debian's own kernel under qemu-system-x86_64 with
// a busybox initramfs holding the files a test gives it, runs a shell
// script as init and returns what it printed. It shows what this host
// cannot: a pure cgroup v2 machine (cgroup_no_v1=all), device-mapper, a
// second kernel version. The kernel comes from scripts/vm-kernel.sh
// (make test runs it); a missing piece fails the test, never skips it.
package vmtest

import (
	"context"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// KernelDir is where scripts/vm-kernel.sh unpacks the kernel.
var KernelDir = "/var/cache/cimg/vm-kernel"

// Modules are loaded in this order before the script runs.
var Modules = []string{
	"drivers/block/loop.ko", "fs/squashfs/squashfs.ko", "lib/reed_solomon/reed_solomon.ko",
	"drivers/md/dm-mod.ko", "drivers/md/dm-bufio.ko", "drivers/md/dm-verity.ko", "fs/overlayfs/overlay.ko",
}

const (
	begin = "=== VMTEST BEGIN"
	end   = "=== VMTEST END"
)

// Run boots the VM with files (path in the VM → host path) and script as
// the body of /init, and returns the script's output. kernelArgs are added
// to the kernel command line (which has cgroup_no_v1=all).
func Run(t testing.TB, files map[string]string, script string, kernelArgs ...string) string {
	t.Helper()
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Fatal("qemu-system-x86_64 not found: install qemu-system-x86 (make test does)")
	}
	busybox := "/bin/busybox"
	if !Static(busybox) {
		t.Fatal("/bin/busybox is missing or not the static build: install busybox-static (make test does)")
	}
	kernel := filepath.Join(KernelDir, "vmlinuz")
	if _, err := os.Stat(kernel); err != nil {
		t.Fatalf("%v: run scripts/vm-kernel.sh (make test does)", err)
	}
	mods := filepath.Join(KernelDir, "modules", "kernel")
	if _, err := os.Stat(mods); err != nil {
		t.Fatalf("no kernel modules: %v (run scripts/vm-kernel.sh)", err)
	}
	var init strings.Builder
	init.WriteString("#!/bin/busybox sh\n/bin/busybox --install -s /bin\nexport PATH=/bin\n")
	init.WriteString("mkdir -p /proc /sys /dev /run /tmp\nmount -t proc proc /proc\nmount -t sysfs sys /sys\n")
	init.WriteString("mount -t devtmpfs dev /dev\nmount -t tmpfs run /run\nmount -t cgroup2 cgroup2 /sys/fs/cgroup\n")
	all := map[string]string{"/bin/busybox": busybox}
	for _, m := range Modules {
		dst := "/modules/" + filepath.Base(m)
		all[dst] = filepath.Join(mods, m)
		init.WriteString("insmod " + dst + " || echo insmod " + dst + " failed\n")
	}
	for k, v := range files {
		all[k] = v
	}
	fmt.Fprintf(&init, "echo '%s'\n%s\necho '%s'\necho o > /proc/sysrq-trigger\nsleep 10\n", begin, script, end)

	dir := t.TempDir()
	initrd := filepath.Join(dir, "initrd")
	if err := writeInitramfs(initrd, all, init.String()); err != nil {
		t.Fatal(err)
	}
	args := []string{"-m", "1024", "-smp", "2", "-kernel", kernel, "-initrd", initrd, "-nographic", "-no-reboot",
		"-append", strings.Join(append([]string{"console=ttyS0 cgroup_no_v1=all panic=-1 quiet loglevel=3"}, kernelArgs...), " ")}
	// TCG, not KVM: on these (nested) VMs KVM either trips over MSRs with
	// -cpu host or hangs after the BIOS; TCG boots in seconds.
	args = append(args, "-accel", "tcg")
	// Emulated, a run that takes 10 s on an idle host took 60-95 s with both
	// cores busy (make test runs packages side by side): the bound is for a
	// VM that hangs, not a slow one.
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, qemu, args...).CombinedOutput()
	s := strings.ReplaceAll(string(out), "\r\n", "\n")
	i, j := strings.Index(s, begin), strings.Index(s, end)
	if err != nil || i < 0 || j < i {
		t.Fatalf("VM run failed (%v); console:\n%s", err, s)
	}
	return s[i+len(begin) : j]
}

// Static reports whether p is an ELF program without an interpreter, as
// a program must be to run in the VM's initramfs, which has no libc.
func Static(p string) bool {
	f, err := elf.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return false
		}
	}
	return true
}
